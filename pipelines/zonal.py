"""`efm zonal`: polygons + an embedding store -> one row per polygon and year (Parquet): a
statistic of each band over the pixels whose centre falls in the polygon, the pixel count, the
polygon's id and columns.

    polygons (driver: checked, reprojected, indexed by chunk -> parts) |
    ZonalChunks (per chunk: rasterise, sums; crossing polygons combined by key) | AssembleZonal

The rule, the statistics and the memory bound: transforms/products/zonal.py; the run itself,
shared with `efm predict --polygons`: pipelines/polygon_table.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipelines import common, polygon_table
from transforms.products import zonal


def build_parser():
    parser = common.make_parser(
        "efm zonal",
        "Embeddings per polygon: a statistic of each band over each polygon's pixels, per year -> a Parquet table.",
    )
    parser.add_argument(
        "--embeddings", required=True, help="embedding store (Zarr, local path or gs://)"
    )
    polygon_table.add_polygon_flags(parser)
    parser.add_argument(
        "--output", required=True, help="table to write, e.g. fields.parquet (local path or gs://)"
    )
    parser.add_argument(
        "--stat",
        default="mean",
        help=f"statistics, comma-separated, from {', '.join(zonal.STATS)} (default: %(default)s; "
        "the pixel count is always there)",
    )
    parser.add_argument("--years", help="years, e.g. 2021,2022 (default: every year of the store)")
    common.add_overwrite(parser, "an existing output table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, options = common.split_args(build_parser(), argv)
    return polygon_table.run_zonal(args, options, "efm zonal", zonal.parse_stats(args.stat))


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm zonal", main, argv)


if __name__ == "__main__":
    sys.exit(run())
