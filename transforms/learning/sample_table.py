"""The sample table: per-chunk Parquet parts -> one table with its metadata, and reading it back."""

from __future__ import annotations

import dataclasses
import json

import apache_beam as beam
import fsspec
import numpy as np
import pandas as pd

from transforms.core import atomic, parquet
from transforms.storage.kinds import TABLE_METADATA_KEY

METADATA_KEY = TABLE_METADATA_KEY


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
