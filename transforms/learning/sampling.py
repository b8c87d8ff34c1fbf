"""Sample the embedding at labelled points.

    point batches | SamplePoints(store path, ...) -> one Parquet part per chunk | AssembleTable -> the table

Points are read and reprojected to the store's CRS in the driver, vectorised (a million
points take a second or two). Each point falls in the pixel whose half-open footprint
[left, right) x (bottom, top] holds it: a point on a pixel edge belongs to the pixel to
its right / below, like `rasterio.transform.rowcol`. In the pipeline, batches of points
are split by chunk and grouped, so each (chunk, year) is read exactly once, whatever the
number of points in it. Points outside the grid, and (point, year) pairs on no-data
pixels, are dropped and counted.
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
from transforms.core import grid as gridlib
from transforms.core.errors import InputError, first_line
from transforms.core.metrics import METRICS_NAMESPACE
from transforms.storage.kinds import TABLE_METADATA_KEY
from transforms.storage.readers import StoreInfo, StoreReader, valid_mask
from transforms.storage.store import as_float

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")
COORD_COLUMNS = (("lon", "lat"), ("longitude", "latitude"), ("lng", "lat"), ("x", "y"))
METADATA_KEY = TABLE_METADATA_KEY
# Columns a table has (bands A00..A63 too): a kept column may not take their names.
RESERVED_COLUMNS = frozenset(
    {"point_id", "label", "point_x", "point_y", "year", "pixel_x", "pixel_y", "geometry"}
    | {"member", "crs"}  # a collection's table: the store of each row's pixel
    | {f"A{i:02d}" for i in range(100)}
)
MEMBER_PART_STEP = 10**12  # a collection's member i writes parts named part-<i * step + row>-<col>
KEPT_PREFIX = "keep:"  # batch keys of kept columns (the batch's own keys stay apart)


@dataclasses.dataclass
class Points:
    """Labelled points in their own CRS, with the numeric columns kept for the table."""

    labels: np.ndarray | None  # None: no label column (a table for regression only)
    x: np.ndarray
    y: np.ndarray
    crs: str
    missing_label: int = 0  # rows dropped because their label was empty
    columns: dict = dataclasses.field(default_factory=dict)  # kept numeric columns: name -> values


def read_points(
    path: str,
    label_column: str | None,
    points_crs: str | None = None,
    flag: str = "--points",
    keep_columns: list[str] | None = None,
) -> Points:
    """GeoJSON / GeoPackage / any OGR file, GeoParquet, or CSV with lon/lat (or x/y) columns.

    `keep_columns`: the numeric columns to carry into the table (None: every numeric one but the
    coordinates and the label; [] for none)."""
    import geopandas

    lower = path.lower()
    try:
        if lower.endswith(CSV_SUFFIXES):
            frame = pd.read_csv(path, sep="\t" if lower.endswith(".tsv") else ",")
            geo = None
        elif lower.endswith(PARQUET_SUFFIXES):
            try:
                geo = geopandas.read_parquet(path)
                frame = geo
            except ValueError:  # plain Parquet without geo metadata: columns, like a CSV
                frame, geo = pd.read_parquet(path), None
        else:
            geo = frame = geopandas.read_file(path)
    except FileNotFoundError:
        raise InputError(flag, f"{path} does not exist") from None
    except Exception as exc:
        raise InputError(
            flag,
            f"cannot read {path} as points (GeoJSON, GeoPackage, GeoParquet or CSV): {first_line(exc)}",
        ) from None
    return frame_points(frame, geo, path, label_column, points_crs, flag, keep_columns)


def frame_points(
    frame: pd.DataFrame,
    geo,
    path: str,
    label_column: str | None,
    points_crs: str | None = None,
    flag: str = "--points",
    keep_columns: list[str] | None = None,
) -> Points:
    """`read_points` on a table already read: a GeoDataFrame (`geo` is it) or a DataFrame with coordinate columns (`geo` None)."""
    if len(frame) == 0:
        raise InputError(flag, f"{path} holds no {'features' if geo is not None else 'rows'}")
    if label_column is not None and label_column not in frame.columns:
        columns = [c for c in frame.columns if c != "geometry"]
        raise InputError(
            "--label-column",
            f"{path} has no column {label_column!r}; its columns are {', '.join(map(str, columns))}",
        )
    if geo is not None and "efm_role" in frame.columns:
        # efm label's polygons: each outline is followed by its samples (points); read those
        outline = (frame["efm_role"] == "polygon").to_numpy()
        if outline.any() and not outline.all():
            frame = geo = geo[~outline]
    if geo is not None:
        geometry = geo.geometry
        kinds = set(geometry[geometry.notna()].geom_type)
        if kinds - {"Point"}:
            raise InputError(
                flag,
                f"{path} must hold points, found {', '.join(sorted(kinds - {'Point'}))}; take centroids or sample points first",
            )
        crs = points_crs or (geo.crs.to_string() if geo.crs is not None else None)
        if crs is None:
            raise InputError(
                "--points-crs", f"{path} has no CRS; pass --points-crs, e.g. EPSG:4326"
            )
        ok = geometry.notna() & ~geometry.is_empty
        x = np.where(ok, geometry.x.where(ok), np.nan)
        y = np.where(ok, geometry.y.where(ok), np.nan)
    else:
        lowered = {str(c).lower(): c for c in frame.columns}
        pair = next(
            ((lowered[a], lowered[b]) for a, b in COORD_COLUMNS if a in lowered and b in lowered),
            None,
        )
        if pair is None:
            raise InputError(
                flag,
                f"{path} needs coordinate columns lon/lat (or longitude/latitude, x/y); its columns are {', '.join(map(str, frame.columns))}",
            )
        x = pd.to_numeric(frame[pair[0]], errors="coerce").to_numpy(np.float64)
        y = pd.to_numeric(frame[pair[1]], errors="coerce").to_numpy(np.float64)
        crs = points_crs or "EPSG:4326"
    finite = np.isfinite(x) & np.isfinite(y)
    if finite.any():
        gridlib.check_degrees(
            (x[finite].min(), y[finite].min(), x[finite].max(), y[finite].max()),
            crs,
            path,
            flag,
            crs_from="flag" if points_crs else ("file" if geo is not None else "default"),
            crs_flag="--points-crs" if flag.startswith("--") else "points_crs",
        )
    coords = () if geo is not None else pair
    columns = numeric_columns(frame, path, keep_columns, exclude={label_column, *coords})
    if label_column is None:
        return Points(None, np.asarray(x), np.asarray(y), crs, 0, columns)
    labels = frame[label_column]
    has_label = labels.notna().to_numpy() & (labels.astype(str).str.strip() != "").to_numpy()
    labels = labels.to_numpy()
    if labels.dtype == object:
        kinds = {type(v) for v in labels[has_label]}
        if len(kinds) > 1:  # mixed numbers and text: treat all as text
            labels = np.array([str(v) for v in labels], dtype=object)
    elif (
        np.issubdtype(labels.dtype, np.floating)
        and has_label.any()
        and np.all(labels[has_label] == np.round(labels[has_label]))
    ):
        labels = labels.astype(
            np.float64
        )  # integral floats (from a CSV with gaps) become ints below
        labels = np.where(has_label, labels, 0).astype(np.int64)
    return Points(
        labels[has_label],
        np.asarray(x)[has_label],
        np.asarray(y)[has_label],
        crs,
        int((~has_label).sum()),
        {k: v[has_label] for k, v in columns.items()},
    )


def numeric_columns(frame: pd.DataFrame, path: str, keep: list[str] | None, exclude: set) -> dict:
    """The columns to keep -> their values as in the file (ints stay ints). By default every numeric
    (not boolean) column but `exclude` and the table's own column names; named ones must be numeric."""

    def numeric(c):
        dtype = frame[c].dtype
        return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)

    if keep is None:
        names = [
            c
            for c in frame.columns
            if c != "geometry"
            and c not in exclude
            and str(c) not in RESERVED_COLUMNS
            and numeric(c)
        ]
    else:
        names = list(keep)
        for name in names:
            if name not in frame.columns:
                columns = [c for c in frame.columns if c != "geometry"]
                raise InputError(
                    "--keep-columns",
                    f"{path} has no column {name!r}; its columns are {', '.join(map(str, columns))}",
                )
            if name in RESERVED_COLUMNS or name in exclude:
                raise InputError(
                    "--keep-columns",
                    f"{name!r} is a column the table already has (or the label / a coordinate); keep other columns",
                )
            if not numeric(name):
                raise InputError(
                    "--keep-columns",
                    f"column {name!r} of {path} is not numeric ({frame[name].dtype}); keep only numeric columns",
                )
    return {str(c): frame[c].to_numpy() for c in names}


