"""export's, label's, make-sample-data's and demo's rarely needed knobs as `--tuning` keys (issue 20 item
4): the old flags refused with the way to say it now, bad values refused as one line naming the
key, and the values reaching the run (checked on what the run wrote: the GeoTIFF's colour table,
the PNG's pixels, the sample data's files). Lists inside a value are `;`-separated on the command
line and may use `,` in a @file.toml string (docs/tuning.md)."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import rasterio
from PIL import Image

from label_page import polygons
from pipelines import cli, tuning, tuning_keys
from sample_data import generate as sample_data
from tests.helpers.class_store import make_class_store
from tests.helpers.refusals import refused
from tests.helpers.store_factory import make_store
from transforms.products import export

HINT = "(rarely needed knobs are --tuning keys: docs/tuning.md)"


@pytest.mark.parametrize(
    "command, flag, value, key",
    [
        ("export", "--png-size", "200", "png_size"),
        ("export", "--mosaic-scale", "0.0002", "mosaic_scale"),
        ("export", "--nodata", "nan", "nodata"),
        ("export", "--colors", "water=#2b6cb0", "colors"),
        ("export", "--rgb", "A01,A16,A09", "rgb"),
        ("label", "--points-per-polygon", "5", "points_per_polygon"),
        ("label", "--port", "0", "port"),
        ("label", "--colors", "colors.json", "colors"),
        ("label", "--rgb", "A01,A02,A03", "rgb"),
        ("make-sample-data", "--tile-size", "64", "tile_size"),
        ("make-sample-data", "--top-down", None, "top_down"),
        ("make-sample-data", "--seed", "3", "seed"),
        ("demo", "--small", None, "small"),
    ],
)
def test_an_old_flag_is_refused_with_its_key(tmp_path, capsys, command, flag, value, key):
    argv = [command, "--output", str(tmp_path / "out"), flag, *([value] if value else [])]
    shown = "true" if value is None else value
    refused(
        argv,
        tmp_path,
        capsys,
        f"efm {command}: error: {flag}: moved: use --tuning {key}={shown} " + HINT,
    )


@pytest.mark.parametrize(
    "command, text, message",
    [
        ("label", "port=70000", "port: must be 0-65535 (0 = any free port), got 70000"),
        ("label", "port=abc", "port: must be an integer, got 'abc'"),
        (
            "label",
            "points_per_polygon=1001",
            "points_per_polygon: must be 0..1000 (0: every pixel centre inside, capped), got 1001",
        ),
        ("make-sample-data", "tile_size=32", "tile_size: must be at least 64 px, got 32"),
        ("make-sample-data", "top_down=maybe", "top_down: must be true or false, got 'maybe'"),
        ("demo", "small=maybe", "small: must be true or false, got 'maybe'"),
        (
            "make-sample-data",
            "seed=4294967296",
            "seed: must be a whole number in 0..4294967295 (numpy's limit), got 4294967296",
        ),
        (
            "export",
            "mosaic_scale=nan",
            "mosaic_scale: expected the mosaic's pixel size in degrees, 0 < size < 1, e.g. 0.0001, "
            "got nan",
        ),
        ("export", "nodata=minus one", "nodata: must be a number, got 'minus one'"),
        ("export", "colors= ", "expected KEY=VALUE,KEY=VALUE (e.g. max_retries=3), got 'colors='; "
         "or @file.toml (docs/tuning.md)"),
    ],
)  # fmt: skip
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, capsys, command, text, message):
    required = {
        "export": ["--input", str(tmp_path / "in.zarr")],
        "label": ["--embeddings", str(tmp_path / "in.zarr")],
        "make-sample-data": [],
        "demo": [],
    }[command]
    argv = [command, *required, "--output", str(tmp_path / "out"), "--tuning", text]
    refused(argv, tmp_path, capsys, f"efm {command}: error: --tuning: {message}")


def test_a_key_of_another_command_is_refused(tmp_path, capsys):
    argv = ["label", "--embeddings", "e.zarr", "--output", "p.geojson", "--tuning", "png_size=9"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("efm label: error: --tuning: unknown key 'png_size'; ")
    assert "points_per_polygon, port, colors, rgb" in err[0]


def test_the_keys_defaults_are_the_code_s():
    """tuning_keys does not import the modules (every command imports it): the same numbers."""
    assert tuning_keys.MAX_PNG_SIZE == export.MAX_PNG_SIZE
    assert tuning_keys.DEFAULT_FLOAT_NODATA == export.DEFAULT_FLOAT_NODATA
    assert tuning_keys.DEFAULT_RGB == ",".join(export.DEFAULT_RGB)
    assert tuning_keys.MAX_PER_POLYGON == polygons.MAX_PER_POLYGON
    assert tuning_keys.DEFAULT_SEED == sample_data.SampleSpec.seed
    defaults = {(c, k.name): k.default for c, keys in tuning.KEYS.items() for k in keys}
    assert defaults["export", "png_size"] == 1024 and defaults["label", "port"] == 8765


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    s = make_store(str(root / "emb.zarr"), height=96, width=80, chunk_size=64, n_classes=3)
    make_class_store(str(root / "classes.zarr"), s.path)
    return s.path, str(root / "classes.zarr")


def test_colors_from_a_toml_file_with_commas_reach_the_colour_table(stores, tmp_path, capsys):
    _, classes = stores
    toml = tmp_path / "tuning.toml"
    toml.write_text('colors = "water=#2b6cb0,crop land=yellow"\n')
    out = tmp_path / "c.tif"
    argv = ["export", "--input", classes, "--years", "2022", "--output", str(out)]
    assert cli.main([*argv, "--tuning", f"@{toml}"]) == 0, capsys.readouterr().err
    with rasterio.open(out) as src:
        table = src.colormap(1)
    # water is class 0, crop land class 2 (make_class_store's labels); #2b6cb0 = (43, 108, 176)
    assert table[0][:3] == (43, 108, 176) and table[2][:3] == (255, 255, 0)


def _grey(png) -> bool:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def test_rgb_with_semicolons_picks_the_false_colour_bands(stores, tmp_path, capsys):
    """One band three times is a grey picture; the default three bands are not."""
    emb, _ = stores
    argv = ["export", "--input", emb, "--band", "A05", "--years", "2021", "--png"]
    assert cli.main([*argv, "--output", str(tmp_path / "a.tif")]) == 0
    grey = ["--output", str(tmp_path / "b.tif"), "--tuning", "rgb=A05;A05;A05"]
    assert cli.main([*argv, *grey]) == 0
    assert not _grey(tmp_path / "a.png")
    assert _grey(tmp_path / "b.png")
    capsys.readouterr()


def _tiffs(folder):
    files = sorted(glob.glob(str(folder / "mirror" / "**" / "*.tiff"), recursive=True))
    assert files
    return files


def test_sample_data_keys_reach_the_files(tmp_path, capsys):
    """tile_size: the files' side; top_down: the sign of the rows' step; seed: the same seed gives
    the same ground truth (from the flag's text or a TOML file), another seed another."""
    base = ["make-sample-data", "--size", "128x160", "--years", "2021"]
    assert cli.main([*base, "--output", str(tmp_path / "a"), "--tuning", "tile_size=64"]) == 0
    assert (
        cli.main(
            [
                *base,
                "--output",
                str(tmp_path / "b"),
                "--tuning",
                "tile_size=64,top_down=true",
                "--tuning",
                "seed=3",
            ]
        )
        == 0
    )
    toml = tmp_path / "t.toml"
    toml.write_text("seed = 3\ntop_down = true\n")
    assert cli.main([*base, "--output", str(tmp_path / "c"), "--tuning", f"@{toml}"]) == 0
    capsys.readouterr()
    for path in _tiffs(tmp_path / "a"):
        with rasterio.open(path) as src:
            assert (src.width, src.height) == (64, 64) and src.transform.e > 0  # bottom-up
    for path in _tiffs(tmp_path / "b") + _tiffs(tmp_path / "c"):
        with rasterio.open(path) as src:
            assert src.transform.e < 0
    with rasterio.open(_tiffs(tmp_path / "b")[0]) as src:
        assert (src.width, src.height) == (64, 64)
    with rasterio.open(_tiffs(tmp_path / "c")[0]) as src:
        assert (src.width, src.height) != (64, 64)  # the default tile size

    def truth(name):
        with rasterio.open(tmp_path / name / "ground_truth.tif") as src:
            return src.read(1)

    np.testing.assert_array_equal(truth("b"), truth("c"))
    assert (truth("a") != truth("b")).mean() > 0.3


def test_a_comma_list_on_the_command_line_is_refused_naming_the_item(tmp_path, capsys):
    """`,` separates --tuning's items: `rgb=A01,A16,A09` is refused (never read as rgb=A01 and two
    stray words), saying how a list is written."""
    argv = ["export", "--input", "e.zarr", "--output", str(tmp_path / "x.tif")]
    refused(
        [*argv, "--tuning", "png_size=300,rgb=A01,A16,A09"],
        tmp_path,
        capsys,
        "efm export: error: --tuning: expected KEY=VALUE,KEY=VALUE (e.g. max_retries=3), got "
        "'A16' after rgb=A01: a list inside one value is ;-separated (e.g. rgb=A01;A16); or "
        "@file.toml (docs/tuning.md)",
    )
