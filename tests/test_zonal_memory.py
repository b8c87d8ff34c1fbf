"""efm zonal's memory flat in the number of polygons (issue 18): what changed keeps the answers.

- The partials of polygons crossing chunks go to a part of the chunk (one row group per polygon
  batch) and only (batch, (part, row group)) travels through the pipeline: read back and
  combined, they equal geometry_mask per polygon (tests/helpers/zonal_fields.py), every
  statistic, every year.
- A group of neighbouring polygons is rasterised in the window its bounds reach, not the whole
  chunk: the pixels each polygon owns equal geometry_mask over the whole grid.
- The id column's uniqueness (checked by a sort for numbers): missing (NaN, None) and repeated ids
  are refused, distinct ones pass.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rasterio import features

from tests.helpers.store_factory import BANDS, make_store
from tests.helpers.zonal_fields import box, check, expected, fields, whole_grid_chunk
from transforms.core.errors import InputError
from transforms.products import zonal, zonal_crossing, zonal_polygons, zonal_raster, zonal_stats


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    return make_store(str(tmp_path_factory.mktemp("zm") / "s.zarr"), seed=5)


def test_crossing_partials_through_their_part_equal_geometry_mask(s, tmp_path):
    frame = fields(s)
    geometry = np.asarray(frame.geometry.values, dtype=object)
    n = len(geometry)
    single = np.arange(n) % 3 != 1  # every 3rd polygon as if it also reached another chunk
    stats = ("mean", "std", "median")
    emitted = []
    crossing = whole_grid_chunk(s, np.arange(n), geometry, single, emit=emitted.append, group=4)
    assert len(s.years) > 1
    refs = zonal_crossing.write_partials(str(tmp_path), 7, crossing, 7)  # batches of 7 polygons
    crossed = np.flatnonzero(~single)
    assert sorted({b for b, _ in refs}) == sorted(set((crossed // 7).tolist()))
    assert len(refs) > 1 and np.bincount(crossed // 7).max() > 1  # batches of several polygons
    assert all(path == f"{tmp_path}/part-4-7.parquet" for _, (path, _) in refs)
    part = pq.ParquetFile(f"{tmp_path}/part-4-7.parquet")
    for b, (_, group) in refs:  # a row group holds its batch's polygons only
        fids = part.read_row_group(group, columns=["fid"]).column("fid").to_numpy()
        assert set((fids // 7).tolist()) == {b}
    combined = [
        zonal_stats.combine_crossing(
            zonal_crossing.read_partials([ref], len(BANDS)), s.years, stats, BANDS
        )
        for _, ref in refs
    ]
    got = pd.concat([*emitted, *combined], ignore_index=True)
    check(got.rename(columns={"fid": "polygon_id"}), expected(s, geometry))


def test_a_crossing_polygon_from_two_chunks_is_added_exactly(s, tmp_path):
    """One polygon cut in two halves, each half's partials written by its own 'chunk' (task):
    combined through the parts they equal the whole polygon's geometry_mask values."""
    whole = box(s, 10, 10, 30, 22)
    halves = [box(s, 10, 10, 20, 22), box(s, 20, 10, 30, 22)]
    stats = ("mean", "std", "median")
    refs = []
    for task, half in enumerate(halves):
        crossing = whole_grid_chunk(
            s,
            np.array([5]),
            np.array([half], dtype=object),
            np.array([False]),
            emit=lambda frame: None,
        )
        refs += zonal_crossing.write_partials(str(tmp_path), task, crossing, 10)
    assert [b for b, _ in refs] == [0, 0]
    parts = zonal_crossing.read_partials([ref for _, ref in refs], len(BANDS))
    got = zonal_stats.combine_crossing(parts, s.years, stats, BANDS)
    want = expected(s, np.array([whole], dtype=object)).assign(polygon_id=5)
    check(got.rename(columns={"fid": "polygon_id"}), want)


def test_a_group_is_rasterised_in_its_window(s, monkeypatch):
    frame = fields(s)
    geometry = np.asarray(frame.geometry.values, dtype=object)[:3]
    shapes_seen = []
    real = zonal_raster.label_images

    def watched(geoms, shape, transform, all_touched):
        shapes_seen.append(shape)
        return real(geoms, shape, transform, all_touched)

    monkeypatch.setattr(zonal_raster, "label_images", watched)
    shape = (s.grid.height, s.grid.width)
    for all_touched in (False, True):
        owners = zonal_raster.pixel_owners(geometry, shape, s.grid.transform, all_touched)
        got = {(int(p), int(o)) for pix, owner in owners for p, o in zip(pix, owner)}
        want = set()
        for i, g in enumerate(geometry):
            inside = ~features.geometry_mask(
                [g], shape, s.grid.transform, all_touched=all_touched, invert=False
            )
            want |= {(int(p), i) for p in np.flatnonzero(inside)}
        assert got == want and want
    assert shapes_seen and all(h * w < shape[0] * shape[1] for h, w in shapes_seen)


@pytest.mark.parametrize(
    "ids, unique",
    [
        (np.arange(5), True),
        (np.array([3, 1, 4, 1, 5]), False),
        (np.array([0.5, 1.5, np.nan, 2.5, 3.5]), False),
        (np.array(["a", "b", "c", "d", "e"], dtype=object), True),
        (np.array(["a", "b", None, "d", "e"], dtype=object), False),
        (np.array(["a", "b", "a", "d", "e"], dtype=object), False),
    ],
)
def test_ids_unique_or_refused(s, ids, unique):
    import geopandas

    frame = fields(s).iloc[:5].reset_index(drop=True).assign(field=ids)
    checks = zonal.checks("f.gpkg", "field", False, {"year"})
    for geometry, columns in zonal_polygons.batches(frame, "f.gpkg", size=2):
        assert isinstance(geometry, geopandas.GeoSeries)
        checks.batch(geometry, columns)
    if unique:
        checks.finish()
    else:
        with pytest.raises(InputError, match="is not a unique id: [12] rows share a value"):
            checks.finish()
    assert pa.chunked_array(checks.ids).to_pylist()[:2] == list(ids[:2])