def is_band(name) -> bool:
    return len(str(name)) == 3 and str(name)[0] == "A" and str(name)[1:].isdigit()


def to_pixels(info: StoreInfo, points: Points) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of each point in the store's grid; -1 for points outside it (or not projectable)."""
    import pyproj

    try:
        transformer = pyproj.Transformer.from_crs(points.crs, info.crs, always_xy=True)
    except pyproj.exceptions.CRSError as exc:
        raise InputError("--points-crs", f"unknown CRS {points.crs!r}: {first_line(exc)}") from None
    with np.errstate(invalid="ignore"):
        sx, sy = transformer.transform(points.x, points.y, errcheck=False)
    return pixel_index(info, np.asarray(sx, dtype=np.float64), np.asarray(sy, dtype=np.float64))


def pixel_index(info: StoreInfo, sx: np.ndarray, sy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store-CRS coordinates -> (rows, cols), floor of the inverse transform; -1 outside."""
    inverse = ~info.affine
    with np.errstate(invalid="ignore"):
        colf = inverse.a * sx + inverse.b * sy + inverse.c
        rowf = inverse.d * sx + inverse.e * sy + inverse.f
        inside = (
            np.isfinite(colf)
            & np.isfinite(rowf)
            & (colf >= 0)
            & (colf < info.width)
            & (rowf >= 0)
            & (rowf < info.height)
        )
    rows = np.where(inside, np.floor(np.where(inside, rowf, 0)), -1).astype(np.int64)
    cols = np.where(inside, np.floor(np.where(inside, colf, 0)), -1).astype(np.int64)
    return rows, cols


def point_batches(
    points: Points, rows: np.ndarray, cols: np.ndarray, batch_size: int = 100_000
) -> list[dict]:
    """The points inside the grid, in batches of arrays (small Beam elements, not one per point)."""
    keep = np.flatnonzero(rows >= 0)
    return [
        {
            "id": ids,
            **({} if points.labels is None else {"label": points.labels[ids]}),
            "x": points.x[ids],
            "y": points.y[ids],
            "row": rows[ids],
            "col": cols[ids],
            **{KEPT_PREFIX + k: v[ids] for k, v in points.columns.items()},
        }
        for ids in (keep[i : i + batch_size] for i in range(0, len(keep), batch_size))
    ]


def split_by_chunk(batch: dict, chunk_rows: int, chunk_cols: int):
    """A batch -> ((chunk row, chunk col), sub-batch) for each chunk it touches."""
    chunk_id = (batch["row"] // chunk_rows) * (1 << 32) + batch["col"] // chunk_cols
    order = np.argsort(chunk_id, kind="stable")
    ids, starts = np.unique(chunk_id[order], return_index=True)
    for cid, part in zip(ids, np.split(order, starts[1:])):
        yield (
            (int(cid >> 32) * chunk_rows, int(cid & 0xFFFFFFFF) * chunk_cols),
            {k: v[part] for k, v in batch.items()},
        )


def merge_batches(batches) -> dict:
    batches = list(batches)
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def sample_rows(
    values: np.ndarray, batch: dict, row0: int, col0: int, year: int, bands
) -> tuple[pd.DataFrame, int]:
    """The embedding of each point's pixel from a window starting at (row0, col0); drops no-data."""
    vectors = values[batch["row"] - row0, batch["col"] - col0]  # (points, bands)
    valid = valid_mask(vectors)
    frame = pd.DataFrame(
        {
            "point_id": batch["id"][valid],
            **({"label": batch["label"][valid]} if "label" in batch else {}),
            **{
                k[len(KEPT_PREFIX) :]: v[valid]
                for k, v in batch.items()
                if k.startswith(KEPT_PREFIX)
            },
            "point_x": batch["x"][valid],
            "point_y": batch["y"][valid],
            "year": np.full(int(valid.sum()), year, dtype=np.int16),
            "pixel_x": batch["col"][valid].astype(np.int32),
            "pixel_y": batch["row"][valid].astype(np.int32),
        }
    )
    frame = pd.concat([frame, pd.DataFrame(vectors[valid], columns=list(bands))], axis=1)
    return frame, int((~valid).sum())


class _SampleChunkFn(beam.DoFn):
    def __init__(self, info: StoreInfo, years: tuple[int, ...], parts_dir: str, member=None):
        self.reader = StoreReader(info.path)
        self.info = info
        self.years = years
        self.parts_dir = parts_dir
        self.member = member  # a collection's member: (position, name, crs)
        self.sampled = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "samples_written")
        self.nodata = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "samples_nodata")
        self.chunks = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "chunk_reads")

    def process(self, element):
        (row0, col0), batches = element
        batch = merge_batches(batches)
        r0, r1 = (
            int(batch["row"].min()),
            int(batch["row"].max()) + 1,
        )  # read only the points' box (one chunk)
        c0, c1 = int(batch["col"].min()), int(batch["col"].max()) + 1
        frames, nodata = [], 0
        for year in self.years:
            values = as_float(
                self.reader.read_codes(self.info.time_index(year), slice(r0, r1), slice(c0, c1))
            )
            self.chunks.inc()
            frame, dropped = sample_rows(values, batch, r0, c0, year, self.info.bands)
            frames.append(frame)
            nodata += dropped
        table = pd.concat(frames, ignore_index=True)
        name = f"part-{row0}-{col0}.parquet"
        if self.member is not None:  # which store (and so which grid) each row's pixel is of
            position, member, crs = self.member
            at = table.columns.get_loc("pixel_x")
            table.insert(at, "crs", pd.Series([crs] * len(table), dtype=object))
            table.insert(at, "member", pd.Series([member] * len(table), dtype=object))
            name = f"part-{position * MEMBER_PART_STEP + row0}-{col0}.parquet"
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        # whole or absent: a retried or killed worker never leaves a truncated part to assemble
        atomic.write_bytes(f"{self.parts_dir}/{name}", buffer.getvalue())
        self.sampled.inc(len(table))
        self.nodata.inc(nodata)
        yield len(table)


