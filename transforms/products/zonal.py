"""Embeddings per polygon (`efm zonal`, `efm.zonal`): a statistic of each band over each
polygon's pixels, per year.

The rule: a pixel belongs to a polygon when its CENTRE falls inside the polygon (GDAL's
rasterisation rule, the same as `rasterio.features.geometry_mask`); with `all_touched`, every
pixel the polygon touches (rasterio's `all_touched=True`). Pixels with no data (NaN in any band)
are left out; a polygon with no pixel left has `pixel_count` 0 and NaN statistics. `std` is the
population standard deviation (ddof=0); `median` is exact (the middle value, or the mean of the
two middle values).

    driver: polygons -> store CRS -> the chunks each one's bounds touch (vectorised) -> one
            Parquet of WKB polygons per chunk (parts folder)
    ZonalChunks: per chunk, read each year once, rasterise the chunk's polygons into label images
            (int ids; overlapping polygons go to separate layers), then sums, sums of squares and
            counts per polygon (np.bincount per band, over the pixels inside polygons only).
            A polygon whose pixels all lie in this chunk is finished here (median too) -> a part.
            A polygon crossing chunks emits its partial (sums, counts, and for a median its pixel
            values) keyed by polygon -> GroupByKey -> combined exactly -> parts, in buckets.
    AssembleZonal: the parts + the polygons' ids and columns -> the table (one row per polygon
            and year, polygons without pixels included).

Memory per worker is bounded by a chunk (and, for a median, by one polygon's pixels), never by
the number of polygons: no worker sees more than its chunk's polygons.
"""

from __future__ import annotations

import dataclasses
import io
import json

import apache_beam as beam
import fsspec
import numpy as np
import pandas as pd

from transforms.core import atomic, parquet
from transforms.core.errors import InputError, first_line
from transforms.core.metrics import METRICS_NAMESPACE
from transforms.storage.outputs import TABLE_METADATA_KEY
from transforms.storage.readers import StoreInfo, StoreReader, valid_mask
from transforms.storage.store import as_float

STATS = ("mean", "median", "std", "count")
COUNT_COLUMN = "pixel_count"
ID_COLUMN = "polygon_id"  # the id column when no --id-column is named: the row number in the file
BLOCK = 262_144  # pixels gathered at a time for the sums (bounds the temporaries: 64 MB)
BUCKET = 20_000  # crossing polygons per output part
# parts folder (transforms/storage/outputs.py accepts part-<int>-<int>.parquet only)
POLYGONS_PART, CHUNK_PART, CROSSING_PART, ATTRIBUTES_PART = 0, 1, 2, 3


def part_name(parts_dir: str, kind: int, index: int) -> str:
    return f"{parts_dir}/part-{kind}-{index}.parquet"


def parse_stats(text, flag: str = "--stat") -> tuple[str, ...]:
    """ "mean,median" (or a list) -> ("mean", "median"), in the order given; `count` is always in
    the table (as pixel_count) and may be named."""
    names = [s.strip().lower() for s in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in STATS]
    if unknown or not names:
        raise InputError(
            flag,
            f"unknown statistic {unknown[0]!r}; choose from {', '.join(STATS)} (e.g. mean,std)"
            if unknown
            else f"name at least one statistic: {', '.join(STATS)}",
        )
    return tuple(dict.fromkeys(names))


def stat_columns(stats, bands) -> dict[str, list[str]]:
    """The band columns of each statistic: the mean keeps the band names (A00…), so that
    `efm train` and `efm predict --polygons` read it as the embedding; others get a suffix."""
    return {s: [b if s == "mean" else f"{b}_{s}" for b in bands] for s in stats if s != "count"}


# ---------------------------------------------------------------- polygons (driver)


@dataclasses.dataclass
class Polygons:
    """Valid polygons in the store's CRS (shapely array) and their table columns (id first)."""

    geometry: np.ndarray
    columns: pd.DataFrame  # id column first, then the file's other columns; row i = polygon i
    id_column: str
    crs: str  # the file's CRS
    skipped: int = 0  # empty / invalid geometries skipped (--skip-invalid)


