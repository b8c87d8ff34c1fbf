"""`efm extract`: an area and years -> a Zarr store of the embeddings.

source chunk specs | FetchChunks(EarthEngineSource, CogSource or ZarrSource) | WriteChunks | MarkComplete
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines import common, extract_plan, extract_run, tuning
from pipelines.extract_sizing import (
    DEFAULT_COG_CONCURRENCY,
    DEFAULT_EE_CONCURRENCY,
    block_cache_bytes,
)
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.storage import subset

__all__ = ["block_cache_bytes", "build_parser", "main", "run"]

# one option, three spellings: its meaning follows --source (cog: the mirror's root; zarr: the
# store); --cog-root and --zarr-root say the source too, and are refused with another one
SOURCE_ROOT_FLAGS = ("--source-root", "--cog-root", "--zarr-root")


class _SourceRoot(argparse.Action):
    """`--source-root` (= `--cog-root` = `--zarr-root`): each value with the spelling used, for
    the checks after parsing (`check_source_flags`), which name that spelling."""

    def __call__(self, parser, namespace, value, option_string=None):
        given = list(getattr(namespace, "source_roots", None) or [])
        namespace.source_roots = [*given, (option_string, value)]


def build_parser():
    parser = common.make_parser(
        "efm extract",
        "Extract satellite embedding fields from Earth Engine (or the int8 COG mirror, --source cog, "
        "or a region of a Zarr embedding store, --source zarr) into a Zarr store.",
    )
    subset.add_flags(
        parser,
        required=True,
        help="area: W,S,E,N in degrees (lon/lat), e.g. 5.9,45.8,6.2,46.0, or a vector file "
        "(GeoJSON, GeoPackage, ...); --bbox and --aoi are one option",
    )
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--years", help="years, e.g. 2021,2022 or 2019-2024 (from 2017)")
    when.add_argument(
        "--add-years",
        metavar="YEARS",
        help="years to add after the last of the store at --output",
    )
    parser.add_argument(
        "--output", required=True, metavar="PATH", help="Zarr store to write: local path or gs://"
    )
    parser.add_argument(
        "--source",
        choices=["ee", "cog", "zarr"],
        default="ee",
        help="ee = Earth Engine (default), cog = the int8 COG mirror at --source-root, zarr = a "
        "Zarr embedding store at --source-root",
    )
    parser.add_argument(
        *SOURCE_ROOT_FLAGS,
        action=_SourceRoot,
        dest="source_roots",
        metavar="ROOT",
        help="with --source cog: the mirror's root (aef_index.* + <year>/<zone>/*.tiff); with "
        "--source zarr: the embedding store (AEF mosaic, TESSERA, efm's own); a folder, gs://, "
        "s3://, https://. --cog-root and --zarr-root are its spellings for one source each",
    )
    parser.set_defaults(cog_root=None, zarr_root=None)
    parser.add_argument("--crs", help="target CRS, e.g. EPSG:32631 (default: the area's UTM zone)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "int8"],
        default="float32",
        help="float32 (NaN no-data, default) or int8 codes (-128 no-data)",
    )
    tuning.add_flag(parser, "extract")
    mode = parser.add_mutually_exclusive_group()
    common.add_resume(mode, "fetch and write only the missing chunks")
    common.add_overwrite(mode)
    parser.add_argument(
        "--repair",
        action="store_true",
        help="with --resume: also refetch the chunks `efm verify` reports damaged",
    )
    # --dry_run too: Beam has a --dry_run test option that would otherwise take it silently.
    common.add_dry_run(
        parser, "check every input, print the plan; write nothing", beam_spelling=True
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="run a job past the size threshold (README: Plan and size)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, options = common.split_args(build_parser(), argv)
    # 1. Local checks: cheap, no network.
    aoi = gridlib.parse_bbox(args.bbox) if args.bbox else gridlib.read_aoi(args.aoi)
    adding = args.add_years is not None
    if adding:
        if args.overwrite:
            raise InputError(
                "--add-years",
                "adds years to the store at --output, --overwrite would replace it: pass one",
            )
        gridlib.parse_years(args.add_years, flag="--add-years")
    else:
        gridlib.parse_years(args.years)
    if args.repair and not args.resume:
        raise InputError(
            "--repair", "only with --resume: add --resume to refetch the damaged chunks of a store"
        )
    if args.max_concurrent_requests is None:
        args.max_concurrent_requests = (
            DEFAULT_EE_CONCURRENCY if args.source == "ee" else DEFAULT_COG_CONCURRENCY
        )
    gridlib.check_chunk_size(args.chunk_size, args.request_tile_size)
    check_source_flags(args)
    from pipelines import extract_zones  # (it composes this module's steps)

    if extract_zones.wants_collection(args, aoi):  # one store per UTM zone
        return extract_zones.run(args, options, aoi)
    run = extract_plan.plan_store(args, options, aoi)
    rows, job = run.rows, run.job
    if args.dry_run:
        common.print_summary(
            f"efm extract: plan for {args.output} (dry run: nothing written)", rows
        )
        if job.too_big():  # the dry run of a job the real run refuses says so
            print(
                f"efm extract: a large job ({'; '.join(job.too_big())}): the real run needs --yes"
            )
        return 0
    common.print_summary(f"efm extract: plan for {args.output}", rows)
    if job.too_big() and not args.yes:
        raise InputError(
            "--yes",
            f"a large job ({'; '.join(job.too_big())}): read the plan above, then run again with --yes "
            "(or make the area or years smaller, or the pixels larger: --tuning scale=...)",
        )
    extract_run.run_store(run)
    return 0


def check_source_flags(args) -> None:
    """Each source's own flags, and only with it (local checks: nothing is read yet); then
    `args.cog_root` / `args.zarr_root` hold --source-root for the source that reads it."""
    given = args.source_roots or []
    for spelling, _ in given:  # a spelling that names another source than --source
        if spelling == "--cog-root" and args.source != "cog":
            raise InputError(
                "--cog-root", "only used with --source cog; add --source cog to read the COG mirror"
            )
        if spelling == "--zarr-root" and args.source != "zarr":
            raise InputError(
                "--zarr-root",
                "only used with --source zarr; add --source zarr to copy from a store",
            )
    if len(given) > 1:
        raise InputError(
            given[1][0],
            f"the source root is given twice ({given[0][0]} before); give one --source-root "
            "(or --cog-root / --zarr-root)",
        )
    spelling, root = given[0] if given else (None, None)
    if root is not None and args.source == "ee":
        raise InputError(
            spelling,
            "only used with --source cog or zarr (Earth Engine needs no root); add --source cog "
            "to read the COG mirror or --source zarr to copy from a store",
        )
    # no root: named with the source's own spelling, as before --source-root (scripts match it)
    if args.source == "zarr" and not root:
        raise InputError(
            "--zarr-root",
            "--source zarr needs --zarr-root (or --source-root): the embedding store to copy "
            "from (path or URL)",
        )
    if args.source == "cog" and not root:
        raise InputError(
            "--cog-root",
            "--source cog needs --cog-root (or --source-root): the mirror's root folder or "
            "gs:// path",
        )
    args.cog_root = root if args.source == "cog" else None
    args.zarr_root = root if args.source == "zarr" else None
    if args.source != "zarr" and args.grid:
        raise InputError(
            "--tuning",
            "grid: only used with --source zarr; add --source zarr to copy from a store",
        )


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm extract", main, argv)


if __name__ == "__main__":
    sys.exit(run())
