"""Each command's tuning keys (`--tuning KEY=VALUE,...`; docs/tuning.md lists them), and the flags
they replace: an old knob flag is refused with one line saying where it went, so a script that
still passes it does not silently run with the default.

The keys land on the parsed arguments under their own names (`args.max_retries`), so the code
after parsing reads them as it read the flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from transforms.core import tuning
from transforms.core.errors import InputError
from transforms.core.tuning import Key


def _positive_integer(value) -> str | None:
    return None if value > 0 else "must be a positive integer"


def _positive_number(value) -> str | None:
    return None if tuning.positive(value) is None else "must be a positive number"


# tests/test_surface.py checks these against transforms/sources/earthengine.py and
# transforms/storage/zarr_source.py (not imported here: every command imports this module)
EE_COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
EE_HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
ZARR_GRIDS = ("source", "utm")

EXTRACT = (
    Key(
        "collection",
        str,
        EE_COLLECTION,
        "Earth Engine image collection id (the satellite embedding)",
        lambda v: None if v.strip() else "must be a collection id",
    ),
    Key(
        "ee_api_url",
        str,
        EE_HIGH_VOLUME_URL,
        "Earth Engine API base URL (the high-volume endpoint)",
        lambda v: None if v.strip() else "must be a URL",
    ),
    Key(
        "scale",
        float,
        None,
        "pixel size in CRS units (default: 10; with --source zarr and grid=source, the store's)",
        lambda v: None if tuning.positive(v) is None else "must be a positive number of CRS units",
    ),
    Key(
        "grid",
        str,
        None,
        "with --source zarr: source = the store's own pixels (default in a projected CRS); utm = "
        "the --crs / scale grid, nearest pixel (default in degrees or with --crs or scale)",
        choices=ZARR_GRIDS,
    ),
    Key(
        "split_zones",
        bool,
        False,
        "one store per UTM zone + an index even when one zone holds the area (without it: "
        "only when no one zone holds the area)",
    ),
    Key(
        "request_tile_size",
        int,
        None,
        "square request tile side in pixels; must divide --chunk-size "
        "(default: the fewest requests that fit one request's 48 MiB)",
        _positive_integer,
    ),
    Key(
        "transfer_dtype",
        str,
        "auto",
        "dtype on the wire: int8 quantises on the server (lossless for the embedding collection, "
        "4x fewer requests); auto = int8 for the embedding collection, float32 otherwise",
        choices=("auto", "int8", "float32"),
    ),
    Key(
        "max_concurrent_requests",
        int,
        None,
        "cap on Earth Engine requests in flight across all workers of the job (default 40, the "
        "per-project quota); with --source cog or zarr, reads in flight on this machine (default 8)",
        _positive_integer,
    ),
    Key(
        "max_requests_per_second",
        float,
        100.0,
        "cap on requests per second across all workers",
        _positive_number,
    ),
    Key(
        "threads_per_worker",
        int,
        None,
        "request threads per shard; with --source cog or zarr, reads in flight per worker "
        "(default: the cap split over local workers; on Dataflow 10, or 8 with --source cog or zarr)",
        _positive_integer,
    ),
    Key(
        "worker_memory_gb",
        float,
        2.0,  # pipelines/extract_sizing.py DEFAULT_WORKER_MEMORY_GB (tests/test_surface.py checks)
        "memory one worker process may use (locally: this machine's share for the whole run); "
        "sets how many chunks a process holds while they are fetched",
        _positive_number,
    ),
    Key(
        "max_retries",
        int,
        8,
        "retries per request on 429/5xx/timeouts (0 = give up at the first failure)",
        lambda v: None if v >= 0 else "must be 0 or more (0 = give up at the first failure)",
    ),
    Key(
        "retry_initial_delay",
        float,
        1.0,
        "first backoff in seconds, doubled each retry, with jitter",
        lambda v: (
            None if tuning.positive(v) is None else "must be a positive number of seconds (e.g. 1)"
        ),
    ),
)

VERIFY = (
    Key(
        "threads",
        int,
        4,
        "chunks read and decoded at once (memory: one chunk each)",
        _positive_integer,
    ),
)

# command -> its keys; a command not listed has no --tuning
KEYS: dict[str, tuple[Key, ...]] = {"extract": EXTRACT, "verify": VERIFY}

# the flags the keys replace (refused with a hint): command -> {old flag: key}
MOVED: dict[str, dict[str, str]] = {
    "extract": {f"--{key.name.replace('_', '-')}": key.name for key in EXTRACT},
    "verify": {"--threads": "threads"},
}


def add_flag(parser: argparse.ArgumentParser, command: str) -> None:
    """`--tuning` on a command's parser (its keys are recorded on the parser for `apply`)."""
    keys = KEYS[command]
    action = parser.add_argument(
        "--tuning",
        action="append",
        metavar="KEY=VALUE,...",
        help=f"rarely needed knobs, or @file.toml: {', '.join(k.name for k in keys)} "
        "(docs/tuning.md)",
    )
    # one flag with one syntax in every command (its keys differ): counted once in the surface,
    # like pipelines/common.py's run-control flags (the same mark; common imports this module)
    action.efm_shared = True  # type: ignore[attr-defined]
    parser.set_defaults(_efm_tuning_command=command)


def command_of(parser: argparse.ArgumentParser) -> str | None:
    return parser.get_default("_efm_tuning_command")


def refuse_moved(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """An old knob flag (`--max-retries 3`): one line naming where it went."""
    command = command_of(parser) or ""
    moved = MOVED.get(command, {})
    switches = {key.name for key in KEYS.get(command, ()) if key.kind is bool}
    argv = list(argv)
    for i, token in enumerate(argv):
        flag, equals, value = token.partition("=")
        if flag in moved:
            key = moved[flag]
            if key in switches:  # it was a switch (`--split-zones`): no value of its own
                value = "true"
            elif not equals and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
            raise InputError(
                flag,
                f"moved: use --tuning {key}={value or '...'} (rarely needed knobs are "
                "--tuning keys: docs/tuning.md)",
            )


def apply(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--tuning's texts -> one attribute per key on `args` (the default where not given)."""
    command = command_of(parser)
    if command is None:
        return
    keys = {key.name: key for key in KEYS[command]}
    values = tuning.parse(args.tuning, keys, prog=parser.prog)
    for name, value in values.items():
        setattr(args, name, value)
    del args._efm_tuning_command
