"""`efm similarity`: reference points + an embedding store -> a similarity store, chunk by chunk.

    driver: points -> pixels -> reference vector per year (plain mean, transforms/products/similarity.py)
    chunk specs | MapChunks(SimilarityFunction(references)) | WriteChunks | MarkComplete

`similarity (time, y, x)` float32 = the pixel's dot product with the year's reference vector
(NaN = no data); with --threshold also `similar` uint8 (1 = similarity >= threshold, 0
otherwise, 255 = no data).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipelines import common, fanout, product, tuning
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.products import similarity as similarity_lib
from transforms.products.change import SimilarityFunction, mask_variable, similarity_variable
from transforms.products.chunk_map import MapChunks, output_template
from transforms.products.similarity import (
    collection_references,
    reference_points,
    references,
)
from transforms.storage import collection, readers, store, subset


def build_parser():
    parser = common.make_parser(
        "efm similarity",
        "Similarity of every pixel to the mean embedding at reference points -> a similarity Zarr store.",
    )
    parser.add_argument(
        "--embeddings", required=True, help="embedding store (Zarr, local path or gs://)"
    )
    parser.add_argument(
        "--points",
        required=True,
        help="reference points: GeoJSON, GeoPackage, GeoParquet, or CSV with lon/lat columns; any CRS",
    )
    parser.add_argument(
        "--label",
        metavar="COLUMN=VALUE",
        help="use only the points whose COLUMN holds VALUE (compared as text), e.g. kind=forest "
        "(default: every point)",
    )
    parser.add_argument(
        "--output", required=True, help="similarity store to write (Zarr, local path or gs://)"
    )
    parser.add_argument(
        "--years", help="years to compute, e.g. 2021,2022 (default: every year of the store)"
    )
    parser.add_argument(
        "--reference-year",
        type=int,
        help="take the reference from this year for every year (default: each year its own)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="also write `similar` = 1 where similarity >= THRESHOLD (in [-1, 1])",
    )
    subset.add_flags(parser)
    product.add_resume_flags(parser)
    tuning.add_flag(parser, "similarity")
    return parser


def refuse_label_column(argv: Sequence[str] | None) -> None:
    """`--label-column kind --label forest` (before --label took both): one line saying how to
    say it now (before parsing: argparse would take it for a Beam option it does not know)."""
    for token in sys.argv[1:] if argv is None else argv:
        if token.partition("=")[0] == "--label-column":
            raise InputError(
                "--label-column",
                "merged into --label: give --label COLUMN=VALUE (e.g. --label kind=forest)",
            )


def main(argv: Sequence[str] | None = None) -> int:
    refuse_label_column(argv)
    args, options = common.split_args(build_parser(), argv)
    # Checks, before anything is written or any worker starts (the reference points are read here too).
    similarity_lib.check_threshold(args.threshold)
    args.label_column, args.label = similarity_lib.split_label(args.label)
    points = reference_points(args.points, args.label_column, args.label, args.points_crs)
    # one reachability look at --embeddings: a collection (the points' pixels from the member holding each)?
    is_collection = collection.is_collection(args.embeddings)
    if is_collection:
        coll = collection.read(args.embeddings)
        members = [
            (m.path, m.zone, readers.store_info(coll.path_of(m), flag="--embeddings"))
            for m in coll.members
        ]
        info = members[0][2]
    else:
        info = readers.store_info(args.embeddings, store.open_embeddings(args.embeddings))
    years = readers.select_years(info, gridlib.parse_years(args.years) if args.years else None)
    if args.reference_year is not None:
        readers.select_years(info, [args.reference_year], flag="--reference-year")
    ref_years = [args.reference_year] if args.reference_year is not None else years
    # --bbox/--aoi before the points are read (the points may lie outside the area)
    if not is_collection:
        subset.from_args(args, info)
    elif all(subset.from_args(args, i, cell) is None for _, cell, i in members):
        fanout.refuse_area(args, coll)
    if is_collection:
        refs = collection_references(members, points, ref_years, args.points, args.embeddings)
    else:
        refs = references(info, points, ref_years, args.points)
    by_output = {
        t: refs[args.reference_year if args.reference_year is not None else year]
        for t, year in enumerate(years)
    }
    variables = [similarity_variable("dot product with the mean embedding at the reference points")]
    if args.threshold is not None:
        variables.append(
            mask_variable("similar", f"similarity at least {args.threshold}", args.threshold)
        )
    used = ", ".join(f"{y}: {r.points}" for y, r in refs.items())

    def make_job(embeddings: str, cell) -> fanout.Job | None:
        ds = store.open_embeddings(embeddings)
        info = readers.store_info(embeddings, ds)
        readers.select_years(info, years)
        if args.reference_year is not None:
            readers.select_years(info, [args.reference_year], flag="--reference-year")
        sub = subset.from_args(args, info, cell)  # the reference points may lie anywhere
        if sub is None:
            return None
        attrs = {
            **product.grid_attrs(embeddings, info),
            "points": args.points,
            "label_column": args.label_column or "",
            "label": args.label or "",
            "reference_year": args.reference_year
            if args.reference_year is not None
            else "each year",
            "reference_points": [by_output[t].points for t in range(len(years))],
            "reference_vectors": [
                [float(v) for v in by_output[t].vector] for t in range(len(years))
            ],
            "reference_mean": "plain mean of the points' embeddings, not re-normalised (as Earth Engine's tutorial)",
            **sub.attrs,
        }
        if args.threshold is not None:
            attrs["threshold"] = args.threshold
        template = output_template(
            ds,
            variables,
            years,
            chunk_rows=info.chunk_rows,
            chunk_cols=info.chunk_cols,
            product="similarity",
            attrs=attrs,
            window=sub.window,
        )
        transform = MapChunks(
            embeddings,
            SimilarityFunction({t: r.vector for t, r in by_output.items()}, args.threshold),
            {t: (info.time_index(year),) for t, year in enumerate(years)},
            tuple(variables),
            offset=sub.offset,
        )

        def rows(result: product.MapRun) -> list:
            refs = f"{len(points.x)} read{f' ({args.label_column} = {args.label})' if args.label else ''}; with data, by reference year: {used}"
            return product.summary_rows(
                result,
                info,
                sub,
                [("reference points", refs)],
                years,
                ("pixels compared", "pixels_computed"),
                "pixels without data (NaN)",
            )

        return fanout.Job(
            info,
            template,
            sub.plan(years),
            transform,
            years,
            rows,
            "pixels_computed",
            resume_names={
                "reference_vectors": "reference (points, --label or --reference-year)",
                "threshold": "--threshold",
                **subset.RESUME_ATTRS,
            },
        )

    return fanout.run(
        "efm similarity",
        args,
        options,
        kind="similarity",
        inputs={"--embeddings": args.embeddings, "--points": args.points, "--aoi": args.aoi},
        make_job=make_job,
        is_collection=is_collection,
    )


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm similarity", main, argv)


if __name__ == "__main__":
    sys.exit(run())
