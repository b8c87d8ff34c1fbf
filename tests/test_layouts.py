"""Reading the field's store layouts (transforms/storage/layouts.py) against the arrays written.

References are the numpy arrays the test wrote, indexed directly, and the published
de-quantisations computed here in float64: AEF's (code / 127.5)^2 * sign(code) with -128 = no
data, TESSERA's code * scale with a non-finite scale = no data.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr

from tests.helpers import field_stores
from tests.helpers.store_factory import make_store
from transforms.core.errors import InputError
from transforms.storage import layout_view, layouts, shard_windows

YEARS = (2023, 2024)


def _aef_codes(rng, shape):
    codes = rng.integers(-127, 128, size=shape, dtype=np.int8)
    codes[..., :7, :5] = -128  # a no-data corner
    return codes


@pytest.fixture
def mosaic(tmp_path):
    """The public mosaic's layout: 4096^2 shards, 256^2 inner chunks; data across a shard edge."""
    path = str(tmp_path / "aef-mosaic.zarr")
    array = field_stores.aef_mosaic(path, width=4400, height=600, years=YEARS)
    rng = np.random.default_rng(1)
    codes = _aef_codes(rng, (len(YEARS), 64, 300, 400))  # rows 100:400, cols 3900:4300
    array[:, :, 100:400, 3900:4300] = codes
    return path, codes


def _aef_values(codes):
    c = codes.astype(np.float64)
    values = ((c / 127.5) ** 2 * np.sign(c)).astype(np.float32)
    values[codes == -128] = np.nan
    return values


def test_describe_the_public_mosaic_layout(mosaic):
    path, _ = mosaic
    layout = layouts.describe(path)
    assert layout.array == "embeddings" and layout.dims == ("time", "band", "y", "x")
    assert layout.zarr_format == 3 and layout.dtype == "int8"
    assert layout.quantization == layouts.SIGNED_SQUARE and layout.scale_array is None
    assert layout.years == YEARS and layout.bands == tuple(f"A{i:02d}" for i in range(64))
    assert (layout.height, layout.width) == (600, 4400)
    assert (layout.chunk_rows, layout.chunk_cols, layout.shard_rows, layout.shard_cols) == (
        256,
        256,
        4096,
        4096,
    )
    assert layout.transform == (0.00009, 0.0, -122.5, 0.0, -0.00009, 38.0)
    import pyproj

    assert pyproj.CRS.from_user_input(layout.crs).to_epsg() == 4326


@pytest.mark.parametrize("time_index", [0, 1])
def test_mosaic_windows_read_as_the_codes_written(mosaic, time_index):
    path, codes = mosaic
    reader = layout_view.LayoutReader(layouts.describe(path))
    # a window across the shard edge (x = 4096) and inner-chunk edges, partly outside the data
    got = reader.read_codes(time_index, slice(90, 350), slice(4000, 4350))
    want = np.full((260, 350, 64), -128, dtype=np.int8)
    want[10:, :300, :] = np.moveaxis(codes[time_index, :, 0:250, 100:400], 0, -1)
    np.testing.assert_array_equal(got, want)
    values = reader.read(time_index, slice(90, 350), slice(4000, 4350))
    np.testing.assert_array_equal(values, _aef_values(want))


