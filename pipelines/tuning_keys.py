"""Each command's `--tuning` keys (docs/tuning.md lists them; pipelines/tuning.py applies them).

A key replaces a flag of the same name (`chunk_size` was `--chunk-size`): the old flag is
refused with a hint (pipelines/tuning.MOVED). One tuple per command; a command with none has
no --tuning.
"""

from __future__ import annotations

from transforms.core import tuning
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
        "ee_project",
        str,
        None,
        "Cloud project for Earth Engine requests (default: the credentials' project)",
        lambda v: None if v.strip() else "must be a Cloud project id",
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
        "chunk_size",
        int,
        1024,  # pipelines/extract_sizing.py DEFAULT_CHUNK_SIZE (tests/test_surface.py checks)
        "chunk side in pixels, at least 128 (transforms/core/grid.py MIN_CHUNK_SIZE); a multiple "
        "of request_tile_size when that is given",
    ),
    Key(
        "request_tile_size",
        int,
        None,
        "square request tile side in pixels; must divide chunk_size "
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

# the other commands' keys (each command's own tuple; empty = no --tuning)
CHANGE: tuple[Key, ...] = ()
CLUSTER: tuple[Key, ...] = ()
DEMO: tuple[Key, ...] = ()
EXPORT: tuple[Key, ...] = ()
LABEL: tuple[Key, ...] = ()
MAKE_SAMPLE_DATA: tuple[Key, ...] = ()
PREDICT: tuple[Key, ...] = ()
SAMPLE: tuple[Key, ...] = ()
SIMILARITY: tuple[Key, ...] = ()
TRAIN: tuple[Key, ...] = ()
ZONAL: tuple[Key, ...] = ()

# command -> its keys; a command not listed has no --tuning
KEYS: dict[str, tuple[Key, ...]] = {
    name: keys
    for name, keys in {
        "extract": EXTRACT,
        "verify": VERIFY,
        "change": CHANGE,
        "cluster": CLUSTER,
        "demo": DEMO,
        "export": EXPORT,
        "label": LABEL,
        "make-sample-data": MAKE_SAMPLE_DATA,
        "predict": PREDICT,
        "sample": SAMPLE,
        "similarity": SIMILARITY,
        "train": TRAIN,
        "zonal": ZONAL,
    }.items()
    if keys
}
