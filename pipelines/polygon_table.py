"""A table per polygon and year from an embedding store (Parquet): the run shared by `efm zonal`
(statistics of each band) and `efm predict --polygons` (a model on each polygon's mean embedding).

    polygons (driver: checked, reprojected, indexed by chunk -> parts) |
    ZonalChunks (per chunk: rasterise, sums; crossing polygons combined by key) | AssembleZonal

The rule, the statistics and the memory bound: transforms/products/zonal.py.
"""

from __future__ import annotations

import sys

import apache_beam as beam
import fsspec

from pipelines import common
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.core.metrics import metric_totals
from transforms.products import zonal, zonal_collection, zonal_polygons, zonal_table
from transforms.storage import collection, outputs, parts_folder, readers, store


def add_polygon_flags(parser, with_stats: bool = True) -> None:
    parser.add_argument(
        "--polygons",
        required=with_stats,
        help="polygons (fields, parcels, districts): GeoPackage, GeoJSON, Shapefile or GeoParquet, any CRS",
    )
    parser.add_argument(
        "--id-column",
        help="a unique id column of the polygon file (default: polygon_id = the row number)",
    )
    parser.add_argument(
        "--all-touched",
        action="store_true",
        help="count every pixel the polygon touches (default: the pixels whose centre is inside)",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip empty or invalid geometries (default: refuse the file, saying how many)",
    )


def run_zonal(args, options, prog: str, stats, loaded=None) -> int:
    """The command, for `efm zonal` and `efm predict --polygons` (`loaded`: the model to apply to
    each row's mean embedding)."""
    if not args.output.lower().endswith((".parquet", ".pq", ".geoparquet")):
        raise InputError(
            "--output",
            f"{args.output}: the table is written as Parquet; name it e.g. fields.parquet",
        )
    members = None  # a collection: [(cell, StoreInfo)] (transforms/products/zonal_collection.py)
    if collection.is_collection(args.embeddings):
        coll = collection.read(args.embeddings)
        members = [
            (m.zone, readers.store_info(coll.path_of(m), flag="--embeddings")) for m in coll.members
        ]
        info = members[0][1]
    else:
        info = readers.store_info(args.embeddings, store.open_embeddings(args.embeddings))
    years = readers.select_years(info, gridlib.parse_years(args.years) if args.years else None)
    for _, member in (members or [])[1:]:
        readers.select_years(member, years)
    inputs = {"--embeddings": args.embeddings, "--polygons": args.polygons}
    if loaded is not None:
        from transforms.learning import model_inputs, models

        model_inputs.check_bands(loaded, list(info.bands), args.embeddings)
        inputs["--model"] = [args.model, models.sidecar_path(args.model)]
    outputs.check_output(args.output, "table", inputs=inputs, overwrite=args.overwrite)
    parts_dir = args.output + ".parts"
    parts_folder.check_parts(parts_dir)
    reserved = {"year", zonal.COUNT_COLUMN, "class", "prediction"} | {
        c for cols in zonal.stat_columns(stats, info.bands).values() for c in cols
    }
    targets = [(info, 0)] if members is None else zonal_collection.targets(members)
    # clears parts an interrupted run left (only a folder efm marked)
    parts_folder.start_parts(parts_dir)
    try:  # the polygons a batch at a time: checked, projected, indexed by chunk -> parts
        polygons = zonal.index(
            args.polygons,
            args.polygons,
            targets,
            parts_dir,
            all_touched=args.all_touched,
            checks=zonal.checks(args.polygons, args.id_column, args.skip_invalid, reserved),
        )
    except BaseException:  # refused (or stopped): nothing is left behind
        fs, root = fsspec.core.url_to_fs(parts_dir)
        fs.rm(root, recursive=True)
        raise
    metadata = (zonal if members is None else zonal_collection).table_metadata(
        info if members is None else members,
        args.embeddings,
        years,
        stats,
        polygons,
        args.polygons,
        args.all_touched,
    )
    tasks = polygons.tasks
    batch = zonal_polygons.BATCH  # the polygons' batches, as the driver read them
    chunk_fn = (
        None
        if members is None
        else zonal_collection.MemberChunkFn(
            members, years, stats, args.all_touched, parts_dir, batch
        )
    )
    n = polygons.kept
    model = None if loaded is None else (args.model, loaded.sha256)

    def build(pipeline: beam.Pipeline) -> None:
        written = (
            pipeline
            | "Chunks" >> beam.Create(tasks)
            | "Zonal"
            >> zonal.ZonalChunks(
                info,
                tuple(years),
                tuple(stats),
                args.all_touched,
                parts_dir,
                batch,
                chunk_fn=chunk_fn,
            )
        )
        written | "AssembleTable" >> zonal.AssembleZonal(parts_dir, args.output, metadata, model)

    with common.Stopwatch() as clock:
        result = common.run_pipeline(build, options)
    totals = metric_totals(result)
    rows, empty = zonal_table.count_summary(args.output)
    common.print_summary(
        f"{prog}: {args.output} written",
        [
            ("polygons", f"{n} ({args.polygons}, {metadata['polygons_crs']})"),
            *(
                [("skipped: empty or invalid", metadata["skipped_invalid"])]
                if args.skip_invalid
                else []
            ),
            ("rows (polygon x year)", rows),
            ("rows without a pixel", f"{empty} (pixel_count 0, statistics NaN)"),
            ("pixel rule", "every pixel touched" if args.all_touched else "pixel centre inside"),
            *(
                []
                if members is None
                else [
                    (
                        "collection",
                        f"{len(members)} stores ({', '.join(c.name for c, _ in members)}); "
                        "a pixel counts in the store whose cell holds its centre",
                    )
                ]
            ),
            (
                "statistics",
                "class per polygon (from the mean)" if loaded is not None else ", ".join(stats),
            ),
            ("chunks read", f"{totals.get('chunk_reads', 0)} (each chunk once per year)"),
            ("wall time", f"{clock.seconds:.1f} s"),
        ],
    )
    if args.skip_invalid and metadata["skipped_invalid"]:
        print(
            f"{prog}: warning: skipped {metadata['skipped_invalid']} empty or invalid geometries",
            file=sys.stderr,
        )
    return 0
