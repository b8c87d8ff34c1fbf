"""efm export of float maps (prediction, similarity, change, confidence) and 0/1 masks: COGs equal to the store."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import zarr
from PIL import Image

from pipelines import change as change_cli
from pipelines import export as export_cli
from tests.helpers.store_factory import make_store
from transforms.products.change import mask_variable, similarity_variable
from transforms.products.chunk_map import output_template
from transforms.products.classify import class_encoding, class_template, regression_variable
from transforms.products.export import DEFAULT_FLOAT_NODATA, validate_cog
from transforms.storage import store


def write_product(path, emb, variables, years, arrays, product):
    """A complete product store on the embedding store's grid, its arrays written directly."""
    chunk = emb["embedding"].encoding["chunks"][1]
    template = output_template(
        emb, variables, years, chunk_rows=chunk, chunk_cols=chunk, product=product, attrs={}
    )
    store.setup(path, template)
    group = zarr.open_group(path, mode="r+")
    for name, values in arrays.items():
        group[name][...] = values
    store.set_status(path, "complete")
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("products")
    # 600 x 530 px, 256-px chunks: several windows and an overview level
    s = make_store(
        str(root / "emb.zarr"), height=600, width=530, chunk_size=256, years=(2021, 2022, 2023)
    )
    emb = store.open_embeddings(s.path)
    rng = np.random.default_rng(1)
    shape = (2, 600, 530)
    pred = rng.normal(150.0, 40.0, shape).astype(np.float32)
    pred[~s.valid[:2]] = np.nan
    sim = rng.uniform(-1, 1, shape).astype(np.float32)
    sim[~s.valid[:2]] = np.nan
    similar = np.where(np.isnan(sim), 255, sim >= 0.5).astype(np.uint8)
    conf = rng.uniform(0.3, 1.0, shape).astype(np.float32)
    conf[~s.valid[:2]] = np.nan
    out = {
        "prediction": write_product(
            str(root / "pred.zarr"),
            emb,
            [regression_variable({"target": "biomass", "units": "t/ha"})],
            [2021, 2022],
            {"prediction": pred},
            "prediction",
        ),
        "similarity": write_product(
            str(root / "sim.zarr"),
            emb,
            [
                similarity_variable("dot product with the reference"),
                mask_variable("similar", "similarity at least 0.5", 0.5),
            ],
            [2021, 2022],
            {"similarity": sim, "similar": similar},
            "similarity",
        ),
    }
    enc = class_encoding(["water", "forest"])
    template = class_template(
        emb, [2021, 2022], enc, confidence=True, chunk_rows=256, chunk_cols=256, attrs={}
    )
    store.setup(str(root / "classes.zarr"), template)
    group = zarr.open_group(str(root / "classes.zarr"), mode="r+")
    group["class"][...] = np.where(np.isnan(conf), enc.fill, 1).astype(np.uint8)
    group["confidence"][...] = conf
    store.set_status(str(root / "classes.zarr"), "complete")
    out["classes"] = str(root / "classes.zarr")
    # the change store from the real command: (y, x), no time
    out["change"] = str(root / "change.zarr")
    assert (
        change_cli.run(
            [
                "--embeddings",
                s.path,
                "--years",
                "2021,2023",
                "--output",
                out["change"],
                "--threshold",
                "0.5",
                "--runner=FnApiRunner",
            ]
        )
        == 0
    )
    return (
        s,
        emb,
        out,
        {"prediction": pred, "similarity": sim, "similar": similar, "confidence": conf},
    )


def read_back(path, emb):
    assert validate_cog(str(path)) == []
    with rasterio.open(path) as src:
        assert src.crs == emb.rio.crs and src.transform == emb.rio.transform()
        return src.read(1), src.nodata, src.dtypes[0], src.tags(1)


def assert_float_equal(got, nodata, expected):
    """NaN in the store <=> nodata in the GeoTIFF; every other pixel bit-for-bit."""
    np.testing.assert_array_equal(got == nodata, np.isnan(expected))
    np.testing.assert_array_equal(got[~np.isnan(expected)], expected[~np.isnan(expected)])