@dataclasses.dataclass
class SamplePoints(beam.PTransform):
    """Point batches -> a Parquet part per chunk under `parts_dir`; emits rows written per chunk."""

    info: StoreInfo
    years: tuple[int, ...]
    parts_dir: str
    member: tuple | None = None  # a collection's member: (position, name, crs) -> columns

    def __post_init__(self):
        super().__init__()

    def expand(self, batches):
        rows, cols = self.info.chunk_rows, self.info.chunk_cols
        return (
            batches
            | "SplitByChunk" >> beam.FlatMap(split_by_chunk, rows, cols)
            | "GroupByChunk" >> beam.GroupByKey()
            | "SampleChunk"
            >> beam.ParDo(_SampleChunkFn(self.info, tuple(self.years), self.parts_dir, self.member))
        )


@dataclasses.dataclass
class AssembleTable(beam.PTransform):
    """Runs once, after every part is written (like store.MarkComplete): the parts -> the table.

    A step of the pipeline, not code after `run()`: a flex template launch returns as soon as the
    job is submitted, so only the job itself can write the table. Emits the number of rows."""

    parts_dir: str
    output: str
    metadata: dict
    bands: tuple[str, ...]

    def __post_init__(self):
        super().__init__()

    def expand(self, written):
        parts_dir, output, metadata, bands = (
            self.parts_dir,
            self.output,
            self.metadata,
            tuple(self.bands),
        )
        return (
            written
            | "CountParts"
            >> beam.combiners.Count.Globally()  # one element, even when no part was written
            | "Assemble"
            >> beam.Map(lambda _: assemble(parts_dir, output, metadata, bands).num_rows)
        )


