"""`efm extract --source zarr`: a region of a convention store copied into a store of ours.

Source stores are built by tests/helpers/field_stores.py in the public AEF mosaic's layout
(EPSG:4326, int8 signed-square codes), the same layout in a UTM zone, a float32 store of 16
bands, and a TESSERA zone group (128 bands, per-pixel scale). Every run goes through the real
command on FnApiRunner; its output is read with `open_embeddings` (the canonical view, whatever
layout efm writes) and compared with direct numpy indexing of the arrays written into the source:

- `--tuning grid=source` (a projected store): the output's pixel centres must be source pixel centres
  and its values the source's at those indices, bit for bit (int8 codes, or the floats);
- `--tuning grid=utm`: every output pixel centre is transformed exactly (pyproj, per pixel) to the
  source's CRS and the source pixel containing it is taken (floor of the offset over the pixel
  size); the COG rule interpolates the transform between a 32 px lattice, so a centre within
  EDGE of a source pixel edge may take the pixel on the other side (docs/cog-source.md).
"""

from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np
import pyproj
import pytest
import shapely
import zarr

from pipelines import extract
from tests.helpers import field_stores
from tests.helpers.run_summary import summary_values
from tests.helpers.runners import FNAPI
from transforms.storage import layouts
from transforms.storage.store import open_embeddings

EDGE = (
    0.01  # source pixels: a centre this close to an edge may go either way (lattice interpolation)
)

# The 4326 store: the public mosaic's layout, scaled down (256 px shards of 64 px inner chunks).
WEST, NORTH, RES = -122.5, 38.0, 0.00009
AEF_W, AEF_H = 400, 300
AEF_YEARS = (2023, 2024)
INSIDE_BBOX = "-122.49,37.98,-122.47,37.995"
EDGE_BBOX = "-122.47,37.99,-122.455,38.005"  # reaches past the store's east and north edges
# The UTM store: origin off the 10 m lattice, so only grid=source lands on its pixels.
UTM_WEST, UTM_NORTH, UTM_W, UTM_H = 543_998.0, 4_205_002.0, 300, 250


def decode(codes: np.ndarray) -> np.ndarray:
    """The AEF de-quantisation, written here: (c / 127.5)^2 * sign(c), -128 -> NaN."""
    c = codes.astype(np.float64)
    values = (c / 127.5) ** 2 * np.sign(c)
    return np.where(codes == -128, np.nan, values).astype(np.float32)


def codes_of(rng, shape) -> np.ndarray:
    data = rng.integers(-127, 128, size=shape, dtype=np.int8)
    data[..., 100:140, 100:140] = -128  # a hole of no data (every band)
    return data


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("zarr-sources")
    rng = np.random.default_rng(17)
    made = {}
    aef = field_stores.aef_mosaic(
        str(root / "aef.zarr"),
        width=AEF_W,
        height=AEF_H,
        years=AEF_YEARS,
        west=WEST,
        north=NORTH,
        res=RES,
        shard=256,
        inner=64,
    )
    made["aef"] = codes_of(rng, aef.shape)
    aef[:] = made["aef"]
    utm = field_stores.aef_mosaic(
        str(root / "utm.zarr"),
        width=UTM_W,
        height=UTM_H,
        years=(2024,),
        west=UTM_WEST,
        north=UTM_NORTH,
        res=10.0,
        crs="EPSG:32610",
        shard=256,
        inner=64,
    )
    made["utm"] = codes_of(rng, utm.shape)
    utm[:] = made["utm"]
    floats = field_stores.aef_mosaic(
        str(root / "floats.zarr"),
        width=200,
        height=180,
        years=(2024,),
        west=500_000.0,
        north=5_000_000.0,
        res=10.0,
        crs="EPSG:32631",
        bands=16,
        shard=128,
        inner=32,
        dtype="float32",
    )
    values = rng.normal(size=floats.shape).astype(np.float32)
    values[..., 10:20, 10:40] = np.nan
    floats[:] = made["floats"] = values
    codes, scales = field_stores.tessera(
        str(root / "tessera.zarr"), 31, width=150, height=140, west=500_000.0, north=5_000_000.0
    )
    made["tessera"] = (codes_of(rng, codes.shape), rng.uniform(0.5, 2.0, scales.shape))
    made["tessera"][1][0, 100:120, 5:25] = np.inf  # no data yet
    codes[:] = made["tessera"][0]
    scales[:] = made["tessera"][1].astype(np.float32)
    made["root"] = root
    return made