def assert_colour_bar_png(path, min_colours=20):
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 150 and image.shape[1] > 300
    # a map in a continuous colormap plus its colour bar: many distinct colours, not one flat fill
    assert len(np.unique(image.reshape(-1, 3), axis=0)) >= min_colours
    assert Image.open(path).text.get("efm_product") == "quicklook"


def test_prediction_float_cog_and_colour_bar(stores, tmp_path, capsys):
    s, emb, paths, arrays = stores
    assert (
        export_cli.run(
            ["--input", paths["prediction"], "--output", str(tmp_path / "biomass.tif"), "--png"]
        )
        == 0
    )
    summary = capsys.readouterr().out
    assert "t/ha" in summary and "-9999" in summary
    for t, year in enumerate((2021, 2022)):
        got, nodata, dtype, tags = read_back(tmp_path / f"biomass_{year}.tif", emb)
        assert dtype == "float32" and nodata == DEFAULT_FLOAT_NODATA
        assert_float_equal(got, nodata, arrays["prediction"][t])
        assert tags["UNITS"] == "t/ha" and tags["TARGET"] == "biomass"
        assert_colour_bar_png(tmp_path / f"biomass_{year}.png")


def test_similarity_main_variable_mask_and_nan_nodata(stores, tmp_path):
    s, emb, paths, arrays = stores
    assert (
        export_cli.run(
            [
                "--input",
                paths["similarity"],
                "--years",
                "2022",
                "--output",
                str(tmp_path / "sim.tif"),
                "--png",
                "--tuning",
                "nodata=nan",
            ]
        )
        == 0
    )
    got, nodata, dtype, _ = read_back(tmp_path / "sim.tif", emb)
    assert np.isnan(nodata) and dtype == "float32"
    np.testing.assert_array_equal(got, arrays["similarity"][1])  # NaN == NaN here
    assert_colour_bar_png(tmp_path / "sim.png")
    assert (
        export_cli.run(
            [
                "--input",
                paths["similarity"],
                "--variable",
                "similar",
                "--output",
                str(tmp_path / "similar.tif"),
                "--png",
            ]
        )
        == 0
    )
    for t, year in enumerate((2021, 2022)):
        got, nodata, dtype, tags = read_back(tmp_path / f"similar_{year}.tif", emb)
        assert dtype == "uint8" and nodata == 255
        np.testing.assert_array_equal(got, arrays["similar"][t])
        assert tags["CLASS_1"] == "similar"
        assert (tmp_path / f"similar_{year}.png").exists()


def test_change_store_gives_one_file(stores, tmp_path, capsys):
    s, emb, paths, _ = stores
    got_store = zarr.open_group(paths["change"], mode="r")
    sim, changed = got_store["similarity"][...], got_store["changed"][...]
    assert np.isnan(sim).any() and not np.isnan(sim).all()
    assert (
        export_cli.run(
            ["--input", paths["change"], "--output", str(tmp_path / "change_{year}.tif"), "--png"]
        )
        == 0
    )
    assert "2021 → 2023" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["change.png", "change.tif"]
    got, nodata, _, _ = read_back(tmp_path / "change.tif", emb)
    assert_float_equal(got, nodata, sim)
    assert_colour_bar_png(tmp_path / "change.png")
    assert (
        export_cli.run(
            [
                "--input",
                paths["change"],
                "--variable",
                "changed",
                "--output",
                str(tmp_path / "changed.tif"),
            ]
        )
        == 0
    )
    got, nodata, dtype, _ = read_back(tmp_path / "changed.tif", emb)
    assert dtype == "uint8" and nodata == 255
    np.testing.assert_array_equal(got, changed)


def test_confidence_of_a_class_map(stores, tmp_path):
    s, emb, paths, arrays = stores
    assert (
        export_cli.run(
            [
                "--input",
                paths["classes"],
                "--variable",
                "confidence",
                "--years",
                "2021",
                "--output",
                str(tmp_path / "conf.tif"),
                "--png",
            ]
        )
        == 0
    )
    got, nodata, _, _ = read_back(tmp_path / "conf.tif", emb)
    assert_float_equal(got, nodata, arrays["confidence"][0])
    assert_colour_bar_png(tmp_path / "conf.png")
    # the default variable of a class store stays the class map
    assert (
        export_cli.run(
            ["--input", paths["classes"], "--years", "2021", "--output", str(tmp_path / "cls.tif")]
        )
        == 0
    )
    assert read_back(tmp_path / "cls.tif", emb)[2] == "uint8"