def read_table(path: str):
    """The table `AssembleTable` wrote (a pyarrow Table, with its metadata).

    Through transforms/core/parquet.py: `pq.read_table(f)` here made `efm sample` abort at exit
    now and then ("terminate called without an active exception"), after writing its table."""
    with fsspec.open(path, "rb") as f:
        return parquet.read_table(f)


def assemble(parts_dir: str, output: str, metadata: dict, bands) -> pd.DataFrame:
    """Concatenate the parts, sorted by point and year, into one Parquet table with `metadata`."""
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(parts_dir)
    files = sorted(fs.glob(f"{root}/part-*.parquet")) if fs.exists(root) else []
    tables = []
    for name in files:
        with fs.open(name, "rb") as f:
            tables.append(parquet.read_table(f))  # not on Arrow's threads (core/parquet.py)
    table = combine(tables, metadata, bands)
    with atomic.open_write(output) as f:  # the old table stays until the new one is whole
        pq.write_table(table, f)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    return table


def combine(tables: list, metadata: dict, bands):
    """Per-chunk tables (pyarrow) -> the table, sorted by point and year, with `metadata` (also the Python API's `efm.sample`)."""
    import pyarrow as pa

    if tables:
        table = pa.concat_tables(tables, promote_options="permissive").sort_by(
            [("point_id", "ascending"), ("year", "ascending")]
        )
    else:
        label = {"label": []} if metadata.get("label_column", "label") is not None else {}
        kept = {c: [] for c in metadata.get("keep_columns", [])}
        empty = {
            "point_id": [],
            **label,
            **kept,
            "point_x": [],
            "point_y": [],
            "year": [],
            **({"member": [], "crs": []} if metadata.get("members") else {}),
            "pixel_x": [],
            "pixel_y": [],
            **{b: [] for b in bands},
        }
        table = pa.Table.from_pandas(
            pd.DataFrame(empty).astype({b: np.float32 for b in bands}), preserve_index=False
        )
    return table.replace_schema_metadata(
        {**(table.schema.metadata or {}), METADATA_KEY: json.dumps(metadata).encode()}
    )


