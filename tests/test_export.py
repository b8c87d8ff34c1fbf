"""efm export: COGs that rasterio reads with the store's CRS, transform and values."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio

from pipelines import export as export_cli
from tests.helpers.class_store import make_class_store
from tests.helpers.store_factory import make_store
from transforms.core.errors import InputError
from transforms.products.export import class_colors, output_paths, validate_cog


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """1100 x 700 px with 256-px chunks: several windows, overviews, COG layout that matters."""
    root = tmp_path_factory.mktemp("big")
    s = make_store(
        str(root / "emb.zarr"), height=1100, width=700, chunk_size=256, years=(2021,), n_classes=3
    )
    ds, codes = make_class_store(str(root / "classes.zarr"), s.path)
    return s, ds, codes, str(root / "classes.zarr")


def test_class_cog_matches_the_store(big, tmp_path, capsys):
    s, ds, codes, classes = big
    out = tmp_path / "map.tif"
    assert export_cli.run(["--input", classes, "--output", str(out), "--png"]) == 0
    assert "0=water, 1=forest, 2=crop land" in capsys.readouterr().out
    for t, year in enumerate((2021, 2022)):
        path = tmp_path / f"map_{year}.tif"
        assert validate_cog(str(path)) == []
        with rasterio.open(path) as src:
            assert src.crs == ds.rio.crs and src.transform == ds.rio.transform()
            assert src.nodata == 255 and src.dtypes[0] == "uint8" and src.overviews(1)
            np.testing.assert_array_equal(src.read(1), codes[t])
            cmap = src.colormap(1)
            expected = class_colors([0, 1, 2])
            assert all(cmap[v][:3] == expected[v] for v in (0, 1, 2))
            assert src.tags(1)["CLASS_2"] == "crop land"
        png = tmp_path / f"map_{year}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_embedding_band_export_and_false_colour(big, tmp_path):
    s, ds, _, _ = big
    out = tmp_path / "a05_{year}.tif"
    assert (
        export_cli.run(
            [
                "--input",
                s.path,
                "--band",
                "A05",
                "--years",
                "2021",
                "--output",
                str(out),
                "--png",
                "--tuning",
                "rgb=A01;A16;A09",
            ]
        )
        == 0
    )
    path = tmp_path / "a05_2021.tif"
    assert validate_cog(str(path)) == []
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), s.values[0, :, :, 5])
        assert (
            np.isnan(src.nodata) and src.crs == ds.rio.crs and src.transform == ds.rio.transform()
        )
    assert (tmp_path / "a05_2021.png").exists()


def test_a_plain_tiff_is_not_a_cog(tmp_path):
    path = tmp_path / "plain.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=1200, height=1000, count=1, dtype="uint8"
    ) as dst:
        dst.write(np.zeros((1000, 1200), np.uint8), 1)
    problems = validate_cog(str(path))
    assert "not tiled" in problems and "no overviews" in problems


def test_export_refuses_bad_input(big, tmp_path, capsys):
    s, _, _, classes = big
    assert export_cli.run(["--input", s.path, "--output", str(tmp_path / "x.tif")]) == 2
    assert "--band" in capsys.readouterr().err
    assert export_cli.run(["--input", classes, "--output", str(tmp_path / "x.png")]) == 2
    assert "--output" in capsys.readouterr().err
    assert (
        export_cli.run(["--input", classes, "--years", "2019", "--output", str(tmp_path / "x.tif")])
        == 2
    )
    assert "--years" in capsys.readouterr().err
    assert output_paths("a/b.tif", [2021]) == {2021: "a/b.tif"}
    assert output_paths("a/b.tif", [2021, 2022]) == {2021: "a/b_2021.tif", 2022: "a/b_2022.tif"}


def test_colours_from_the_command_line(big, tmp_path, capsys):
    _, _, _, classes = big
    out = tmp_path / "c_{year}.tif"
    assert (
        export_cli.run(
            [
                "--input",
                classes,
                "--years",
                "2022",
                "--output",
                str(out),
                "--tuning",
                "colors=water=#2b6cb0;crop land=yellow",
            ]
        )
        == 0
    )
    with rasterio.open(tmp_path / "c_2022.tif") as src:
        assert src.colormap(1)[0][:3] == (0x2B, 0x6C, 0xB0) and src.colormap(1)[2][:3] == (
            255,
            255,
            0,
        )
    assert (
        export_cli.run(
            [
                "--input",
                classes,
                "--output",
                str(tmp_path / "d.tif"),
                "--tuning",
                "colors=lava=#ff0000",
            ]
        )
        == 2
    )
    assert "--tuning: colors: 'lava' is not a class" in capsys.readouterr().err


def test_class_colours_parse_from_pairs_and_from_a_json_file(tmp_path):
    """export's colors (`--tuning colors=...`) parsed in products/export.py: hex and named colours -> 8-bit RGB, by class label."""
    import json
    import types

    from transforms.products.export import parse_colors

    layer = types.SimpleNamespace(labels=("water", "forest", "crop land"), values=(3, 7, 9))
    # #2b6cb0 is (0x2b, 0x6c, 0xb0); CSS "red" is (255, 0, 0)
    assert parse_colors("water=#2b6cb0, forest = red", layer) == {3: (43, 108, 176), 7: (255, 0, 0)}
    colours = tmp_path / "colours.json"
    colours.write_text(json.dumps({"crop land": "#00ff00"}))
    assert parse_colors(str(colours), layer) == {9: (0, 255, 0)}
    for text, message in (
        ("water", "expected LABEL=COLOUR pairs"),
        ("lava=#ff0000", "'lava' is not a class of this map"),
        ("water=not-a-colour", "'not-a-colour' is not a colour"),
    ):
        with pytest.raises(InputError, match=message) as caught:
            parse_colors(text, layer)
        assert caught.value.flag == "--colors"


def test_a_remote_cog_is_read_through_a_local_copy_that_leaks_no_file_descriptor():
    """The quicklook reads a gs:// COG from a temporary local copy: removed after, its fd closed."""
    import fsspec

    from transforms.products.export import local_copy

    fsspec.filesystem("memory").pipe("/efm-local-copy-test/map.tif", b"GeoTIFF bytes")
    try:
        before = sorted(os.listdir("/proc/self/fd"))
        with local_copy("memory://efm-local-copy-test/map.tif") as local:
            assert "://" not in local
            with open(local, "rb") as f:
                assert f.read() == b"GeoTIFF bytes"
        assert not os.path.exists(local), "the temporary copy is removed"
        assert sorted(os.listdir("/proc/self/fd")) == before, "a file descriptor was left open"
    finally:
        fsspec.filesystem("memory").rm("/efm-local-copy-test", recursive=True)
    with local_copy("/some/local/map.tif") as local:  # a local path is read where it is
        assert local == "/some/local/map.tif"