def test_exported_files_are_ours_to_overwrite(stores, tmp_path, capsys):
    _, _, paths, _ = stores
    out = tmp_path / "c.tif"
    assert export_cli.run(["--input", paths["change"], "--output", str(out), "--png"]) == 0
    assert (
        export_cli.run(["--input", paths["change"], "--output", str(out), "--png"]) == 2
    )  # exists: needs --overwrite
    capsys.readouterr()
    assert (
        export_cli.run(["--input", paths["change"], "--output", str(out), "--png", "--overwrite"])
        == 0
    )


@pytest.mark.parametrize(
    "argv,flag,words",
    [
        (
            ["--variable", "elevation"],
            "--variable",
            "has no 'elevation' variable; choose one of changed, similarity",
        ),
        (["--years", "2021"], "--years", "no time dimension"),
        (["--tuning", "nodata=minus one"], "--tuning: nodata", "must be a number"),
        (
            ["--tuning", "nodata=0.5"],
            "--tuning: nodata",
            "holds the value",
        ),  # replaced below by a value the map holds
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(stores, tmp_path, capsys, argv, flag, words):
    _, _, paths, _ = stores
    if flag == "--tuning: nodata" and "nodata=0.5" in argv:
        # a value the map really holds: make it so by asking for one of its pixels
        sim = zarr.open_group(paths["change"], mode="r")["similarity"][...]
        argv = ["--tuning", f"nodata={float(sim[np.isfinite(sim)][0])!r}"]
        words = "holds the value"
    assert (
        export_cli.run(["--input", paths["change"], "--output", str(tmp_path / "x.tif"), *argv])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"efm export: error: {flag}") and words in err[0]
    assert list(tmp_path.iterdir()) == []


def test_band_on_a_product_store_is_refused(stores, tmp_path, capsys):
    _, _, paths, _ = stores
    assert (
        export_cli.run(
            ["--input", paths["prediction"], "--band", "A01", "--output", str(tmp_path / "x.tif")]
        )
        == 2
    )
    assert "--band: " in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_change_store_on_gcs_to_gcs(stores, gcs, gcs_bucket, tmp_path):
    """gs:// in and out: the COG and PNG are uploaded, and the COG equals the store."""
    _, emb, paths, _ = stores
    remote = f"{gcs_bucket}/change.zarr"
    gcs.fs.put(paths["change"], remote.removeprefix("gs://"), recursive=True)
    assert (
        export_cli.run(["--input", remote, "--output", f"{gcs_bucket}/out/change.tif", "--png"])
        == 0
    )
    local = tmp_path / "change.tif"
    gcs.fs.get_file(f"{gcs_bucket}/out/change.tif".removeprefix("gs://"), str(local))
    got, nodata, _, _ = read_back(local, emb)
    assert_float_equal(
        got,
        nodata,
        zarr.open_group(paths["change"], mode="r")["similarity"][...],
    )
    assert gcs.fs.exists(f"{gcs_bucket}/out/change.png".removeprefix("gs://"))


def test_nodata_found_in_a_later_year_leaves_no_file(stores, tmp_path, capsys):
    """2021 is written before 2022 shows the nodata value: the 2021 COG and PNG are removed again."""
    _, _, paths, arrays = stores
    later = arrays["prediction"][1]
    value = float(later[np.isfinite(later)][0])
    assert not np.any(arrays["prediction"][0] == np.float32(value))
    assert (
        export_cli.run(
            [
                "--input",
                paths["prediction"],
                "--output",
                str(tmp_path / "p.tif"),
                "--png",
                "--tuning",
                f"nodata={value!r}",
            ]
        )
        == 2
    )
    assert "--tuning: nodata: " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