def run(source: str, output, bbox: str, *extra, years: str = "2024") -> int:
    return extract.run(
        [
            "--source",
            "zarr",
            "--zarr-root",
            str(source),
            f"--bbox={bbox}",
            "--years",
            years,
            "--output",
            str(output),
            "--tuning",
            "chunk_size=128",
            *extra,
            *FNAPI,
        ]
    )


def canonical(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    """(values (time, y, x, band), x centres, y centres, CRS) of a store, as any reader sees it."""
    ds = open_embeddings(str(path))
    return (
        ds["embedding"].values,
        ds["x"].values,
        ds["y"].values,
        pyproj.CRS.from_user_input(ds.rio.crs.to_wkt()),
    )


def utm_bbox(minx, miny, maxx, maxy, crs="EPSG:32610") -> str:
    """A lon/lat bbox around a box given in a UTM zone."""
    t = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return ",".join(f"{v:.6f}" for v in t.transform_bounds(minx, miny, maxx, maxy))


def projected_bounds(bbox: str, crs: str) -> tuple[float, float, float, float]:
    box = shapely.segmentize(shapely.box(*(float(v) for v in bbox.split(","))), 0.001)
    lon, lat = np.asarray(box.exterior.coords).T
    x, y = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    return x.min(), y.min(), x.max(), y.max()


def nearest_reference(x, y, crs, src, transform, src_crs):
    """The reference: each (y, x) centre's containing source pixel, exactly (every pixel
    transformed); (codes (time, y, x, band), near_edge (y, x), the same for the pixel on the other
    side of the nearest edge(s) as a list of alternatives)."""
    west, res_x, north, res_y = transform
    X, Y = np.meshgrid(x, y)
    sx, sy = pyproj.Transformer.from_crs(crs, src_crs, always_xy=True).transform(X, Y)
    fc, fr = (np.asarray(sx) - west) / res_x, (north - np.asarray(sy)) / res_y
    height, width = src.shape[-2:]

    def take(cols, rows):
        inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
        picked = src[:, :, np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)]
        picked = np.moveaxis(picked, 1, -1)  # (time, y, x, band)
        fill = np.nan if src.dtype.kind == "f" else -128
        return np.where(inside[None, :, :, None], picked, fill)

    cols, rows = np.floor(fc).astype(int), np.floor(fr).astype(int)
    expected = take(cols, rows)
    near_x = np.abs(fc - np.round(fc)) < EDGE
    near_y = np.abs(fr - np.round(fr)) < EDGE
    other_c = np.where(fc - cols < 0.5, cols - 1, cols + 1)
    other_r = np.where(fr - rows < 0.5, rows - 1, rows + 1)
    alternatives = [take(other_c, rows), take(cols, other_r), take(other_c, other_r)]
    return expected, near_x | near_y, alternatives


def assert_nearest(got, expected, near_edge, alternatives):
    same = (got == expected).all(axis=-1)  # (time, y, x)
    ok = same.copy()
    for alt in alternatives:
        ok |= near_edge[None] & (got == alt).all(axis=-1)
    assert ok.all(), f"{(~ok).sum()} pixels differ from the exact nearest look-up"
    assert same.mean() > 0.99, same.mean()  # only pixels at edges may differ


# ---------------------------------------------------------------- (b) the UTM grid


