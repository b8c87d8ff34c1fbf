"""The COG mirror source: index look-up, windowed reads, reprojection, mosaic, fail-fast checks.

Expected values come from an independent reference (`lookup`, tests/helpers/cog_mirror.py): for
every target pixel centre, transform it exactly (pyproj) into each file's CRS, take the file pixel containing it
through the file's own geotransform (whatever its row direction), mosaic the files the way the
contract says (files in the grid's CRS first, then the first with data), then de-quantise.
No GDAL warping, no window arithmetic: nothing shared with transforms/sources/cog*.py but the files.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from pipelines import extract
from sample_data import (
    generate as sample_data,
)
from tests.helpers.cog_mirror import (
    SPEC,
    YEARS,
    assert_reads_match_files,
    bbox_arg,
    check_nearest,
    fetch,
    files_of,
    files_touching,
    grid_of,
    make_source,
    reference_grid,
    sample_data_aoi,
)
from tests.helpers.runners import FNAPI
from transforms.core import quantize
from transforms.core.errors import InputError
from transforms.core.grid import Window
from transforms.sources import cog_index, cog_paths

# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return sample_data.generate(str(tmp_path_factory.mktemp("sample")), SPEC)


@pytest.fixture(scope="module")
def mirror_top_down(tmp_path_factory):
    return sample_data.generate(
        str(tmp_path_factory.mktemp("sample-top-down")),
        sample_data.SampleSpec(**sample_data.SMALL, bottom_up=False),
    )


# ---------------------------------------------------------------------------------------
# Reading through the index equals de-quantising the files directly
# ---------------------------------------------------------------------------------------


def test_chunk_inside_one_file(mirror):
    grid = reference_grid(mirror)
    window = Window(10, 10, 100, 100)
    source = make_source(mirror.mirror, grid, "int8")
    assert len(files_touching(source, window, 2022, native_only=True)) == 1
    counts = assert_reads_match_files(mirror.mirror, grid, window, 2022)
    assert counts["differ_at_edges"] == 0 and counts["foreign"] == 0


def test_chunk_across_two_files(mirror):
    grid = reference_grid(mirror)
    window = Window(60, 100, 40, 60)  # straddles the tile edge at column 128
    assert (
        len(
            files_touching(make_source(mirror.mirror, grid, "int8"), window, 2023, native_only=True)
        )
        == 2
    )
    counts = assert_reads_match_files(mirror.mirror, grid, window, 2023)
    assert counts["differ_at_edges"] == 0 and counts["foreign"] == 0


def test_chunk_across_two_utm_zones_is_reprojected_nearest(mirror):
    grid = reference_grid(mirror)
    window = Window(40, 130, 150, 150)  # the zone boundary runs near column 192
    source = make_source(mirror.mirror, grid, "int8")
    assert {f.crs for f in source.files if f.path in files_touching(source, window, 2022)} == {
        "EPSG:32610",
        "EPSG:32611",
    }
    counts = assert_reads_match_files(mirror.mirror, grid, window, 2022)
    native = counts["pixels"] - counts["foreign"] - counts["nodata"]
    assert counts["foreign"] > 0.2 * counts["pixels"] and native > 0.2 * counts["pixels"]
    assert (
        counts["differ_at_edges"] < 0.005 * counts["foreign"]
    )  # only centres within 1/100 px of an edge


def test_chunk_over_nodata(mirror):
    grid = reference_grid(mirror)
    whole = Window(0, 0, grid.height, grid.width)
    codes = fetch(make_source(mirror.mirror, grid, "int8"), whole, 2023)
    nodata = codes[..., 0] == -128
    # the year's no-data blobs plus the grid's edge beyond zone B's files: pick a window with both
    rows, cols = np.nonzero(nodata[8:-8, 8:-8])
    r, c = rows[len(rows) // 2] + 8, cols[len(cols) // 2] + 8
    window = Window(max(0, r - 40), max(0, c - 40), 80, 80)
    counts = assert_reads_match_files(mirror.mirror, grid, window, 2023)
    assert 0 < counts["nodata"] < counts["pixels"]
    values = fetch(make_source(mirror.mirror, grid, "float32"), window, 2023)
    missing = np.isnan(values)
    assert (missing.all(axis=-1) == missing.any(axis=-1)).all()  # no-data in all bands or none
    assert missing[..., 0].sum() == counts["nodata"]


def test_whole_grid_matches_and_vectors_are_unit_length(mirror):
    grid = reference_grid(mirror)
    whole = Window(0, 0, grid.height, grid.width)
    for year in YEARS:
        source = make_source(mirror.mirror, grid, "int8")
        check_nearest(fetch(source, whole, year), grid, whole, files_of(source, year))
    values = fetch(make_source(mirror.mirror, grid, "float32"), whole, 2022)
    norms = np.linalg.norm(values.reshape(-1, 64).astype(np.float64), axis=-1)
    norms = norms[~np.isnan(norms)]
    assert abs(np.median(norms) - 1.0) < 0.01


def test_generated_mirror_is_laid_out_like_the_public_one(mirror):
    for path in mirror.files:
        with rasterio.open(path) as ds:
            assert ds.transform.e > 0  # rows bottom-up, like the public files
            assert (
                ds.interleaving == rasterio.enums.Interleaving.band
            )  # planar-separate: a block holds one band
            assert ds.dtypes[0] == "int8" and ds.nodata == -128 and ds.count == 64
            assert ds.profile["compress"] == "deflate"
            assert set(ds.block_shapes) == {(min(1024, ds.height), min(1024, ds.width))}


def test_bottom_up_cog_reads_the_right_way_up(mirror, mirror_top_down):
    with rasterio.open([p for p in mirror_top_down.files if "/2022/" in p][0]) as ds:
        assert ds.transform.e < 0
    grid = reference_grid(mirror)
    assert reference_grid(mirror_top_down) == grid
    whole = Window(0, 0, grid.height, grid.width)
    for year in YEARS:
        top_down = fetch(make_source(mirror_top_down.mirror, grid, "int8"), whole, year)
        bottom_up = fetch(make_source(mirror.mirror, grid, "int8"), whole, year)
        np.testing.assert_array_equal(bottom_up, top_down)
    # and against the reference, which only follows each file's own geotransform
    window = Window(30, 120, 120, 140)
    assert_reads_match_files(mirror.mirror, grid, window, 2022)
    assert_reads_match_files(mirror_top_down.mirror, grid, window, 2022)


def test_index_formats_agree(mirror, tmp_path):
    frames = {}
    for name in cog_index.INDEX_NAMES:
        root = tmp_path / name.split(".")[-1]
        root.mkdir()
        os.symlink(os.path.join(mirror.mirror, name), root / name)
        for year in YEARS:
            os.symlink(os.path.join(mirror.mirror, str(year)), root / str(year))
        frame = cog_index.read_index(str(root))
        assert frame.attrs["index_path"].endswith(name)
        frames[name] = frame
    base = frames["aef_index.parquet"]
    for frame in frames.values():
        assert [p.split("/")[-3:] for p in frame["path"]] == [
            p.split("/")[-3:] for p in base["path"]
        ]
        assert list(frame["year"]) == list(base["year"]) and list(frame["crs"]) == list(base["crs"])
        np.testing.assert_allclose(
            frame[["west", "south", "east", "north"]].to_numpy(),
            base[["west", "south", "east", "north"]].to_numpy(),
        )
        assert all(
            a.hausdorff_distance(b) < 1e-7 for a, b in zip(frame["footprint"], base["footprint"])
        )


def test_index_paths_resolve_under_the_root():
    listed = "gs://alphaearth_foundations/satellite_embedding/v1/annual/2023/10N/xabc-0000000000-0000008192.tiff"
    assert (
        cog_paths.resolve_path("gs://copy/aef", listed)
        == "gs://copy/aef/2023/10N/xabc-0000000000-0000008192.tiff"
    )
    assert (
        cog_paths.resolve_path("/data/mirror/", "2023/10N/x.tiff") == "/data/mirror/2023/10N/x.tiff"
    )
    assert cog_paths.zone_crs("10N") == "EPSG:32610" and cog_paths.zone_crs("33S") == "EPSG:32733"
    with pytest.raises(InputError, match="--cog-root"):
        cog_paths.resolve_path("/data", "s3://elsewhere/file.tiff")


def test_source_pickles_without_open_files(mirror):
    import pickle

    grid = reference_grid(mirror)
    source = make_source(mirror.mirror, grid, "int8")
    window = Window(0, 0, 64, 64)
    first = fetch(source, window, 2022)
    clone = pickle.loads(pickle.dumps(source))
    assert not hasattr(clone, "_handles")
    assert len(pickle.dumps(source)) < 20_000  # files selected for the grid, not the index
    clone.setup()
    np.testing.assert_array_equal(fetch(clone, window, 2022), first)


def test_file_vanishing_after_the_check_is_a_clear_error(mirror, tmp_path):
    grid = reference_grid(mirror)
    source = make_source(mirror.mirror, grid, "int8")
    gone = str(tmp_path / "2022" / "10N" / "gone.tiff")
    source.files = (cog_index.CogFile(gone, 2022, "EPSG:32610", source.files[0].bounds),)
    source.setup()
    with pytest.raises(FileNotFoundError, match="gone.tiff"):
        fetch(source, Window(0, 0, 64, 64), 2022)


# ---------------------------------------------------------------------------------------
# gs:// through the GCS emulator
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gs_mirror(mirror, gcs):
    bucket = gcs.make_bucket()
    gcs.fs.put(mirror.mirror + "/", f"{bucket}/satellite_embedding/v1/annual", recursive=True)
    return f"gs://{bucket}/satellite_embedding/v1/annual"


def test_gs_root_reads_the_same_as_local(mirror, gs_mirror):
    grid = reference_grid(mirror)
    aoi = sample_data_aoi(mirror)
    index = cog_index.check_cog_root(gs_mirror, list(YEARS), aoi)
    assert all(p.startswith(gs_mirror + "/") for p in index["path"])
    window = Window(40, 130, 150, 150)  # both zones, reprojection included
    for dtype in ("int8", "float32"):
        remote = make_source(gs_mirror, grid, dtype)
        local = make_source(mirror.mirror, grid, dtype)
        np.testing.assert_array_equal(fetch(remote, window, 2022), fetch(local, window, 2022))


def test_gs_file_vanishing_after_the_check_is_a_clear_error(mirror, gs_mirror):
    grid = reference_grid(mirror)
    source = make_source(gs_mirror, grid, "int8")
    source.files = (
        cog_index.CogFile(
            f"{gs_mirror}/2022/10N/gone.tiff", 2022, "EPSG:32610", source.files[0].bounds
        ),
    )
    source.setup()
    with pytest.raises(FileNotFoundError, match="gone.tiff"):
        fetch(source, Window(0, 0, 64, 64), 2022)


def test_extract_from_gs_root(mirror, gs_mirror, gcs_bucket):
    output = f"{gcs_bucket}/cog.zarr"
    rc = extract.run(
        [
            "--source",
            "cog",
            "--cog-root",
            gs_mirror,
            f"--bbox={bbox_arg(mirror)}",
            "--crs",
            "EPSG:32610",
            "--years",
            "2022",
            "--output",
            output,
            "--tuning",
            "chunk_size=128",
            "--dtype",
            "int8",
            "--tuning",
            "max_concurrent_requests=4",
            *FNAPI,
        ]
    )
    assert rc == 0
    ds = xr.open_zarr(output, consolidated=True, mask_and_scale=False).transpose(
        "time", "y", "x", "band"
    )
    assert ds.attrs["efm_status"] == "complete" and ds.attrs["source"] == f"cog:{gs_mirror}"
    assert ds.attrs["resampling"] == "nearest"
    got = ds["embedding"].isel(time=0).values
    grid = grid_of(ds)
    source = make_source(mirror.mirror, grid, "int8", years=(2022,))
    check_nearest(got, grid, Window(0, 0, grid.height, grid.width), files_of(source, 2022))


# ---------------------------------------------------------------------------------------
# efm extract --source cog
# ---------------------------------------------------------------------------------------


def run_extract(data, output, *extra):
    return extract.run(
        [
            "--source",
            "cog",
            "--cog-root",
            data.mirror,
            f"--bbox={bbox_arg(data)}",
            "--crs",
            "EPSG:32610",
            "--years",
            "2022,2023",
            "--output",
            str(output),
            "--tuning",
            "chunk_size=128",
            "--tuning",
            "max_concurrent_requests=4",
            *extra,
            *FNAPI,
        ]
    )


def test_extract_float32_store(mirror, tmp_path):
    output = tmp_path / "float.zarr"
    assert run_extract(mirror, output) == 0
    ds = xr.open_zarr(str(output), consolidated=True).transpose("time", "y", "x", "band")
    assert ds["embedding"].dtype == np.float32 and ds.attrs["efm_status"] == "complete"
    assert ds.attrs["source"] == f"cog:{mirror.mirror}" and ds.attrs["resampling"] == "nearest"
    assert ds.rio.crs.to_epsg() == 32610
    grid = grid_of(ds)
    source = make_source(mirror.mirror, grid, "int8")
    for t, year in enumerate(YEARS):
        values = ds["embedding"].isel(time=t).values
        codes = quantize.quantize(values)  # lossless: the store holds de-quantised codes
        np.testing.assert_array_equal(quantize.dequantize(codes), values)
        check_nearest(codes, grid, Window(0, 0, grid.height, grid.width), files_of(source, year))


def test_extract_resume_finishes_the_store(mirror, tmp_path):
    import shutil

    output = tmp_path / "resume.zarr"
    assert run_extract(mirror, output, "--dtype", "int8") == 0
    complete = (
        xr.open_zarr(str(output), consolidated=True, mask_and_scale=False)
        .transpose("time", "y", "x", "band")["embedding"]
        .values
    )
    markers = sorted(os.listdir(output / ".efm" / "done"))
    os.remove(output / ".efm" / "done" / markers[0])  # one chunk "not written"
    t, r, c = (int(v) for v in markers[0].split("."))
    chunk_dir = output / "embedding"
    for name in os.listdir(chunk_dir):
        if name.startswith(f"{t}.{r // 128}.{c // 128}."):
            os.remove(chunk_dir / name)
    assert run_extract(mirror, output, "--dtype", "int8", "--resume") == 0
    again = (
        xr.open_zarr(str(output), consolidated=True, mask_and_scale=False)
        .transpose("time", "y", "x", "band")["embedding"]
        .values
    )
    np.testing.assert_array_equal(again, complete)
    shutil.rmtree(output)


# ---------------------------------------------------------------------------------------
# Fail fast with a clear message, before any store is written
# ---------------------------------------------------------------------------------------


def assert_refused(capsys, output, rc, *fragments):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert not os.path.exists(output)


def test_missing_index_fails_fast(mirror, tmp_path, capsys):
    root = tmp_path / "no-index"
    (root / "2022" / "10N").mkdir(parents=True)
    output = tmp_path / "out.zarr"
    rc = extract.run(
        [
            "--source",
            "cog",
            "--cog-root",
            str(root),
            f"--bbox={bbox_arg(mirror)}",
            "--years",
            "2022",
            "--output",
            str(output),
            *FNAPI,
        ]
    )
    assert_refused(capsys, output, rc, "--cog-root", "no index table", "aef_index.parquet")


def test_missing_root_fails_fast(mirror, tmp_path, capsys):
    output = tmp_path / "out.zarr"
    rc = extract.run(
        [
            "--source",
            "cog",
            "--cog-root",
            str(tmp_path / "nowhere"),
            f"--bbox={bbox_arg(mirror)}",
            "--years",
            "2022",
            "--output",
            str(output),
            *FNAPI,
        ]
    )
    assert_refused(capsys, output, rc, "--cog-root", "no index table")


def test_years_without_files_fail_fast(mirror, tmp_path, capsys):
    output = tmp_path / "out.zarr"
    rc = extract.run(
        [
            "--source",
            "cog",
            "--cog-root",
            mirror.mirror,
            f"--bbox={bbox_arg(mirror)}",
            "--years",
            "2019,2022",
            "--output",
            str(output),
            *FNAPI,
        ]
    )
    assert_refused(capsys, output, rc, "--years", "no files for 2019", "2022, 2023")


def test_area_outside_coverage_fails_fast(mirror, tmp_path, capsys):
    output = tmp_path / "out.zarr"
    rc = extract.run(
        [
            "--source",
            "cog",
            "--cog-root",
            mirror.mirror,
            "--bbox=-121.5,38.0,-121.4,38.1",
            "--years",
            "2022",
            "--output",
            str(output),
            *FNAPI,
        ]
    )
    assert_refused(capsys, output, rc, "--bbox/--aoi", "outside the mirror's coverage for 2022")


def test_index_listing_absent_files_fails_fast(mirror, tmp_path, capsys):
    import shutil

    root = tmp_path / "index-only"
    root.mkdir()
    shutil.copy(os.path.join(mirror.mirror, "aef_index.csv"), root)
    output = tmp_path / "out.zarr"
    rc = extract.run(
        [
            "--source",
            "cog",
            "--cog-root",
            str(root),
            f"--bbox={bbox_arg(mirror)}",
            "--years",
            "2022",
            "--output",
            str(output),
            *FNAPI,
        ]
    )
    assert_refused(capsys, output, rc, "--cog-root", "missing", "mirror's root")


def test_cog_flags_must_go_together(mirror, tmp_path, capsys):
    output = tmp_path / "out.zarr"
    rc = extract.run(
        [
            "--source",
            "cog",
            f"--bbox={bbox_arg(mirror)}",
            "--years",
            "2022",
            "--output",
            str(output),
            *FNAPI,
        ]
    )
    assert_refused(capsys, output, rc, "--cog-root", "--source cog needs --cog-root")
    rc = extract.run(
        [
            "--cog-root",
            mirror.mirror,
            f"--bbox={bbox_arg(mirror)}",
            "--years",
            "2022",
            "--output",
            str(output),
            *FNAPI,
        ]
    )
    assert_refused(capsys, output, rc, "--cog-root", "only used with --source cog")