def test_tessera_zone_group_is_read_with_its_scales(tmp_path):
    path = str(tmp_path / "tessera.zarr")
    embeddings, scales = field_stores.tessera(path, 31, width=70, height=50, years=YEARS)
    rng = np.random.default_rng(2)
    codes = rng.integers(-127, 128, size=(2, 128, 50, 70), dtype=np.int8)
    factors = rng.uniform(0.001, 0.02, size=(2, 50, 70)).astype(np.float32)
    factors[0, :4, :6] = np.inf  # land not yet filled
    factors[1, 10:12, :] = np.nan  # water
    embeddings[:] = codes
    scales[:] = factors
    layout = layouts.describe(f"{path}/utm31")
    assert layout.quantization == layouts.PER_PIXEL_SCALE and layout.scale_array == "scales"
    assert layout.bands == tuple(f"A{i:02d}" for i in range(128))
    assert (layout.chunk_rows, layout.shard_rows) == (32, 256)
    reader = layout_view.LayoutReader(layout)
    for t in (0, 1):
        with np.errstate(invalid="ignore"):  # 0 * inf: no data, set below
            want = (
                np.moveaxis(codes[t, :, 3:40, 5:61], 0, -1).astype(np.float32)
                * factors[t, 3:40, 5:61, None]
            )
        got = reader.read(t, slice(3, 40), slice(5, 61))
        want[~np.isfinite(factors[t, 3:40, 5:61])] = np.nan
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
@pytest.mark.parametrize("written", ["v2", "convention"])
def test_efm_stores_keep_reading(tmp_path, dtype, written):
    """efm's stores from before issue 17 (Zarr 2, band last) and after (Zarr 3, band first)."""
    synthetic = make_store(str(tmp_path / "s.zarr"), dtype=dtype, layout=written)
    layout = layouts.describe(synthetic.path)
    if written == "v2":
        assert layout.dims == ("time", "y", "x", "band") and layout.zarr_format == 2
    else:
        assert layout.dims == ("time", "band", "y", "x") and layout.zarr_format == 3
        assert (layout.chunk_rows, layout.shard_rows) == (128, 128)  # inner chunks of a shard
    assert layout.quantization == (layouts.SIGNED_SQUARE if dtype == "int8" else "none")
    assert layout.years == tuple(synthetic.years)
    assert layout.transform == tuple(synthetic.grid.transform)[:6]
    got = layout_view.LayoutReader(layout).read(0, slice(0, 300), slice(0, 260))
    np.testing.assert_array_equal(got, synthetic.values[0].astype(np.float32))


def _attrs(path):
    with open(os.path.join(path, "zarr.json")) as f:
        return json.load(f)