@pytest.mark.parametrize("bbox", [INSIDE_BBOX, EDGE_BBOX], ids=["inside", "past-the-edge"])
def test_geographic_store_is_reprojected_to_utm_by_the_nearest_rule(stores, tmp_path, bbox):
    out = tmp_path / "out.zarr"
    assert run(stores["root"] / "aef.zarr", out, bbox, "--dtype", "int8", years="2023,2024") == 0
    got, x, y, crs = canonical(out)
    # The grid --source cog would plan: the UTM zone of the area's centre, 10 m, snapped outward.
    lon = np.mean([float(v) for v in bbox.split(",")[::2]])
    assert crs.to_epsg() == 32600 + int((lon + 180) // 6) + 1 == 32610
    minx, miny, maxx, maxy = projected_bounds(bbox, "EPSG:32610")
    assert x[0] - 5 == np.floor(minx / 10) * 10 and x[-1] + 5 == np.ceil(maxx / 10) * 10
    assert y[0] + 5 == np.ceil(maxy / 10) * 10 and y[-1] - 5 == np.floor(miny / 10) * 10
    expected, near, alternatives = nearest_reference(
        x, y, crs, stores["aef"], (WEST, RES, NORTH, RES), "EPSG:4326"
    )
    assert_nearest(got, expected, near, alternatives)
    outside = (expected[..., 0] == -128).mean()
    assert (0.5 < outside < 0.9) if bbox == EDGE_BBOX else (0 < outside < 0.2)


def test_float32_output_is_the_de_quantised_codes(stores, tmp_path):
    out = tmp_path / "out.zarr"
    assert run(stores["root"] / "aef.zarr", out, INSIDE_BBOX) == 0
    got, x, y, crs = canonical(out)
    assert got.dtype == np.float32
    expected, near, alternatives = nearest_reference(
        x, y, crs, stores["aef"][1:], (WEST, RES, NORTH, RES), "EPSG:4326"
    )
    assert_nearest(
        np.nan_to_num(got, nan=99.0),
        np.nan_to_num(decode(expected), nan=99.0),
        near,
        [np.nan_to_num(decode(a), nan=99.0) for a in alternatives],
    )


def test_a_projected_store_with_crs_goes_to_the_planned_grid(stores, tmp_path):
    """--crs (or --tuning scale=/grid=utm) on a UTM store: the planned 10 m lattice, not the store's
    origin 2 m off it, centres 0.7 px into a source pixel; each pixel from the source pixel under its centre."""
    out = tmp_path / "out.zarr"
    bbox = utm_bbox(544_500, 4_203_000, 545_800, 4_204_500)
    assert (
        run(stores["root"] / "utm.zarr", out, bbox, "--crs", "EPSG:32610", "--dtype", "int8") == 0
    )
    got, x, y, crs = canonical(out)
    assert (x - 5) % 10 == pytest.approx(0) and (y - 5) % 10 == pytest.approx(0)
    expected, near, alternatives = nearest_reference(
        x, y, crs, stores["utm"], (UTM_WEST, 10.0, UTM_NORTH, 10.0), "EPSG:32610"
    )
    assert not near.any()  # 0.7 px in: no centre near an edge, the look-up is exact
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------- (a) the source's own grid


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_projected_store_is_copied_on_its_own_grid(stores, tmp_path, capsys, dtype):
    out = tmp_path / "out.zarr"
    bbox = utm_bbox(544_500, 4_203_000, 545_800, 4_204_500)
    capsys.readouterr()
    assert run(stores["root"] / "utm.zarr", out, bbox, "--dtype", dtype) == 0
    read = summary(capsys)["transferred"]
    got, x, y, crs = canonical(out)
    assert crs == pyproj.CRS("EPSG:32610")
    cols = (x - UTM_WEST) / 10 - 0.5
    rows = (UTM_NORTH - y) / 10 - 0.5
    np.testing.assert_allclose(cols, np.round(cols), atol=1e-9)  # the source's own pixel centres
    np.testing.assert_allclose(rows, np.round(rows), atol=1e-9)
    cols, rows = np.round(cols).astype(int), np.round(rows).astype(int)
    assert (np.diff(cols) == 1).all() and (np.diff(rows) == 1).all()
    # The smallest window of whole source pixels that covers the area.
    minx, miny, maxx, maxy = projected_bounds(bbox, "EPSG:32610")
    assert (
        cols[0] == np.floor((minx - UTM_WEST) / 10)
        and cols[-1] == np.ceil((maxx - UTM_WEST) / 10) - 1
    )
    assert (
        rows[0] == np.floor((UTM_NORTH - maxy) / 10)
        and rows[-1] == np.ceil((UTM_NORTH - miny) / 10) - 1
    )
    window = stores["utm"][:, :, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # Only the 64 px inner chunks under the window were read, each once (64 bands of int8).
    inner = (rows[-1] // 64 - rows[0] // 64 + 1) * (cols[-1] // 64 - cols[0] // 64 + 1)
    assert read.startswith(f"{inner * 64 * 64 * 64 / 1e6:.1f} MB (inner chunks decoded"), read
    want = np.moveaxis(window, 1, -1)
    if dtype == "int8":
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, want)  # the codes, bit for bit
    else:
        np.testing.assert_array_equal(got, decode(want))


def test_a_store_whose_rows_run_north_is_copied_north_up(tmp_path):
    """spatial:transform with a positive e (row 0 the southernmost): the output is north-up and
    holds the source's rows in reverse."""
    source = str(tmp_path / "south-up.zarr")
    south, res, height, width = 4_000_000.0, 10.0, 150, 120
    array = field_stores.aef_mosaic(
        source,
        width=width,
        height=height,
        years=(2024,),
        west=500_000.0,
        north=south + height * res,
        res=res,
        crs="EPSG:32631",
        shard=128,
        inner=32,
    )
    codes = codes_of(np.random.default_rng(3), array.shape)
    array[:] = codes
    group = zarr.open_group(source, mode="r+")
    group.attrs["spatial:transform"] = [res, 0.0, 500_000.0, 0.0, res, south]
    group["y"][:] = south + (np.arange(height) + 0.5) * res
    out = tmp_path / "out.zarr"
    bbox = utm_bbox(500_200, 4_000_300, 500_900, 4_001_200, "EPSG:32631")
    assert run(source, out, bbox, "--dtype", "int8") == 0
    got, x, y, _ = canonical(out)
    assert (np.diff(y) < 0).all()
    cols = np.round((x - 500_000) / res - 0.5).astype(int)
    rows = np.round((y - south) / res - 0.5).astype(int)  # stored rows, counted from the south
    np.testing.assert_array_equal(got, np.moveaxis(codes[:, :, rows][:, :, :, cols], 1, -1))


def test_float_store_with_16_bands_keeps_its_bands_and_values(stores, tmp_path):
    out = tmp_path / "out.zarr"
    bbox = utm_bbox(500_300, 4_998_400, 501_900, 4_999_900, "EPSG:32631")
    assert run(stores["root"] / "floats.zarr", out, bbox) == 0
    got, x, y, _ = canonical(out)
    ds = open_embeddings(str(out))
    assert list(ds["band"].values) == [f"A{i:02d}" for i in range(16)]
    cols = np.round((x - 500_000) / 10 - 0.5).astype(int)
    rows = np.round((5_000_000 - y) / 10 - 0.5).astype(int)
    want = np.moveaxis(stores["floats"][:, :, rows][:, :, :, cols], 1, -1)
    assert np.isnan(want).any()
    np.testing.assert_array_equal(got, want)  # NaN where NaN, every float as stored
    # the store as a whole: clipped at its edge (the area starts inside it)
    assert cols[-1] <= 199 and rows[-1] <= 179


def test_tessera_zone_group_gives_codes_times_scale_in_128_bands(stores, tmp_path):
    out = tmp_path / "out.zarr"
    bbox = utm_bbox(500_100, 4_998_700, 501_400, 4_999_950, "EPSG:32631")
    assert run(stores["root"] / "tessera.zarr" / "utm31", out, bbox) == 0
    got, x, y, _ = canonical(out)
    assert got.shape[-1] == 128
    cols = np.round((x - 500_000) / 10 - 0.5).astype(int)
    rows = np.round((5_000_000 - y) / 10 - 0.5).astype(int)
    codes, scales = stores["tessera"]
    c = np.moveaxis(codes[:, :, rows][:, :, :, cols], 1, -1).astype(np.float32)
    s = scales.astype(np.float32)[:, rows][:, :, cols]
    with np.errstate(invalid="ignore"):  # 0 * inf where the scale says no data
        want = np.where(np.isfinite(s)[..., None], c * s[..., None], np.nan)
    assert np.isnan(want).any()
    np.testing.assert_array_equal(got, want.astype(np.float32))


# ---------------------------------------------------------------- resume and the place check


def summary(capsys) -> dict[str, str]:
    return summary_values(capsys.readouterr().out)


def blank_unmarked_chunks(path: pathlib.Path, drop: list[str]) -> None:
    """As a run killed half-way leaves a store: the dropped chunks' markers gone, their pixels back
    to the fill, the store incomplete. Written through zarr on the layout the store says it has."""
    from transforms.storage import store

    layout = layouts.describe(str(path))
    array = zarr.open_group(str(path), mode="r+")[layout.array]
    fill = -128 if array.dtype == np.int8 else np.nan
    for marker in drop:
        t, row, col = (int(v) for v in marker.split("."))
        where = {"time": t, "y": slice(row, row + 128), "x": slice(col, col + 128)}
        where["band"] = slice(None)
        array[tuple(where[d] for d in layout.dims)] = fill
        (path / ".efm" / "done" / marker).unlink()
    store.set_status(str(path), "incomplete")


@pytest.fixture(scope="module")
def complete(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("complete") / "emb.zarr"
    assert (
        run(stores["root"] / "aef.zarr", out, INSIDE_BBOX, "--dtype", "int8", years="2023,2024")
        == 0
    )
    return out


def snapshot(path) -> dict[str, bytes]:
    p = pathlib.Path(path)
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}


def test_resume_fetches_only_the_missing_chunks(stores, complete, tmp_path, capsys):
    path = pathlib.Path(shutil.copytree(complete, tmp_path / "emb.zarr"))
    markers = sorted(os.listdir(path / ".efm" / "done"))
    assert len(markers) == 8  # 2 x 2 chunks, 2 years
    drop = markers[::3]
    blank_unmarked_chunks(path, drop)
    capsys.readouterr()
    argv = ("--dtype", "int8", "--resume")
    assert run(stores["root"] / "aef.zarr", path, INSIDE_BBOX, *argv, years="2023,2024") == 0
    values = summary(capsys)
    assert values["chunks already done (resume)"] == str(len(markers) - len(drop))
    assert values["chunks written"] == str(len(drop))
    assert values["requests"] == str(len(drop))
    np.testing.assert_array_equal(canonical(path)[0], canonical(complete)[0])
    assert open_embeddings(str(path)).attrs["efm_status"] == "complete"


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_resume_from_another_store_is_refused(stores, complete, tmp_path, capsys, dry_run):
    """The same store's copy at another place: another source, named with both places."""
    path = pathlib.Path(shutil.copytree(complete, tmp_path / "emb.zarr"))
    blank_unmarked_chunks(path, sorted(os.listdir(path / ".efm" / "done"))[::2])
    before = snapshot(path)
    other = shutil.copytree(stores["root"] / "aef.zarr", tmp_path / "other.zarr")
    capsys.readouterr()
    argv = ("--dtype", "int8", "--resume", *dry_run)
    assert run(other, path, INSIDE_BBOX, *argv, years="2023,2024") == 2
    out, err = capsys.readouterr()
    err = err.strip()
    assert err.startswith("efm extract: error: --zarr-root: ") and "\n" not in err, err
    assert f"was extracted from {stores['root'] / 'aef.zarr'} (metadata sha256 " in err, err
    assert f"this run reads {other} (metadata sha256 " in err, err
    assert "chunks already done" not in out
    assert snapshot(path) == before


def test_resume_with_another_area_is_refused(stores, complete, tmp_path, capsys):
    path = pathlib.Path(shutil.copytree(complete, tmp_path / "emb.zarr"))
    blank_unmarked_chunks(path, sorted(os.listdir(path / ".efm" / "done"))[::2])
    before = snapshot(path)
    shifted = "-122.488,37.98,-122.468,37.995"
    capsys.readouterr()
    argv = ("--dtype", "int8", "--resume")
    assert run(stores["root"] / "aef.zarr", path, shifted, *argv, years="2023,2024") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("efm extract: error: --resume: ") and "x origin" in err, err
    assert "\n" not in err
    assert snapshot(path) == before


def test_efm_s_own_store_is_a_source_too(complete, tmp_path):
    """A store efm wrote (whatever layout it writes) copied on its own grid: the same codes."""
    whole, wx, wy, crs = canonical(complete)
    out = tmp_path / "part.zarr"
    bbox = utm_bbox(wx[30] - 5, wy[100] - 5, wx[90] + 5, wy[40] + 5)
    assert run(complete, out, bbox, "--dtype", "int8", years="2024") == 0
    got, x, y, got_crs = canonical(out)
    assert got_crs == crs
    cols = np.round((x - wx[0]) / 10).astype(int)
    rows = np.round((wy[0] - y) / 10).astype(int)
    np.testing.assert_allclose(wx[cols], x, atol=1e-6)
    np.testing.assert_allclose(wy[rows], y, atol=1e-6)
    np.testing.assert_array_equal(got[0], whole[1][rows][:, cols])


def test_a_remote_root_on_s3_gives_the_same_store(stores, complete, tmp_path, capsys):
    pytest.importorskip("s3fs", reason="the [s3] extra")
    pytest.importorskip("moto.server", reason="moto[server], in the [test] extra")
    from tests.helpers import s3

    with s3.moto_server(str(tmp_path / "aws")):
        url = s3.upload_folder(str(stores["root"] / "aef.zarr"), "opendata", "tge/aef.zarr")
        out = tmp_path / "remote.zarr"
        capsys.readouterr()
        code = run(url, out, INSIDE_BBOX, "--dtype", "int8", years="2023,2024")
        assert code == 0, capsys.readouterr().err
    assert open_embeddings(str(out)).attrs["zarr_root"] == url
    np.testing.assert_array_equal(canonical(out)[0], canonical(complete)[0])


def test_dry_run_shows_the_plan_and_writes_nothing(stores, tmp_path, capsys):
    out = tmp_path / "out.zarr"
    assert run(stores["root"] / "aef.zarr", out, INSIDE_BBOX, "--dry-run") == 0
    values = summary(capsys)
    assert values["chunks planned"] == "4"
    assert "EPSG:4326, 64 bands, int8; grid=utm" in values["source grid"]
    assert not out.exists()


# ---------------------------------------------------------------- refusals: one line, nothing written

REFUSALS = {
    "bbox outside the store": (
        "aef.zarr",
        "-121.0,37.0,-120.9,37.1",
        (),
        "--bbox: the area lon -121.0000..-120.9000, lat 37.0000..37.1000 reaches no pixel of ",
    ),
    "bbox outside a UTM store": (
        "utm.zarr",
        "-122.3,38.1,-122.2,38.2",
        (),
        "--bbox: the area lon -122.3000..-122.2000, lat 38.1000..38.2000 reaches no pixel of ",
    ),
    "int8 from floats": (
        "floats.zarr",
        None,
        ("--dtype", "int8"),
        "--dtype: ",
    ),
    "int8 from a per-pixel scale": (
        "tessera.zarr/utm31",
        None,
        ("--dtype", "int8"),
        "--dtype: ",
    ),
    "source grid of a store in degrees": (
        "aef.zarr",
        INSIDE_BBOX,
        ("--tuning", "grid=source"),
        "--tuning: grid: ",
    ),
    "--crs with grid=source": (
        "utm.zarr",
        None,
        ("--tuning", "grid=source", "--crs", "EPSG:32610"),
        "--crs: grid=source copies the store's own grid",
    ),
    "a year the store does not hold": (
        "aef.zarr",
        INSIDE_BBOX,
        ("--years", "2019"),
        "--years: ",
    ),
    "not a Zarr store": ("nothing-here.zarr", INSIDE_BBOX, (), "--zarr-root: cannot open "),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_input_is_one_line_and_writes_nothing(stores, tmp_path, capsys, case):
    name, bbox, extra, start = REFUSALS[case]
    source = stores["root"] / name
    if bbox is None:  # inside the store, whatever it is
        ds = open_embeddings(str(source))
        t = pyproj.Transformer.from_crs(ds.rio.crs.to_wkt(), "EPSG:4326", always_xy=True)
        x, y = ds["x"].values, ds["y"].values
        bbox = ",".join(f"{v:.6f}" for v in t.transform_bounds(x[20], y[60], x[60], y[20]))
    out = tmp_path / "out.zarr"
    capsys.readouterr()
    assert run(source, out, bbox, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"efm extract: error: {start}") and "\n" not in err, err
    assert not out.exists()


def test_an_output_inside_the_source_is_refused(stores, tmp_path, capsys):
    source = pathlib.Path(shutil.copytree(stores["root"] / "aef.zarr", tmp_path / "aef.zarr"))
    before = snapshot(source)
    capsys.readouterr()
    assert run(source, source / "copy.zarr", INSIDE_BBOX) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("efm extract: error: --output: ") and "inside the --zarr-root" in err
    assert snapshot(source) == before


@pytest.mark.parametrize(
    "argv, start",
    [
        (["--source", "zarr"], "--zarr-root: --source zarr needs --zarr-root"),
        (["--source", "cog", "--cog-root", "x", "--zarr-root", "y"], "--zarr-root: only used with"),
        (["--tuning", "grid=utm"], "--tuning: grid: only used with --source zarr"),
    ],
    ids=["zarr without a root", "a root with cog", "a grid with ee"],
)
def test_zarr_flags_only_with_the_zarr_source(tmp_path, capsys, argv, start):
    out = tmp_path / "out.zarr"
    argv = [*argv, f"--bbox={INSIDE_BBOX}", "--years", "2024", "--output", str(out), *FNAPI]
    assert extract.run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"efm extract: error: {start}") and "\n" not in err, err
    assert not out.exists()