def read_polygons(path: str, flag: str = "--polygons"):
    """A polygon file (GeoPackage, GeoJSON, Shapefile, GeoParquet, any OGR format) -> GeoDataFrame."""
    import geopandas

    try:
        if path.lower().endswith((".parquet", ".geoparquet", ".pq")):
            return geopandas.read_parquet(path)
        return geopandas.read_file(path)
    except FileNotFoundError:
        raise InputError(flag, f"{path} does not exist") from None
    except Exception as exc:
        text = first_line(exc)
        if "No such file" in text or "does not exist" in text:
            raise InputError(flag, f"{path} does not exist") from None
        raise InputError(
            flag,
            f"cannot read {path} as polygons (GeoPackage, GeoJSON, Shapefile, GeoParquet): {text}",
        ) from None


def check_polygons(
    frame,
    info_crs: str,
    name: str,
    *,
    id_column: str | None = None,
    skip_invalid: bool = False,
    reserved=(),
    flag: str = "--polygons",
    id_flag: str = "--id-column",
    skip_flag: str = "--skip-invalid",
) -> Polygons:
    """Check a GeoDataFrame of polygons (CRS, geometries, id) and reproject it to `info_crs`."""
    import shapely

    if not hasattr(frame, "geometry"):
        raise InputError(
            flag, f"{name} has no geometry column; give a polygon file or GeoDataFrame"
        )
    if len(frame) == 0:
        raise InputError(flag, f"{name} holds no polygon")
    if frame.crs is None:
        raise InputError(
            flag,
            f"{name} has no CRS; set it (e.g. `ogr2ogr -a_srs EPSG:4326 fixed.gpkg {name}`, "
            "or GeoDataFrame.set_crs)",
        )
    if id_column is not None:
        if id_column not in frame.columns or id_column == frame.geometry.name:
            columns = [c for c in frame.columns if c != frame.geometry.name]
            raise InputError(
                id_flag,
                f"{name} has no column {id_column!r}; its columns are {', '.join(map(str, columns))}",
            )
        ids = frame[id_column]
        duplicated = ids[ids.duplicated(keep=False) | ids.isna()]
        if len(duplicated):
            raise InputError(
                id_flag,
                f"column {id_column!r} of {name} is not a unique id: {len(duplicated)} rows share "
                f"a value or have none (first: {duplicated.iloc[0]!r}); name a unique column",
            )
    geometry = frame.geometry.values
    arr = np.asarray(geometry, dtype=object)
    missing = np.array([g is None for g in arr])
    kinds = set(shapely.get_type_id(arr[~missing]).tolist())
    if kinds - {3, 6}:  # Polygon, MultiPolygon
        other = sorted(set(shapely.geometry.base.GEOMETRY_TYPES[k] for k in kinds - {3, 6}))
        raise InputError(flag, f"{name} must hold polygons, found {', '.join(other)}")
    bad = missing.copy()
    bad[~missing] = shapely.is_empty(arr[~missing]) | ~shapely.is_valid(arr[~missing])
    if bad.any() and not skip_invalid:
        first = int(np.flatnonzero(bad)[0])
        reason = (
            "no geometry"
            if missing[first]
            else "empty"
            if shapely.is_empty(arr[first])
            else shapely.is_valid_reason(arr[first])
        )
        raise InputError(
            flag,
            f"{int(bad.sum())} of {len(arr)} geometries of {name} are empty or invalid (first: row "
            f"{first}, {reason}); repair them (e.g. shapely.make_valid) or pass {skip_flag} to skip them",
        )
    columns = frame.drop(columns=[frame.geometry.name])
    id_name = id_column or ID_COLUMN
    if id_column is None:
        if ID_COLUMN in columns.columns:
            raise InputError(
                id_flag,
                f"{name} has a column {ID_COLUMN!r} (the name efm gives the row number): pass "
                f"{id_flag} {ID_COLUMN} if it is the id",
            )
        columns.insert(0, ID_COLUMN, np.arange(len(frame), dtype=np.int64))
    else:
        columns = columns[[id_column] + [c for c in columns.columns if c != id_column]]
    clash = [c for c in columns.columns[1:] if str(c) in set(reserved)]
    if clash:
        raise InputError(
            flag,
            f"{name} has a column named {clash[0]!r}, which the table uses for itself; rename it",
        )
    keep = ~bad
    projected = frame.geometry[keep].to_crs(info_crs)
    return Polygons(
        np.asarray(projected.values, dtype=object),
        columns[keep].reset_index(drop=True),
        id_name,
        frame.crs.to_string(),
        int(bad.sum()),
    )


