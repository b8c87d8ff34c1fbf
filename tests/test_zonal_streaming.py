"""efm zonal's memory bound and its Python API on collections.

- The driver reads, checks and indexes the polygons a batch at a time and the table is written a
  batch at a time: with batches of 4 polygons (many batches, invalid rows skipped in several of
  them) the table equals the direct computation (rasterio.features.geometry_mask per polygon).
- The chunk's codes are read band-first as stored: the same values as zarr-python's own read.
- `efm.zonal` and `efm.sample` on a collection (its path or the EmbeddingCollection) read each
  place once, from the member whose cell holds it: equal to geometry_mask per polygon and member
  with the centre rule computed with pyproj (tests/helpers/collections.py), and to direct indexing
  of the member's array for points; `efm.zonal` equals `efm zonal` on the same collection.
"""

from __future__ import annotations

import json

import geopandas
import numpy as np
import pandas as pd
import pytest
import shapely
import zarr

import efm
from pipelines import zonal as zonal_cli
from tests.helpers.collection_seam import (
    CRS,
    MEMBER,
    cell_of,
    expected_zonal,
    pixel_of,
    points_near_seam,
    seam_polygons,
    write_points,
)
from tests.helpers.collections import make_collection
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import BANDS, make_store
from tests.helpers.zonal_fields import check, expected, fields, whole_grid_chunk, xy
from transforms.products import zonal_polygons
from transforms.storage import readers


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    return make_store(str(tmp_path_factory.mktemp("zs") / "s.zarr"), seed=3)


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    return make_collection(str(tmp_path_factory.mktemp("zc") / "emb"), chunk_size=64)


def test_batches_of_polygons_give_the_whole_table(s, tmp_path, monkeypatch):
    frame = fields(s)
    bowtie = shapely.Polygon([xy(s, 0, 0), xy(s, 10, 10), xy(s, 10, 0), xy(s, 0, 10)])
    geoms = list(frame.geometry)
    geoms[2], geoms[9] = bowtie, shapely.Polygon()  # skipped, in two different batches
    frame = frame.set_geometry(geoms)
    frame.to_file(tmp_path / "f.gpkg")
    monkeypatch.setattr(zonal_polygons, "BATCH", 4)
    out = tmp_path / "o.parquet"
    argv = ["--embeddings", s.path, "--polygons", tmp_path / "f.gpkg", "--output", out]
    assert (
        zonal_cli.run([*map(str, argv), "--stat", "mean,std,median", "--skip-invalid", *FNAPI]) == 0
    )
    table = pd.read_parquet(out)
    keep = [i for i in range(len(geoms)) if i not in (2, 9)]
    want = expected(s, [geoms[i] for i in keep])
    want["polygon_id"] = np.asarray(keep)[want["polygon_id"]]  # the row number in the file
    check(table, want)
    assert list(table["name"]) == [frame["name"][i] for i in keep for _ in s.years]
    assert not (tmp_path / "o.parquet.parts").exists()


def test_band_first_read_equals_zarr(s):
    info = readers.store_info(s.path)
    reader = readers.StoreReader(s.path)
    stored = zarr.open_group(s.path, mode="r")["embedding"]  # (time, band, y, x)
    for rows, cols in [(slice(0, 128), slice(0, 128)), (slice(100, 300), slice(5, 260))]:
        got = reader.read_band_first(1, rows, cols)
        np.testing.assert_array_equal(got, stored[1, :, rows, cols])
    assert info.bands == tuple(BANDS)


@pytest.mark.parametrize("opened", [False, True])
def test_api_zonal_on_a_collection(coll, opened):
    geoms = seam_polygons()
    frame = geopandas.GeoDataFrame({"name": list("abcde")}, geometry=geoms, crs="EPSG:4326")
    source = efm.open_embeddings(coll.root) if opened else coll.root
    table = efm.zonal(source, frame, stats=["mean", "std", "median"])
    assert len(table) == len(geoms) * 2
    want = expected_zonal(coll, geoms)
    for _, row in table.iterrows():
        n, mean, std, median = want[row["polygon_id"], row["year"] - 2021]
        assert row["pixel_count"] == n and n > 0
        np.testing.assert_allclose(row[list(BANDS)].to_numpy(float), mean, atol=1e-5)
        np.testing.assert_allclose(row[[f"{b}_std" for b in BANDS]].to_numpy(float), std, atol=1e-5)
        np.testing.assert_allclose(
            row[[f"{b}_median" for b in BANDS]].to_numpy(float), median, atol=1e-5
        )
    assert table.attrs["efm"]["members"][0]["cell"] == "31N"


def test_api_zonal_on_a_collection_equals_the_cli(coll, tmp_path):
    path = tmp_path / "fields.gpkg"
    geopandas.GeoDataFrame(
        {"name": list("abcde")}, geometry=seam_polygons(), crs="EPSG:4326"
    ).to_file(path)
    out = tmp_path / "z.parquet"
    argv = ["--embeddings", coll.root, "--polygons", path, "--output", out, "--stat", "mean,std"]
    assert zonal_cli.run([*map(str, argv), *FNAPI]) == 0
    cli = pd.read_parquet(out)
    api = efm.zonal(coll.root, str(path), stats="mean,std")
    pd.testing.assert_frame_equal(api.reset_index(drop=True), cli, check_dtype=False)


