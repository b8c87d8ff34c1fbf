"""The emulator's procedural collection: any area, values computed per request.

`efm extract` reads it through the real ee client; the store must equal the formula
evaluated directly at each pixel centre.
"""

import numpy as np

from emulators.earthengine import EarthEngineEmulator, procedural
from pipelines import extract
from transforms.storage import store


def test_slices_compute_only_what_is_asked():
    data = procedural.ProceduralData(2021, size=10**6)  # 64 x 10^6 x 10^6: never materialised
    block = data[5][123_456:123_460, 900_000:900_003]
    assert block.shape == (4, 3) and block.dtype == np.float32
    np.testing.assert_array_equal(
        block,
        procedural.pixel_values(
            2021, np.arange(123_456, 123_460), np.arange(900_000, 900_003), [5]
        )[0],
    )
    values = procedural.pixel_values(2021, np.arange(0, 512), np.arange(0, 512))
    assert np.isnan(values).any() and not np.isnan(values).all()
    codes = np.round(
        np.sign(values) * np.sqrt(np.abs(values)) * 127.5
    )  # de-quantised int8 codes, like the real data
    assert np.nanmax(np.abs(codes)) <= 127 and np.allclose(codes[~np.isnan(codes)] % 1, 0)


def test_extract_from_the_procedural_collection_equals_the_formula(tmp_path, ee_token):
    emulator = EarthEngineEmulator()
    emulator.add_images(procedural.procedural_collection([2021, 2022]))
    output = str(tmp_path / "emb.zarr")
    with emulator:
        argv = [
            "--bbox",
            procedural.bbox(300, 200),
            "--years",
            "2021,2022",
            "--output",
            output,
            "--tuning",
            "chunk_size=128",
            "--crs",
            procedural.CRS,
            "--tuning",
            f"ee_api_url={emulator.url}",
            "--tuning",
            "ee_project=test-project",
            "--runner=FnApiRunner",
        ]
        assert extract.main(argv) == 0
    ds = store.open_embeddings(output)
    rows = np.round((procedural.Y0 - ds["y"].values) / procedural.SCALE - 0.5).astype(int)
    cols = np.round((ds["x"].values - procedural.X0) / procedural.SCALE - 0.5).astype(int)
    for t, year in enumerate((2021, 2022)):
        expected = np.moveaxis(procedural.pixel_values(year, rows, cols), 0, -1)
        np.testing.assert_array_equal(ds["embedding"].values[t], expected)
    assert ds.sizes["x"] >= 300 and ds.sizes["y"] >= 200