def table_metadata(
    info: StoreInfo, embeddings: str, years, stats, polygons: Polygons, name: str, all_touched: bool
) -> dict:
    """The table's provenance (Parquet schema key b"efm"); `bands` are the mean columns, which
    `efm train` reads as features, and `group_column` keeps a polygon's years in one CV fold."""
    return {
        "product": "zonal",
        "embeddings": embeddings,
        "source": info.source,
        "grid": info.grid_summary(),
        "years": list(years),
        "store_years": list(info.years),
        "store_bands": list(info.bands),
        "bands": list(info.bands) if "mean" in stats else [],
        "store_dtype": info.dtype,
        "polygons": name,
        "polygons_crs": polygons.crs,
        "id_column": polygons.id_column,
        "group_column": polygons.id_column,
        "stats": list(stats),
        "pixel_rule": "all_touched" if all_touched else "centre",
        "skipped_invalid": polygons.skipped,
    }


def pixel_ranges(info: StoreInfo, geometry: np.ndarray, all_touched: bool):
    """Each polygon's bounds -> the pixel rows [r0, r1) and cols [c0, c1) it may cover (a superset,
    one pixel wider on each side), clipped to the grid; r0 == r1 when it misses the grid."""
    import shapely

    a, _, c, _, e, f = info.transform[:6]
    bounds = shapely.bounds(geometry)  # minx, miny, maxx, maxy
    with np.errstate(invalid="ignore"):
        xs = (bounds[:, [0, 2]] - c) / a
        ys = (bounds[:, [1, 3]] - f) / e
    c0 = np.floor(np.nanmin(xs, axis=1)) - 1
    c1 = np.ceil(np.nanmax(xs, axis=1)) + 1
    r0 = np.floor(np.nanmin(ys, axis=1)) - 1
    r1 = np.ceil(np.nanmax(ys, axis=1)) + 1
    c0, c1 = np.clip(c0, 0, info.width), np.clip(c1, 0, info.width)
    r0, r1 = np.clip(r0, 0, info.height), np.clip(r1, 0, info.height)
    ok = (c1 > c0) & (r1 > r0) & np.isfinite(bounds).all(axis=1)
    r1, c1 = np.where(ok, r1, r0), np.where(ok, c1, c0)
    return r0.astype(np.int64), r1.astype(np.int64), c0.astype(np.int64), c1.astype(np.int64)