def read_table_metadata(path: str) -> dict:
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as f:
        meta = pq.read_schema(f).metadata or {}
    return json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}


# ---------------------------------------------------------------- uniform random pixels (for k-means)


def bottom_k(keys: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k entries with the smallest keys (all of them if fewer)."""
    if len(keys) <= k:
        return keys, vectors
    part = np.argpartition(keys, k - 1)[:k]
    return keys[part], vectors[part]


class BottomK(beam.CombineFn):
    """Combines (keys, vectors) pairs, keeping the k smallest keys: with i.i.d. uniform keys,
    a uniform random sample without replacement over everything seen, whatever the split."""

    def __init__(self, k: int, bands: int):
        self.k, self.bands = k, bands

    def create_accumulator(self):
        return np.empty(0, np.float64), np.empty((0, self.bands), np.float32)

    def add_input(self, acc, element):
        return self.merge_accumulators([acc, element])

    def merge_accumulators(self, accs):
        accs = list(accs)
        return bottom_k(
            np.concatenate([a[0] for a in accs]), np.concatenate([a[1] for a in accs]), self.k
        )

    def extract_output(self, acc):
        return acc


class _RandomPixelsFn(beam.DoFn):
    def __init__(self, info: StoreInfo, k: int, seed: int, cell=None, salt=None):
        self.reader = StoreReader(info.path)
        self.info, self.k, self.seed, self.cell, self.salt = info, k, seed, cell, salt
        self.valid = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "valid_pixels")

    def process(self, spec):
        values = self.reader.read(self.info.time_index(spec.year), spec.window)
        flat = values.reshape(-1, values.shape[-1])
        ok = valid_mask(flat)
        if self.cell is not None:  # a collection's member: only the pixels its cell counts
            from transforms.learning.collection_points import owned

            mask = owned(self.info, spec.window, self.cell)
            ok = ok if mask is None else ok & mask.ravel()
        valid = np.flatnonzero(ok)
        self.valid.inc(len(valid))
        if len(valid):
            seed = (
                [self.seed, spec.index] if self.salt is None else [self.seed, self.salt, spec.index]
            )
            keys = np.random.default_rng(seed).random(len(valid))  # reproducible per chunk
            keys, rows = bottom_k(keys, valid, self.k)
            yield keys, flat[rows]


@dataclasses.dataclass
class RandomPixels(beam.PTransform):
    """ChunkSpecs -> one (keys, vectors) pair: `k` valid pixels drawn uniformly from all chunks.

    `cell` (a collection's member): only pixels whose centre is in the cell, with keys salted by
    `salt` (the member's position), so that the members' draws combine into one uniform sample."""

    info: StoreInfo
    k: int
    seed: int = 0
    cell: object = None
    salt: int | None = None

    def __post_init__(self):
        super().__init__()

    def expand(self, specs):
        return (
            specs
            | "ChunkSample"
            >> beam.ParDo(_RandomPixelsFn(self.info, self.k, self.seed, self.cell, self.salt))
            | "KeepSmallestKeys" >> beam.CombineGlobally(BottomK(self.k, len(self.info.bands)))
        )


def parse_keep_columns(text: str | None, label_column: str | None) -> list[str] | None:
    """--keep-columns -> names (None: every numeric column; [] for 'none'); without a label column
    the table is for regression and needs the columns named."""
    names = (
        None
        if text is None
        else []
        if text.strip().lower() == "none"
        else [c.strip() for c in text.split(",") if c.strip()]
    )
    if label_column is None and not names:
        raise InputError(
            "--label-column",
            "required: name the class label column, or (for regression only) name the numeric columns to keep with --keep-columns, e.g. --keep-columns agbd",
        )
    return names
