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

from pipelines import common, product
from pipelines.change import check_threshold
from transforms.core import grid as gridlib
from transforms.products.change import SimilarityFunction, mask_variable, similarity_variable
from transforms.products.chunk_map import MapChunks, output_template
from transforms.products.similarity import read_reference_points, references
from transforms.storage import outputs, readers, store, subset


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
        "--points-crs",
        help="CRS of the points' coordinates when the file has none (CSV default: EPSG:4326 lon/lat)",
    )
    parser.add_argument(
        "--label-column",
        help="with --label: use only the points whose value in this column is LABEL",
    )
    parser.add_argument(
        "--label", help="the value of --label-column that marks the reference points"
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, options = common.split_args(build_parser(), argv)
    # Checks, before anything is written or any worker starts (the reference points are read here too).
    check_threshold(args.threshold)
    points = read_reference_points(args.points, args.label_column, args.label, args.points_crs)
    ds = store.open_embeddings(args.embeddings)
    info = readers.store_info(args.embeddings, ds)
    years = readers.select_years(info, gridlib.parse_years(args.years) if args.years else None)
    sub = subset.from_args(
        args, info
    )  # --bbox/--aoi: a window of the grid (the reference points may lie anywhere in the store)
    if args.reference_year is not None:
        readers.select_years(info, [args.reference_year], flag="--reference-year")
    ref_years = [args.reference_year] if args.reference_year is not None else years
    refs = references(info, points, ref_years, args.points)
    by_output = {
        t: refs[args.reference_year if args.reference_year is not None else year]
        for t, year in enumerate(years)
    }
    outputs.check_output(
        args.output,
        "similarity",
        inputs={"--embeddings": args.embeddings, "--points": args.points, "--aoi": args.aoi},
        resume=args.resume,
        overwrite=args.overwrite,
    )

    variables = [similarity_variable("dot product with the mean embedding at the reference points")]
    if args.threshold is not None:
        variables.append(
            mask_variable("similar", f"similarity at least {args.threshold}", args.threshold)
        )
    attrs = {
        **product.grid_attrs(args.embeddings, info),
        "points": args.points,
        "label_column": args.label_column or "",
        "label": args.label or "",
        "reference_year": args.reference_year if args.reference_year is not None else "each year",
        "reference_points": [by_output[t].points for t in range(len(years))],
        "reference_vectors": [[float(v) for v in by_output[t].vector] for t in range(len(years))],
        "reference_mean": "plain mean of the points' embeddings, not re-normalised (as Earth Engine's tutorial)",
        **sub.attrs,
    }
    if args.threshold is not None:
        attrs["threshold"] = args.threshold
    product.check_resume_attrs(
        args.output,
        attrs,
        {
            "reference_vectors": "reference (points, --label or --reference-year)",
            "threshold": "--threshold",
            **subset.RESUME_ATTRS,
        },
        resume=args.resume,
    )
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
    plan = sub.plan(years)
    transform = MapChunks(
        args.embeddings,
        SimilarityFunction({t: r.vector for t, r in by_output.items()}, args.threshold),
        {t: (info.time_index(year),) for t, year in enumerate(years)},
        tuple(variables),
        offset=sub.offset,
    )
    result = product.run_map(
        "efm similarity",
        args.output,
        template,
        plan,
        transform,
        options,
        info=info,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    pixels = result.totals.get("pixels_computed", 0)
    used = ", ".join(f"{y}: {r.points}" for y, r in refs.items())
    common.print_summary(
        f"efm similarity: {args.output} complete",
        [
            (
                "reference points",
                f"{len(points.x)} read{f' ({args.label_column} = {args.label})' if args.label else ''}; with data, by reference year: {used}",
            ),
            (
                "grid",
                f"{info.width} x {info.height} px in {info.crs}, year(s) {', '.join(map(str, years))}",
            ),
            *product.chunk_rows(result),
            *sub.summary_rows(len(years)),
            ("pixels compared", pixels),
            ("pixels without data (NaN)", result.totals.get("pixels_nodata", 0)),
            (
                "wall time",
                f"{result.seconds:.1f} s ({pixels / max(result.seconds, 1e-9):,.0f} px/s)",
            ),
        ],
    )
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm similarity", main, argv)


if __name__ == "__main__":
    sys.exit(run())