def chunk_index(info: StoreInfo, geometry: np.ndarray, all_touched: bool):
    """The spatial join of polygon bounds to the chunk grid: (chunk ids, polygon indices, single)
    sorted by chunk, where single[i] says polygon i lies in one chunk (finished there).
    A chunk id is chunk_row * n_chunk_cols + chunk_col."""
    r0, r1, c0, c1 = pixel_ranges(info, geometry, all_touched)
    cr, cc = info.chunk_rows, info.chunk_cols
    ncols = -(-info.width // cc)
    inside = r1 > r0
    k0, k1 = np.where(inside, r0 // cr, 0), np.where(inside, (r1 - 1) // cr + 1, 0)
    j0, j1 = np.where(inside, c0 // cc, 0), np.where(inside, (c1 - 1) // cc + 1, 0)
    nr, nc = k1 - k0, j1 - j0
    per = nr * nc
    single = per == 1
    polygon = np.repeat(np.arange(len(geometry)), per)
    offset = np.arange(len(polygon)) - np.repeat(np.cumsum(per) - per, per)
    rows = np.repeat(k0, per) + offset // np.repeat(np.maximum(nc, 1), per)
    cols = np.repeat(j0, per) + offset % np.repeat(np.maximum(nc, 1), per)
    chunk = rows * ncols + cols
    order = np.argsort(chunk, kind="stable")
    return chunk[order], polygon[order], single


def write_polygon_parts(info: StoreInfo, polygons: Polygons, parts_dir: str, all_touched: bool):
    """One Parquet of (fid, wkb, single) per chunk touched -> [(chunk id, part path)]."""
    import shapely

    chunk, polygon, single = chunk_index(info, polygons.geometry, all_touched)
    wkb = shapely.to_wkb(polygons.geometry)
    ids, starts = np.unique(chunk, return_index=True)
    tasks = []
    for cid, part in zip(ids.tolist(), np.split(polygon, starts[1:])):
        buffer = io.BytesIO()
        pd.DataFrame({"fid": part, "wkb": wkb[part], "single": single[part]}).to_parquet(
            buffer, index=False
        )
        path = part_name(parts_dir, POLYGONS_PART, cid)
        atomic.write_bytes(path, buffer.getvalue())
        tasks.append((cid, path))
    return tasks


def chunk_window(info: StoreInfo, cid: int) -> tuple[int, int, int, int]:
    """Chunk id -> (row0, col0, rows, cols)."""
    ncols = -(-info.width // info.chunk_cols)
    row0, col0 = (cid // ncols) * info.chunk_rows, (cid % ncols) * info.chunk_cols
    return (
        row0,
        col0,
        min(info.chunk_rows, info.height - row0),
        min(info.chunk_cols, info.width - col0),
    )


# ---------------------------------------------------------------- per chunk (pure)


def layers(geometry: np.ndarray, near: float = 0.0) -> list[np.ndarray]:
    """Split polygons into layers in which no two can share a pixel, so that each layer
    rasterises into one label image and every polygon gets all its pixels, as if alone.
    Centre rule: polygons that meet (touching counts: a centre on a shared edge). All touched
    (`near` = a pixel's diagonal): polygons closer than that can touch the same pixel."""
    import shapely

    n = len(geometry)
    if n < 2:
        return [np.arange(n)]
    tree = shapely.STRtree(geometry)
    if near > 0:
        a, b = tree.query(geometry, predicate="dwithin", distance=near)
    else:
        a, b = tree.query(geometry, predicate="intersects")
    pair = a < b
    a, b = a[pair], b[pair]
    if len(a) == 0:
        return [np.arange(n)]
    colour = np.zeros(n, dtype=np.int64)
    neighbours: dict[int, list[int]] = {}
    for i, j in zip(a.tolist(), b.tolist()):
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    for i in sorted(neighbours):  # greedy colouring of the polygons that meet another
        used = {colour[j] for j in neighbours[i] if j < i}
        k = 0
        while k in used:
            k += 1
        colour[i] = k
    return [np.flatnonzero(colour == k) for k in range(int(colour.max()) + 1)]


def label_images(
    geometry, shape, transform, all_touched: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(label image int32: 0 none, i+1 = polygon members[i]; members)] per layer."""
    from rasterio import features

    near = float(np.hypot(transform.a, transform.e) + np.hypot(transform.b, transform.d))
    out = []
    for members in layers(geometry, near if all_touched else 0.0):
        label = features.rasterize(
            zip(geometry[members], range(1, len(members) + 1)),
            out_shape=shape,
            transform=transform,
            fill=0,
            all_touched=all_touched,
            dtype=np.int32,
        )
        out.append((label, members))
    return out


@dataclasses.dataclass
class Partial:
    """Sums of one year's pixels per polygon: counts (n,), sums and sums of squares (n, bands),
    and, for a median, each polygon's pixel values ((k, bands) float32 arrays)."""

    count: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray | None
    values: list | None


def polygon_sums(
    values: np.ndarray, labels, n: int, *, squares: bool, keep_values: bool
) -> Partial:
    """values (rows, cols, bands): the store's codes (int8, de-quantised here, only the pixels
    inside a polygon) or float32, NaN = no data; labels from `label_images` -> Partial."""
    bands = values.shape[-1]
    flat = values.reshape(-1, bands)
    count = np.zeros(n, np.int64)
    sums = np.zeros((n, bands), np.float64)
    sumsq = np.zeros((n, bands), np.float64) if squares else None
    kept = [[] for _ in range(n)] if keep_values else None
    for label, members in labels:
        lab = label.ravel()
        pix = np.flatnonzero(lab)
        if len(pix) == 0:
            continue
        owner = members[lab[pix] - 1]
        if keep_values:  # a polygon's pixels together, for its median
            order = np.argsort(owner, kind="stable")
            pix, owner = pix[order], owner[order]
        for s in range(0, len(pix), BLOCK):
            rows = as_float(flat[pix[s : s + BLOCK]])  # (pixels, bands) float32
            who = owner[s : s + BLOCK]
            ok = valid_mask(rows)
            rows, who = rows[ok], who[ok]
            if len(who) == 0:
                continue
            count += np.bincount(who, minlength=n)
            for b, column in enumerate(np.ascontiguousarray(rows.T)):
                wide = column.astype(np.float64)
                sums[:, b] += np.bincount(who, weights=wide, minlength=n)
                if squares:
                    sumsq[:, b] += np.bincount(who, weights=wide * wide, minlength=n)
            if keep_values:
                starts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
                for i, part in zip(who[starts].tolist(), np.split(rows, starts[1:])):
                    kept[i].append(part)
    if keep_values:
        empty = np.empty((0, bands), np.float32)
        kept = [np.concatenate(k) if len(k) > 1 else k[0] if k else empty for k in kept]
    return Partial(count, sums, sumsq, kept)


def finish(count, sums, sumsq, values, stats, bands) -> dict[str, np.ndarray]:
    """Counts (n,), sums (n, bands), ... -> {column: values} for the statistics asked."""
    out = {COUNT_COLUMN: count.astype(np.int64)}
    columns = stat_columns(stats, bands)
    n = np.maximum(count, 1)[:, None]
    empty = (count == 0)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / n
        for stat, names in columns.items():
            if stat == "mean":
                result = mean
            elif stat == "std":
                result = np.sqrt(np.maximum(sumsq / n - mean * mean, 0.0))
            else:  # median
                result = np.full(sums.shape, np.nan)
                for i, v in enumerate(values):
                    if len(v):
                        result[i] = np.median(v.astype(np.float64), axis=0)
            result = np.where(empty, np.nan, result).astype(np.float32)
            out.update({name: result[:, k] for k, name in enumerate(names)})
    return out


def zonal_chunk(
    read_year,
    years,
    window,
    transform,
    fids,
    geometry,
    single,
    stats,
    bands,
    all_touched,
    keep=None,
):
    """One chunk, every year: -> (frame of the polygons finished here (fid, year, pixel_count,
    stat columns), [(fid, {year: Partial of one polygon})] for the polygons crossing chunks).

    `read_year(year)` returns the chunk's values (rows, cols, bands) float32, NaN = no data;
    `window` is (row0, col0, rows, cols) in the grid whose affine is `transform`; `keep` (rows,
    cols) bool: only these pixels count (a collection's member: centre in its cell)."""
    import affine

    row0, col0, h, w = window
    local = affine.Affine(*tuple(transform)[:6]) @ affine.Affine.translation(col0, row0)
    labels = label_images(np.asarray(geometry, dtype=object), (h, w), local, all_touched)
    for label, _ in labels if keep is not None else ():
        label[~keep] = 0
    squares, median = "std" in stats, "median" in stats
    frames, crossing = [], {}
    single = np.asarray(single, dtype=bool)
    fids = np.asarray(fids, dtype=np.int64)
    for year in years:
        part = polygon_sums(read_year(year), labels, len(fids), squares=squares, keep_values=median)
        if single.any():
            idx = np.flatnonzero(single)
            done = finish(
                part.count[idx],
                part.sum[idx],
                None if part.sumsq is None else part.sumsq[idx],
                None if part.values is None else [part.values[i] for i in idx],
                stats,
                bands,
            )
            frames.append(
                pd.DataFrame({"fid": fids[idx], "year": np.full(len(idx), year, np.int16), **done})
            )
        for i in np.flatnonzero(~single).tolist():
            crossing.setdefault(int(fids[i]), {})[year] = Partial(
                part.count[i : i + 1],
                part.sum[i : i + 1],
                None if part.sumsq is None else part.sumsq[i : i + 1],
                None if part.values is None else [part.values[i]],
            )
    frame = pd.concat(frames, ignore_index=True) if frames else None
    return frame, list(crossing.items())


def combine_partials(fid: int, partials, years, stats, bands) -> pd.DataFrame:
    """The partials of one crossing polygon from every chunk it touches -> its rows (one per year)."""
    rows = []
    for year in years:
        parts = [p[year] for p in partials if year in p]
        count = sum(p.count for p in parts)
        sums = sum(p.sum for p in parts)
        sumsq = sum(p.sumsq for p in parts) if "std" in stats else None
        values = [np.concatenate([p.values[0] for p in parts])] if "median" in stats else None
        done = finish(count, sums, sumsq, values, stats, bands)
        rows.append(pd.DataFrame({"fid": [fid], "year": np.int16(year), **done}))
    return pd.concat(rows, ignore_index=True)


# ---------------------------------------------------------------- Beam


def _write_frame(path: str, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic.write_bytes(path, buffer.getvalue())  # whole or absent


class _ZonalChunkFn(beam.DoFn):
    def __init__(self, info: StoreInfo, years, stats, all_touched: bool, parts_dir: str):
        self.reader = StoreReader(info.path)
        self.info, self.years, self.stats = info, tuple(years), tuple(stats)
        self.all_touched, self.parts_dir = all_touched, parts_dir
        self.chunks = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "chunk_reads")
        self.finished = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "polygons_in_one_chunk")

    def locate(self, task_id: int):
        """A task's (reader, store info, chunk id in it, pixels that count or None); a
        collection's (transforms/products/zonal_collection.py) picks its member here."""
        return self.reader, self.info, task_id, None

    def process(self, task):
        import shapely

        cid, path = task
        with fsspec.open(path, "rb") as f:
            polys = parquet.read_table(f).to_pandas()
        reader, info, local, keep = self.locate(cid)
        row0, col0, h, w = chunk_window(info, local)

        def read_year(year):  # codes: de-quantised pixel by pixel inside polygons only
            self.chunks.inc()
            return reader.read_codes(
                info.time_index(year), slice(row0, row0 + h), slice(col0, col0 + w)
            )

        frame, crossing = zonal_chunk(
            read_year,
            self.years,
            (row0, col0, h, w),
            info.transform,
            polys["fid"].to_numpy(),
            shapely.from_wkb(polys["wkb"].to_numpy()),
            polys["single"].to_numpy(),
            self.stats,
            info.bands,
            self.all_touched,
            keep,
        )
        if frame is not None:
            _write_frame(part_name(self.parts_dir, CHUNK_PART, cid), frame)
            self.finished.inc(int(polys["single"].sum()))
            yield beam.pvalue.TaggedOutput("written", 1)
        yield from crossing


class _CombineFn(beam.DoFn):
    def __init__(self, years, stats, bands, buckets: int):
        self.years, self.stats, self.bands, self.buckets = tuple(years), stats, bands, buckets

    def process(self, element):
        fid, partials = element
        yield (
            fid % self.buckets,
            combine_partials(fid, list(partials), self.years, self.stats, self.bands),
        )


def _write_bucket(element, parts_dir: str):
    bucket, frames = element
    _write_frame(
        part_name(parts_dir, CROSSING_PART, bucket), pd.concat(list(frames), ignore_index=True)
    )
    return 1


@dataclasses.dataclass
class ZonalChunks(beam.PTransform):
    """(chunk id, polygons part) tasks -> result parts under `parts_dir`; emits one element per
    part written (AssembleZonal waits for all of them)."""

    info: StoreInfo
    years: tuple[int, ...]
    stats: tuple[str, ...]
    all_touched: bool
    parts_dir: str
    buckets: int = 1
    chunk_fn: beam.DoFn | None = None  # a collection's (zonal_collection.py)

    def __post_init__(self):
        super().__init__()

    def expand(self, tasks):
        chunk_fn = self.chunk_fn or _ZonalChunkFn(
            self.info, self.years, self.stats, self.all_touched, self.parts_dir
        )
        out = tasks | "ZonalChunk" >> beam.ParDo(chunk_fn).with_outputs("written", main="crossing")
        crossing = (
            out.crossing
            | "GroupByPolygon" >> beam.GroupByKey()
            | "CombinePolygon"
            >> beam.ParDo(_CombineFn(self.years, self.stats, self.info.bands, self.buckets))
            | "GroupByBucket" >> beam.GroupByKey()
            | "WriteBucket" >> beam.Map(_write_bucket, self.parts_dir)
        )
        return (out.written, crossing) | "Written" >> beam.Flatten()


@dataclasses.dataclass
class AssembleZonal(beam.PTransform):
    """Runs once, after every part is written: parts + polygon columns -> the table."""

    parts_dir: str
    output: str
    metadata: dict
    model: tuple | None = None  # (path, sha256): add the model's class / prediction per row

    def __post_init__(self):
        super().__init__()

    def expand(self, written):
        parts_dir, output, metadata, model = self.parts_dir, self.output, self.metadata, self.model
        return (
            written
            | "CountParts" >> beam.combiners.Count.Globally()
            | "Assemble" >> beam.Map(lambda _: assemble(parts_dir, output, metadata, model))
        )


def write_attributes(parts_dir: str, polygons: Polygons) -> None:
    _write_frame(part_name(parts_dir, ATTRIBUTES_PART, 0), polygons.columns)


def table_frame(stats_frames, columns: pd.DataFrame, metadata: dict) -> pd.DataFrame:
    """Per-part stats (fid, year, ...) + the polygons' columns -> one row per polygon and year, in
    the file's order (then the years'); a polygon without any pixel gets count 0, NaN stats."""
    years = [int(y) for y in metadata["years"]]
    names = [
        c
        for cols in stat_columns(metadata["stats"], metadata["store_bands"]).values()
        for c in cols
    ]
    n, ny = len(columns), len(years)
    table = {
        "year": np.tile(np.asarray(years, np.int16), n),
        COUNT_COLUMN: np.zeros(n * ny, np.int64),
        **{c: np.full(n * ny, np.nan, np.float32) for c in names},
    }
    where = {y: i for i, y in enumerate(years)}
    for found in stats_frames:
        if len(found) == 0:
            continue
        at = found["fid"].to_numpy(np.int64) * ny + np.array(
            [where[int(y)] for y in found["year"]], dtype=np.int64
        )
        for c in (COUNT_COLUMN, *names):
            table[c][at] = found[c].to_numpy()
    rows = columns.iloc[np.repeat(np.arange(n), ny)].reset_index(drop=True)
    return pd.concat([rows, pd.DataFrame(table)], axis=1)


def apply_model(frame: pd.DataFrame, loaded, bands, mean_columns) -> pd.DataFrame:
    """Add the model's class (or `prediction` for a regressor) from each row's mean embedding;
    rows without pixels get none. The mean columns are dropped: the table is the answer."""
    X = frame[list(bands)].to_numpy(np.float32)
    ok = ~np.isnan(X).any(axis=1)
    column = "prediction" if loaded.is_regressor else "class"
    predicted = loaded.model.predict(X[ok]) if ok.any() else np.empty(0)
    if loaded.is_regressor:
        values = np.full(len(frame), np.nan)
    else:
        values = np.full(len(frame), None, dtype=object)
    values[ok] = predicted
    out = frame.drop(columns=list(mean_columns))
    out[column] = predicted if ok.all() else values
    return out


def assemble(parts_dir: str, output: str, metadata: dict, model=None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(parts_dir)

    def read(name):
        with fs.open(name, "rb") as f:
            return parquet.read_table(f).to_pandas()

    columns = read(f"{root}/part-{ATTRIBUTES_PART}-0.parquet")
    parts = sorted(fs.glob(f"{root}/part-{CHUNK_PART}-*.parquet")) + sorted(
        fs.glob(f"{root}/part-{CROSSING_PART}-*.parquet")
    )
    frame = table_frame([read(p) for p in parts], columns, metadata)
    if model is not None:
        from transforms.learning import models

        loaded = models.load_model(model[0], sha256=model[1])  # the file the driver checked
        frame = apply_model(
            frame, loaded, loaded.bands or metadata["store_bands"], metadata["store_bands"]
        )
        metadata = {**metadata, "bands": [], "model": model[0], "model_sha256": model[1]}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), TABLE_METADATA_KEY: json.dumps(metadata).encode()}
    )
    with atomic.open_write(output) as f:  # the old table stays until the new one is whole
        pq.write_table(table, f)
    fs.rm(root, recursive=True)
    return len(frame)


def read_table(path: str):
    """The table `assemble` wrote (a pyarrow Table with its metadata), read in this thread."""
    with fsspec.open(path, "rb") as f:
        return parquet.read_table(f)
