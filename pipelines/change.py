"""`efm change`: two years of an embedding store -> a change store, chunk by chunk.

    chunk specs | MapChunks(ChangeFunction, reads (FROM, TO) of each window) | WriteChunks | MarkComplete

`--years FROM,TO`. `similarity (y, x)` float32 = the dot product of the pixel's FROM and TO vectors
(1 = unchanged; NaN where either year has no data); with --threshold also `changed (y, x)`
uint8 (1 = similarity < threshold, 0 otherwise, 255 = no data).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from pipelines import common, fanout, product
from transforms.core.errors import InputError
from transforms.products import similarity
from transforms.products.change import ChangeFunction, mask_variable, similarity_variable
from transforms.products.chunk_map import MapChunks, output_template
from transforms.storage import readers, store, subset


def build_parser():
    parser = common.make_parser(
        "efm change",
        "Per-pixel similarity of two years of an embedding store (1 = unchanged) -> a change Zarr store.",
    )
    parser.add_argument(
        "--embeddings", required=True, help="embedding store (Zarr, local path or gs://)"
    )
    parser.add_argument(
        "--years",
        required=True,
        metavar="FROM,TO",
        help="the two years, the earlier first, e.g. 2022,2023 (both held by the store)",
    )
    parser.add_argument(
        "--output", required=True, help="change store to write (Zarr, local path or gs://)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="also write `changed` = 1 where similarity < THRESHOLD (in [-1, 1], e.g. 0.8)",
    )
    subset.add_flags(parser)
    product.add_resume_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    refuse_replaced(sys.argv[1:] if argv is None else argv)
    args, options = common.split_args(build_parser(), argv)
    # Checks, before anything is written or any worker starts.
    args.from_year, args.to_year = parse_year_pair(args.years)
    similarity.check_threshold(args.threshold)
    variables = [
        similarity_variable(
            f"similarity of the {args.from_year} and {args.to_year} embeddings (1 = unchanged)"
        )
    ]
    if args.threshold is not None:
        variables.append(
            mask_variable("changed", f"similarity below {args.threshold}", args.threshold)
        )

    def make_job(embeddings: str, cell) -> fanout.Job | None:
        ds = store.open_embeddings(embeddings)
        info = readers.store_info(embeddings, ds)
        readers.select_years(info, [args.from_year, args.to_year], flag="--years")
        sub = subset.from_args(args, info, cell)  # --bbox/--aoi: a window of the grid
        if sub is None:
            return None
        attrs = {
            **product.grid_attrs(embeddings, info),
            "from_year": args.from_year,
            "to_year": args.to_year,
            "years": [args.from_year, args.to_year],
            **sub.attrs,
        }
        if args.threshold is not None:
            attrs["threshold"] = args.threshold
        template = output_template(
            ds,
            variables,
            None,
            chunk_rows=info.chunk_rows,
            chunk_cols=info.chunk_cols,
            product="change",
            attrs=attrs,
            window=sub.window,
        )
        transform = MapChunks(
            embeddings,
            ChangeFunction(args.threshold),
            {0: (info.time_index(args.from_year), info.time_index(args.to_year))},
            tuple(variables),
            timed=False,
            offset=sub.offset,
        )

        def rows(result: product.MapRun) -> list:
            threshold = (
                "none" if args.threshold is None else f"changed = similarity < {args.threshold}"
            )
            return product.summary_rows(
                result,
                info,
                sub,
                [("years", f"{args.from_year} -> {args.to_year}")],
                None,
                ("pixels compared", "pixels_computed"),
                "pixels without data in either year (NaN)",
                [("threshold", threshold)],
            )

        return fanout.Job(
            info,
            template,
            sub.plan([args.to_year]),  # one (y, x) layer
            transform,
            [args.from_year, args.to_year],
            rows,
            "pixels_computed",
            resume_names={"threshold": "--threshold", **subset.RESUME_ATTRS},
            windows_per_chunk=2,
        )

    return fanout.run(
        "efm change",
        args,
        options,
        kind="change",
        inputs={"--embeddings": args.embeddings, "--aoi": args.aoi},
        make_job=make_job,
    )


def parse_year_pair(text: str) -> tuple[int, int]:
    """`--years FROM,TO`: exactly two years (four digits each), the earlier first."""
    parts = [part.strip() for part in str(text).split(",")]
    if len(parts) != 2:
        raise InputError(
            "--years",
            f"expected two years FROM,TO, the earlier first (e.g. 2018,2024), got {text!r}",
        )
    for part in parts:
        if not re.fullmatch(r"\d{4}", part):
            raise InputError(
                "--years",
                f"{part!r} is not a year; expected two years FROM,TO (e.g. 2018,2024), got {text!r}",
            )
    first, last = int(parts[0]), int(parts[1])
    if first == last:
        raise InputError(
            "--years",
            f"both years are {first}; give two different years (e.g. {first},{first + 1})",
        )
    if first > last:
        raise InputError(
            "--years",
            f"{first} is after {last}; give the earlier year first: --years {last},{first}",
        )
    return first, last


REPLACED = ("--from-year", "--to-year")


def refuse_replaced(argv: Sequence[str]) -> None:
    """The two year flags of before (`--from-year 2022 --to-year 2023`): one line with the way to
    say it now, so a script that still passes them is not run on other years."""
    argv = list(argv)
    given: dict[str, str] = {}
    first = None
    for i, token in enumerate(argv):
        flag, equals, value = token.partition("=")
        if flag in REPLACED:
            first = first or flag
            if not equals and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
            given[flag] = value
    if first is not None:
        here = (
            f" (here: --years {given['--from-year']},{given['--to-year']})"
            if given.get("--from-year") and given.get("--to-year")
            else ""
        )
        raise InputError(first, f"replaced by --years FROM,TO{here}")


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm change", main, argv)


if __name__ == "__main__":
    sys.exit(run())
