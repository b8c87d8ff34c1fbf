"""`efm extract` of an area across two UTM zones: a collection (one store per zone + an index).

The reference is independent of the code under test: each member's pixels are checked against
the mirror's files by the nearest-pixel look-up of tests/helpers/cog_mirror.py (rasterio + pyproj), and
which pixels a member holds against each pixel's four corners projected to lon/lat with pyproj
(the rule of docs/data-contract.md, "Collections").
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyproj
import pytest
import shapely
import shapely.ops
import zarr

from pipelines import extract, extract_zones
from sample_data import generate as sample_data
from tests.helpers.cog_mirror import NODATA, check_nearest, files_touching, lookup, make_source
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import raw_embedding
from transforms.core import grid as gridlib
from transforms.core.grid import Grid, Window

SPEC = sample_data.SampleSpec(**sample_data.SMALL)
SEAM = -120.0  # zones 10 | 11
CELLS = {"10N": ("EPSG:32610", -126.0, -120.0), "11N": ("EPSG:32611", -120.0, -114.0)}


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return sample_data.generate(str(tmp_path_factory.mktemp("sample")), SPEC)


def bbox(sd) -> str:
    return ",".join(repr(v) for v in sd.bbox)


def argv(sd, output, *extra, years="2022,2023"):
    return [
        "--source=cog",
        f"--cog-root={sd.mirror}",
        f"--bbox={bbox(sd)}",
        f"--years={years}",
        f"--output={output}",
        "--dtype=int8",
        "--tuning=chunk_size=128",
        *extra,
        *FNAPI,
    ]


def member_grid(path) -> Grid:
    group = zarr.open_group(path, mode="r")
    x, y = group["x"][...], group["y"][...]
    return Grid(
        crs=group.attrs["proj:code"],
        scale=10.0,
        x0=float(x[0] - 5),
        y0=float(y[0] + 5),
        width=len(x),
        height=len(y),
    )


def held_by_rule(grid: Grid, west: float, east: float) -> np.ndarray:
    """Pixels whose footprint touches lon [west, east): from the four corners, with pyproj."""
    xs = grid.x0 + np.arange(grid.width + 1) * grid.scale
    ys = grid.y0 - np.arange(grid.height + 1) * grid.scale
    lon, _ = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(
        *np.meshgrid(xs, ys)
    )
    corners = [lon[:-1, :-1], lon[:-1, 1:], lon[1:, :-1], lon[1:, 1:]]
    return (np.maximum.reduce(corners) >= west) & (np.minimum.reduce(corners) < east)


def touched_pixels(grid: Grid, part_lonlat) -> np.ndarray:
    """Pixels in the 128 px chunks that the area's part (projected, its edges densified) touches."""
    to_crs = pyproj.Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform
    part = shapely.ops.transform(to_crs, shapely.segmentize(part_lonlat, 0.0005))
    out = np.zeros((grid.height, grid.width), bool)
    for r in range(0, grid.height, 128):
        for c in range(0, grid.width, 128):
            rows, cols = min(128, grid.height - r), min(128, grid.width - c)
            left, top = grid.x0 + c * 10, grid.y0 - r * 10
            if shapely.box(left, top - rows * 10, left + cols * 10, top).intersects(part):
                out[r : r + rows, c : c + cols] = True
    return out


@pytest.fixture(scope="module")
def coll(sd, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("coll") / "area")
    assert extract.run(argv(sd, out, "--tuning", "split_zones=true")) == 0
    return out