def _edit(path, **changes):
    meta = _attrs(path)
    for key, value in changes.items():
        if value is None:
            meta["attributes"].pop(key, None)
        else:
            meta["attributes"][key] = value
    with open(os.path.join(path, "zarr.json"), "w") as f:
        json.dump(meta, f)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"geoemb:quantization": None}, "names no quantisation"),
        (
            {"geoemb:quantization": {"method": "linear", "scale": 0.01}},
            "'linear', which efm does not know",
        ),
        (
            {"geoemb:quantization": {**field_stores.AEF_QUANTIZATION, "formula": "x / 127"}},
            "efm knows it only as",
        ),
        ({"proj:code": None}, "names no CRS"),
        ({"proj:code": "EPSG:999999"}, "is not a CRS"),
        ({"spatial:transform": None}, "names no grid"),
        (
            {"spatial:transform": [0.00009, 0.0, -122.4, 0.0, -0.00009, 38.0]},
            "x coordinates are not",
        ),
        (
            {"spatial:transform": [0.00009, 0.1, -122.5, 0.0, -0.00009, 38.0]},
            "rotated or degenerate",
        ),
        ({"spatial:shape": [600, 4000]}, "disagrees with the array"),
    ],
)
def test_bad_convention_metadata_is_one_line(tmp_path, change, message):
    path = str(tmp_path / "m.zarr")
    field_stores.aef_mosaic(path, width=4400, height=600, years=YEARS)
    _edit(path, **change)
    with pytest.raises(InputError) as err:
        layouts.describe(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("--embeddings: ")


def _chunked_x(path, width, chunk, values):
    """Replace the store's x coordinate with one of `values`, in chunks of `chunk`."""
    group = zarr.open_group(path, mode="r+")
    del group["x"]
    x = group.create_array(
        "x", shape=(len(values),), chunks=(chunk,), dtype="float64", dimension_names=["x"]
    )
    x[:] = values


@pytest.mark.parametrize(
    "where, refused",
    [
        (None, False),
        (0, True),
        (499, True),
        (4000, True),
        (4399, True),
        (500, False),
        (3999, False),
        ("length", True),
    ],
)
def test_a_long_coordinate_is_checked_at_its_ends(tmp_path, monkeypatch, where, refused):
    """x/y longer than COORDINATES_READ values are checked by their first and last chunk (and
    their length), not read whole on every open: the values in between are not looked at."""
    from transforms.storage import layout_grid

    monkeypatch.setattr(layout_grid, "COORDINATES_READ", 1000)
    path = str(tmp_path / "m.zarr")
    field_stores.aef_mosaic(path, width=4400, height=600, years=YEARS)
    x = -122.5 + (np.arange(4400) + 0.5) * 0.00009
    if where == "length":
        x = x[:4000]
    elif where is not None:
        x[where] += 0.01
    _chunked_x(path, 4400, 500, x)  # chunks 0-499 ... 4000-4399: the last one is 4000-4399
    if refused:
        with pytest.raises(InputError, match="x coordinates are not"):
            layouts.describe(path)
    else:
        assert layouts.describe(path).width == 4400


def test_a_zarr_that_is_not_an_embedding_store(tmp_path):
    path = str(tmp_path / "other.zarr")
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.create_array("temperature", shape=(4, 4), dtype="float32")
    with pytest.raises(
        InputError,
        match="not an embedding store: it has no 'embedding' or 'embeddings' array \\(it holds temperature\\)",
    ):
        layouts.describe(path)
    with pytest.raises(InputError, match="does not exist"):
        layouts.describe(str(tmp_path / "nothing.zarr"))


# ---- sharded windows read directly (shard_windows.ShardWindows) against zarr-python's own read

WINDOWS = [
    (slice(0, 512), slice(0, 512)),  # one whole shard: the object in one read
    (slice(0, 700), slice(0, 600)),  # everything, edge shards and edge inner chunks included
    (slice(100, 650), slice(250, 590)),  # across shards and inner chunks, unaligned
    (slice(255, 257), slice(511, 513)),  # four inner chunks of four shards, a pixel each
    (slice(699, 700), slice(599, 600)),  # the last pixel
    (slice(300, 500), slice(512, 600)),  # the inner chunk left empty below, and its neighbour
]


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_shard_windows_read_as_zarr_does(tmp_path, dtype):
    synthetic = make_store(
        str(tmp_path / "v3.zarr"), dtype=dtype, chunk_size=512, height=700, width=600
    )
    array = zarr.open_group(synthetic.path, mode="r+")["embedding"]
    assert array.shards == (1, 64, 512, 512) and array.chunks == (1, 64, 256, 256)
    # an inner chunk of fill inside a written shard: zarr leaves it out of the shard's index
    array[0, :, 256:512, 512:600] = array.fill_value
    reader = layout_view.LayoutReader(layouts.describe(synthetic.path))
    reader.read_codes(0, slice(0, 1), slice(0, 1))
    assert reader._direct is not None  # the direct path, not zarr's
    # the last year's first shard is all no data: no object at all
    assert not os.path.exists(os.path.join(synthetic.path, "embedding", "c", "1", "0", "0", "0"))
    for t in (0, 1):
        for rows, cols in WINDOWS:
            want = np.moveaxis(array[t, :, rows, cols], 0, -1)
            got = reader.read_codes(t, rows, cols)
            assert got.flags.c_contiguous and got.dtype == want.dtype
            np.testing.assert_array_equal(got, want, err_msg=f"t={t} {rows} {cols}")


def test_shard_windows_leave_other_codecs_to_zarr(tmp_path):
    from zarr.codecs import GzipCodec

    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    array = root.create_array(
        "embedding",
        shape=(1, 8, 40, 40),
        shards=(1, 8, 20, 20),
        chunks=(1, 8, 10, 10),
        dtype="float32",
        compressors=GzipCodec(),
        dimension_names=("time", "band", "y", "x"),
    )
    array[...] = np.arange(8 * 40 * 40, dtype=np.float32).reshape(1, 8, 40, 40)
    assert shard_windows.ShardWindows.of(array, str(tmp_path / "g.zarr" / "embedding")) is None


@pytest.mark.parametrize("step", [(2, 3), (3, 1), (5, 7)])
def test_a_strided_window_reads_as_zarr_does(tmp_path, step):
    """Every step-th pixel of a window (the label page zoomed out), from efm's Zarr 3 store,
    equals zarr-python's own strided read of the stored array, bands moved last."""
    import zarr

    synthetic = make_store(str(tmp_path / "s.zarr"), dtype="int8")
    reader = layout_view.LayoutReader(layouts.describe(synthetic.path))
    rows, cols = slice(10, 230, step[0]), slice(3, 250, step[1])
    got = reader.read_codes(1, rows, cols)
    stored = zarr.open_group(synthetic.path, mode="r")["embedding"][1, :, rows, cols]
    np.testing.assert_array_equal(got, np.moveaxis(stored, 0, -1))
