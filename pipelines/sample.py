"""`efm sample`: labelled points + an embedding store -> a training table (Parquet).

point batches | SamplePoints (split by chunk, group, read each chunk once) -> parts -> TABLE.parquet
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Sequence

import apache_beam as beam
import numpy as np

from pipelines import common, tuning
from transforms.core import grid as gridlib
from transforms.core import progress
from transforms.core.errors import InputError
from transforms.core.metrics import metric_totals
from transforms.learning import collection_points, labelled_points, sample_table, sampling
from transforms.storage import collection, outputs, parts_folder, readers, store


def build_parser():
    parser = common.make_parser(
        "efm sample",
        "Sample the embedding of the pixel under each labelled point, for each year -> a Parquet table.",
    )
    parser.add_argument(
        "--embeddings", required=True, help="embedding store (Zarr, local path or gs://)"
    )
    parser.add_argument(
        "--points",
        required=True,
        help="labelled points: GeoJSON, GeoPackage, GeoParquet, or CSV with lon/lat columns; any CRS",
    )
    parser.add_argument(
        "--label-column",
        help="the column holding each point's class label (required unless --keep-columns names columns: a table for regression only)",
    )
    parser.add_argument(
        "--keep-columns",
        help="numeric columns of the points file to copy into the table, e.g. agbd,canopy_height "
        "(default: every numeric column but the coordinates and the label; 'none' for none)",
    )
    parser.add_argument(
        "--output", required=True, help="table to write, e.g. samples.parquet (local path or gs://)"
    )
    parser.add_argument(
        "--years", help="years to sample, e.g. 2021,2022 (default: every year of the store)"
    )
    common.add_overwrite(parser, "an existing output table")
    tuning.add_flag(parser, "sample")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, options = common.split_args(build_parser(), argv)
    if not args.output.lower().endswith((".parquet", ".pq", ".geoparquet")):
        raise InputError(
            "--output",
            f"{args.output}: the table is written as Parquet; name it e.g. samples.parquet",
        )
    coll = collection.read(args.embeddings) if collection.is_collection(args.embeddings) else None
    if coll is None:
        members = [(None, None, readers.store_info(args.embeddings))]
    else:  # each point read from the member whose cell holds it (collection_points)
        members = [
            (m.path, m.zone, readers.store_info(coll.path_of(m), flag="--embeddings"))
            for m in coll.members
        ]
    info = members[0][2]
    years = readers.select_years(info, gridlib.parse_years(args.years) if args.years else None)
    for _, _, member in members[1:]:
        readers.select_years(member, years)
    outputs.check_output(
        args.output,
        "table",
        inputs={"--embeddings": args.embeddings, "--points": args.points},
        overwrite=args.overwrite,
    )
    parts_folder.check_parts(args.output + ".parts")
    keep = labelled_points.parse_keep_columns(args.keep_columns, args.label_column)
    points = labelled_points.read_points(
        args.points, args.label_column, args.points_crs, keep_columns=keep
    )
    if len(points.x) == 0:
        raise InputError(
            "--points",
            f"{args.points} holds no labelled point (column {args.label_column!r} is empty)",
        )
    if coll is None:
        rows, cols = sampling.to_pixels(info, points)
        groups = [(None, info, rows, cols)]
        outside = int((rows < 0).sum())
        where = f"{args.embeddings} ({info.crs})"
    else:
        parts, out_mask = collection_points.split(members, points)
        groups = []
        for part in parts:
            rows = np.full(len(points.x), -1, np.int64)
            cols = rows.copy()
            rows[part.ids], cols[part.ids] = part.rows, part.cols
            position = [m[0] for m in members].index(part.name)
            groups.append(((position, part.name, part.info.crs), part.info, rows, cols))
        outside = int(out_mask.sum())
        where = f"any store of the collection {args.embeddings} ({_members(coll)})"
    if outside == len(points.x):
        raise InputError(
            "--points",
            f"none of the {len(points.x)} points of {args.points} ({points.crs}) falls inside {where}; check the CRS and the area",
        )
    parts_dir = args.output + ".parts"
    parts_folder.start_parts(
        parts_dir
    )  # clears parts left by an interrupted run (only a folder efm sample marked)

    metadata = {
        "embeddings": args.embeddings,
        "source": info.source,
        "grid": info.grid_summary()
        if coll is None
        else {"collection": [m[2].grid_summary() for m in members]},
        "years": years,
        "store_years": list(info.years),
        "bands": list(info.bands),
        "store_dtype": info.dtype,
        "points": args.points,
        "points_crs": points.crs,
        "label_column": args.label_column,
        "keep_columns": list(points.columns),
    }
    if coll is not None:
        metadata["members"] = [
            {"member": m.path, "cell": m.cell, "crs": m.crs} for m in coll.members
        ]

    def build(pipeline: beam.Pipeline) -> None:
        written = []
        for member, group_info, rows, cols in groups:
            name = "" if member is None else f" {member[1]}"
            written.append(
                pipeline
                | f"PointBatches{name}" >> beam.Create(sampling.point_batches(points, rows, cols))
                | f"Sample{name}"
                >> sampling.SamplePoints(group_info, tuple(years), parts_dir, member)
            )
        if len(written) > 1:
            written = [tuple(written) | "Members" >> beam.Flatten()]
        written[0] | "AssembleTable" >> sample_table.AssembleTable(
            parts_dir, args.output, metadata, tuple(info.bands)
        )

    # progress: one Parquet part per chunk holding points
    planned = 0
    for _, group_info, rows, cols in groups:
        inside = rows >= 0
        planned += len(
            np.unique(
                (rows[inside] // group_info.chunk_rows) * (1 << 32)
                + cols[inside] // group_info.chunk_cols
            )
        )

    def sampled() -> (
        int
    ):  # the parts folder exists from start_parts until the table is assembled from it
        return (
            progress.count_files(parts_dir, "part-*.parquet")
            if store.exists(parts_dir)
            else planned
        )

    watch = progress.Progress(
        "efm sample",
        sampled,
        planned,
        verb="sampled",
        enabled=common.local_workers(options) is not None and not common.detached(options),
    )
    with common.Stopwatch() as clock, watch:
        result = common.run_pipeline(build, options)
    totals = metric_totals(result)
    table = sample_table.read_table(args.output)  # written by the pipeline's last step
    per_class = (
        collections.Counter(table.column("label").to_pylist())
        if points.labels is not None
        else None
    )
    common.print_summary(
        f"efm sample: {args.output} written",
        [
            ("points read", len(points.x) + points.missing_label),
            ("dropped: no label", points.missing_label),
            (
                "dropped: outside the store" + ("" if coll is None else "s"),
                outside,
            ),
            *(
                []
                if coll is None
                else [
                    (
                        "rows per member",
                        ", ".join(
                            f"{name}: {n}"
                            for name, n in sorted(
                                collections.Counter(table.column("member").to_pylist()).items()
                            )
                        )
                        or "none",
                    )
                ]
            ),
            ("dropped: no data (point, year)", totals.get("samples_nodata", 0)),
            ("rows written (point x year)", table.num_rows),
            ("chunk reads", f"{totals.get('chunk_reads', 0)} (each chunk once per year)"),
            (
                "rows per class",
                "no label column"
                if per_class is None
                else ", ".join(
                    f"{k}: {v}" for k, v in sorted(per_class.items(), key=lambda kv: str(kv[0]))
                )
                or "none",
            ),
            ("columns kept", ", ".join(points.columns) or "none"),
            ("wall time", f"{clock.seconds:.1f} s"),
        ],
    )
    if table.num_rows == 0:
        print(
            "efm sample: warning: every point fell on no data; the table is empty", file=sys.stderr
        )
    return 0


def _members(coll) -> str:
    return ", ".join(f"{m.cell} {m.path}" for m in coll.members)


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm sample", main, argv)


if __name__ == "__main__":
    sys.exit(run())