def test_each_zone_store_holds_the_mirror_pixels_its_zone_owns(sd, coll):
    index = json.load(open(os.path.join(coll, "collection.json")))
    assert [m["cell"] for m in index["members"]] == ["10N", "11N"]
    assert index["years"] == [2022, 2023] and index["kind"] == "embeddings"
    for m in index["members"]:
        crs, west, east = CELLS[m["cell"]]
        path = os.path.join(coll, m["path"])
        assert m["crs"] == crs and zarr.open_group(path).attrs["efm_status"] == "complete"
        grid = member_grid(path)
        assert grid.crs == crs
        codes = raw_embedding(path)  # (time, y, x, band) as stored, read with zarr alone
        keep = held_by_rule(grid, west, east)
        assert 0 < (~keep).sum() and keep.sum() > 1000  # the seam cuts this store
        source = make_source(sd.mirror, grid, "int8")
        whole = Window(0, 0, grid.height, grid.width)
        in_touched = touched_pixels(grid, shapely.box(*m["bounds_lonlat"]))
        assert m["bounds_lonlat"][0 if m["cell"] == "11N" else 2] == SEAM
        for t, year in enumerate((2022, 2023)):
            got = codes[t]
            assert (got[~keep] == NODATA).all()  # beyond the seam: no data
            files = files_touching(source, whole, year)
            expected, _ = lookup(grid, whole, files)
            assert (got[~in_touched] == NODATA).all()  # chunks the zone's part misses
            # where the rule keeps a pixel, it is the mirror's nearest pixel
            held = keep & in_touched
            check_nearest(np.where(held[..., None], got, expected), grid, whole, files)
            assert (got[keep] != NODATA).any()


def test_the_seam_has_no_gap_and_each_place_reads_one_zone(sd, coll):
    """Across the seam, on a lon/lat lattice: the store of the point's own zone holds data at the
    pixel under the point (no gap), and the pixels counted by centre (the reading rule) of the
    two stores fall on their own side (no place counted twice)."""
    index = json.load(open(os.path.join(coll, "collection.json")))
    stores = {m["cell"]: os.path.join(coll, m["path"]) for m in index["members"]}
    lat = np.linspace(38.992, 39.008, 41)
    lon = SEAM + np.linspace(-0.0005, 0.0005, 41)  # +- ~43 m: four pixels each side
    lons, lats = np.meshgrid(lon, lat)
    for name, path in stores.items():
        crs, west, east = CELLS[name]
        grid = member_grid(path)
        codes = raw_embedding(path)[0, ..., 0]
        whole = Window(0, 0, grid.height, grid.width)
        source = make_source(sd.mirror, grid, "int8")
        mirror = lookup(grid, whole, files_touching(source, whole, 2022))[0][..., 0]
        mine = (lons >= west) & (lons < east)
        x, y = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(
            lons[mine], lats[mine]
        )
        col = np.floor((x - grid.x0) / grid.scale).astype(int)
        row = np.floor((grid.y0 - y) / grid.scale).astype(int)
        has_data = mirror[row, col] != NODATA  # (the sample mirror has holes of its own)
        assert has_data.mean() > 0.8
        assert (codes[row, col][has_data] != NODATA).all(), f"a gap in {name} at the seam"
        # pixel centres of this store: those on the other side of the seam are held only
        # within one pixel of it (footprint rule), never farther
        cx = grid.x0 + (np.arange(grid.width) + 0.5) * grid.scale
        cy = grid.y0 - (np.arange(grid.height) + 0.5) * grid.scale
        clon, _ = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
            *np.meshgrid(cx, cy)
        )
        beyond = ~((clon >= west) & (clon < east)) & (codes != NODATA)
        assert beyond.any()  # the < 1 px strip is there
        assert (np.abs(clon[beyond] - SEAM) < 15 / 86_000).all()  # within 15 m of the seam


def test_dry_run_plans_per_zone_and_in_total_and_writes_nothing(sd, tmp_path, capsys):
    out = tmp_path / "plan"
    assert extract.run(argv(sd, str(out), "--tuning", "split_zones=true", "--dry-run")) == 0
    text = capsys.readouterr().out
    assert "(zone 10N) (dry run" in text and "(zone 11N) (dry run" in text
    assert "stores                        2, one per UTM zone: 10N, 11N" in text
    assert not out.exists()