def test_api_sample_on_a_collection(coll, tmp_path):
    pts = points_near_seam(coll, 10, seed=3)
    path = write_points(
        tmp_path / "pts.geojson", pts + [(9.5, 45.01)], list("ab" * 6)[: len(pts) + 1]
    )
    for source in (coll.root, efm.open_embeddings(coll.root)):
        table = efm.sample(source, path, label_column="kind")
        assert len(table) == 2 * len(pts)  # the point beyond every store is dropped
        for _, row in table.iterrows():
            lon, lat = pts[row["point_id"]]
            cell = cell_of(lon)
            r, c = pixel_of(coll, cell, lon, lat)
            assert row["member"] == MEMBER[cell] and row["crs"] == CRS[cell]
            assert (row["pixel_y"], row["pixel_x"]) == (r, c)
            np.testing.assert_allclose(
                row[list(BANDS)].to_numpy(np.float32),
                coll.members[cell].values[row["year"] - 2021, r, c],
                atol=1e-6,
            )


def test_count_summary_reads_the_table_a_row_group_at_a_time(tmp_path):
    """The run summary's counts (rows, rows without a pixel) come from the pixel_count column
    read row group by row group: equal to pandas reading the whole table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.products import zonal_table

    rng = np.random.default_rng(3)
    counts = rng.integers(0, 3, 1000)
    path = tmp_path / "t.parquet"
    table = pa.table(
        {"polygon_id": np.arange(1000), "pixel_count": counts, "A00": rng.random(1000)}
    )
    pq.write_table(table, path, row_group_size=300)
    assert pq.ParquetFile(path).num_row_groups == 4
    whole = pd.read_parquet(path)
    assert zonal_table.count_summary(str(path)) == (len(whole), int((whole.pixel_count == 0).sum()))


def test_a_chunks_polygons_in_groups_equal_geometry_mask(s, monkeypatch):
    """One chunk's polygons (the whole grid as one window: holes, overlaps, a multipolygon) taken
    3 at a time: every group rasterised on its own (the groups seen: more than one, none larger
    than 3), the polygons finished here and the crossing ones' partials (combined as the
    pipeline does) equal geometry_mask per polygon, for every statistic."""
    from transforms.products import zonal_raster, zonal_stats

    frame = fields(s)
    geometry = np.asarray(frame.geometry.values, dtype=object)
    n = len(geometry)
    single = np.arange(n) % 4 != 1  # every 4th polygon as if it also reached another chunk
    seen = []
    real = zonal_raster.pixel_owners

    def watched(geoms, *args, **kwargs):
        seen.append(len(geoms))
        return real(geoms, *args, **kwargs)

    monkeypatch.setattr(zonal_raster, "pixel_owners", watched)
    stats = ("mean", "std", "median")
    emitted = []
    crossing = whole_grid_chunk(
        s, np.arange(n) + 1000, geometry, single, emit=emitted.append, group=3
    )
    assert len(seen) == -(-n // 3) > 1 and max(seen) == 3
    assert len(emitted) == len(seen) * len(s.years)  # a frame per group and year
    crossed = zonal_stats.combine_crossing([crossing], s.years, stats, BANDS)
    assert sorted(crossed["fid"].unique() - 1000) == np.flatnonzero(~single).tolist()
    got = pd.concat([*emitted, crossed], ignore_index=True)
    got = got.rename(columns={"fid": "polygon_id"}).assign(polygon_id=lambda t: t.polygon_id - 1000)
    check(got, expected(s, geometry))


def test_groups_of_four_polygons_give_the_whole_table(s, tmp_path, monkeypatch):
    """`efm zonal` with chunks' polygons taken 4 at a time and batches of 3 polygons (a group's
    rows span two batches or more; a chunk's part holds several row groups per batch): the table
    equals geometry_mask per polygon."""
    from transforms.products import zonal_stats

    frame = fields(s)
    frame.to_file(tmp_path / "f.gpkg")
    monkeypatch.setattr(zonal_stats, "GROUP", 4)
    monkeypatch.setattr(zonal_polygons, "BATCH", 3)
    out = tmp_path / "o.parquet"
    argv = ["--embeddings", s.path, "--polygons", tmp_path / "f.gpkg", "--output", out]
    assert zonal_cli.run([*map(str, argv), "--stat", "mean,std,median", *FNAPI]) == 0
    table = pd.read_parquet(out)
    check(table, expected(s, frame.geometry))
    assert list(table["name"]) == [name for name in frame["name"] for _ in s.years]


def test_a_chunk_part_lists_the_batch_of_each_row_group(tmp_path):
    """A chunk's result frames written a piece at a time: read back with pyarrow, each row group
    holds the rows of the one polygon batch (fid // batch) listed for it, and together the rows
    written; a failure leaves no file, nor does a chunk without any row."""
    import pyarrow.parquet as pq

    from transforms.products import zonal_table

    pieces = [
        pd.DataFrame({"fid": f, "year": np.int16(2021), "pixel_count": f * 2, "A00": f / 3.0})
        for f in (np.array([0, 1, 3, 4, 5]), np.array([6, 9]), np.array([11, 12, 13, 14]))
    ]
    path = tmp_path / "part-1-7.parquet"
    with zonal_table.ChunkPart(str(path), 5) as part:
        for piece in pieces:
            part.write(piece)
    pf = pq.ParquetFile(path)
    listed = json.loads(pf.metadata.metadata[b"batches"])
    assert listed == [0, 1, 1, 2] and pf.num_row_groups == 4
    for g, b in enumerate(listed):
        fids = pf.read_row_group(g).column("fid").to_numpy()
        assert len(fids) and set(fids // 5) == {b}
    whole = pf.read().to_pandas()
    pd.testing.assert_frame_equal(whole, pd.concat(pieces, ignore_index=True))
    assert part.rows == 11
    with pytest.raises(RuntimeError):
        with zonal_table.ChunkPart(str(tmp_path / "part-1-8.parquet"), 5) as part:
            part.write(pieces[0])
            raise RuntimeError("the chunk failed")
    with zonal_table.ChunkPart(str(tmp_path / "part-1-9.parquet"), 5):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-1-7.parquet"]