def test_resume_writes_only_the_missing_zone(sd, coll, tmp_path, capsys):
    """A run stopped after its first zone: the second zone's store is not there. --resume
    writes it and leaves every file of the first untouched."""
    import shutil

    out = str(tmp_path / "area")
    shutil.copytree(coll, out)
    shutil.rmtree(os.path.join(out, "utm-11n.zarr"))
    first = os.path.join(out, "utm-10n.zarr")
    before = {
        os.path.relpath(os.path.join(d, f), first): os.stat(os.path.join(d, f)).st_mtime_ns
        for d, _, fs in os.walk(first)
        for f in fs
    }
    assert extract.run(argv(sd, out, "--resume")) == 0
    after = {
        os.path.relpath(os.path.join(d, f), first): os.stat(os.path.join(d, f)).st_mtime_ns
        for d, _, fs in os.walk(first)
        for f in fs
    }
    assert after == before
    np.testing.assert_array_equal(
        raw_embedding(os.path.join(out, "utm-11n.zarr")),
        raw_embedding(os.path.join(coll, "utm-11n.zarr")),
    )


def test_a_collection_is_replaced_only_with_overwrite_and_only_when_alone(
    sd, coll, tmp_path, capsys
):
    import shutil

    out = str(tmp_path / "area")
    shutil.copytree(coll, out)
    assert extract.run(argv(sd, out)) == 2  # an area across zones: the collection, which exists
    assert "already exists" in capsys.readouterr().err
    assert extract.run(argv(sd, out, "--overwrite")) == 0
    np.testing.assert_array_equal(
        raw_embedding(os.path.join(out, "utm-10n.zarr")),
        raw_embedding(os.path.join(coll, "utm-10n.zarr")),
    )
    open(os.path.join(out, "notes.txt"), "w").write("mine")
    capsys.readouterr()
    assert extract.run(argv(sd, out, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and len(err.strip().splitlines()) == 1
    assert open(os.path.join(out, "notes.txt")).read() == "mine"


def test_adding_a_year_to_a_collection(sd, coll, tmp_path):
    out = str(tmp_path / "area")
    assert extract.run(argv(sd, out, "--tuning", "split_zones=true", years="2022")) == 0
    args = [a for a in argv(sd, out, years="2023") if not a.startswith("--years")]
    assert extract.run([*args, "--add-years=2023"]) == 0
    assert json.load(open(os.path.join(out, "collection.json")))["years"] == [2022, 2023]
    for name in ("utm-10n.zarr", "utm-11n.zarr"):
        np.testing.assert_array_equal(
            raw_embedding(os.path.join(out, name)), raw_embedding(os.path.join(coll, name))
        )


@pytest.mark.parametrize(
    "extra, flag, words",
    [
        (["--crs=EPSG:32610"], "--crs", "each zone's own UTM CRS"),
        (["--bbox=10,83,14,85"], "--bbox/--aoi", "UTM zones reach -80..84"),
    ],
)
def test_bad_collection_flags_are_one_line(sd, tmp_path, capsys, extra, flag, words):
    out = tmp_path / "x"
    args = [
        a
        for a in argv(sd, str(out), "--tuning", "split_zones=true")
        if not (extra[0].startswith("--bbox") and a.startswith("--bbox"))
    ]
    assert extract.run([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"error: {flag}: " in err and words in err, err
    assert not out.exists()


def test_resume_with_another_area_is_refused(sd, coll, tmp_path, capsys):
    import shutil

    out = str(tmp_path / "area")
    shutil.copytree(coll, out)
    west, south, east, north = sd.bbox
    args = [a for a in argv(sd, out, "--resume") if not a.startswith("--bbox")]
    assert extract.run([*args, f"--bbox={west},{south},{SEAM - 0.001},{north}"]) == 2
    err = capsys.readouterr().err
    assert "is a collection of zones 10N, 11N; this area spans 10N" in err


def test_which_areas_make_a_collection():
    class Args:
        split_zones, crs, source, output = False, None, "ee", "/nonexistent/x"

    us = gridlib.parse_bbox("-125,30,-70,49")
    small = gridlib.parse_bbox("6.1,46.1,6.2,46.2")
    assert extract_zones.wants_collection(Args, us)
    assert not extract_zones.wants_collection(Args, small)
    Args.split_zones = True
    assert extract_zones.wants_collection(Args, small)
    Args.split_zones, Args.crs = False, "EPSG:5070"
    assert not extract_zones.wants_collection(Args, us)  # the user's CRS: one store
