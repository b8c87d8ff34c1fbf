"""`efm extract`'s sizing: how many chunks a process holds, its block cache, what is in flight,
from the worker_memory_gb tuning key and the runner (README: what memory a run needs and why)."""

from __future__ import annotations

import math

from apache_beam.options.pipeline_options import DirectOptions

from pipelines import common
from transforms.core.errors import InputError
from transforms.sources import cog, earthengine, fetch_bounds
from transforms.sources import extract_plan as planlib

DEFAULT_CHUNK_SIZE = 1024
COG_NEIGHBOURHOOD_CHUNKS = (
    4  # --source cog: chunks fetched together, 4 x 4 (they share the files' blocks)
)
DEFAULT_EE_CONCURRENCY = 40  # Earth Engine's concurrent-request quota per project
DEFAULT_COG_CONCURRENCY = 8  # window reads: CPU- and memory-bound, not quota-bound
DEFAULT_THREADS_DISTRIBUTED = 10  # request threads per shard on Dataflow: 4 shards share the 40
DEFAULT_WORKER_MEMORY_GB = (
    2.0  # fits an n1-standard-1 (3.75 GB) with room for the OS and the SDK harness
)


def band_count(args) -> int:
    """Bands of the store this run writes: the source store's with --source zarr, else the 64."""
    layout = getattr(args, "zarr_layout", None)
    return len(layout.bands) if layout is not None else len(earthengine.EMBEDDING_BANDS)


def open_chunk_limit(args, options) -> int:
    """Chunks a process may hold, from worker_memory_gb (README: what memory a run needs and why)."""
    chunk_bytes = args.chunk_size**2 * band_count(args) * (1 if args.dtype == "int8" else 4)
    processes = memory_processes(options)
    cache = block_cache_bytes(args, processes)
    limit = fetch_bounds.max_open_chunks(
        args.worker_memory_gb * 2**30, chunk_bytes, processes, extra_bytes=cache
    )
    if limit < 1:
        need = (
            (fetch_bounds.PROCESS_BASE_BYTES + cache + fetch_bounds.CHUNK_COST_FACTOR * chunk_bytes)
            * processes
            / 2**30
        )
        each = fetch_bounds.CHUNK_COST_FACTOR * chunk_bytes / 2**20
        raise InputError(
            "--tuning",
            f"worker_memory_gb: {args.worker_memory_gb:g} GB cannot hold one {args.chunk_size} px {args.dtype} chunk ({each:.0f} MiB with its "
            f"requests, plus {(fetch_bounds.PROCESS_BASE_BYTES + cache) / 2**30:.2g} GiB per process{' with its cache of decoded blocks' if cache else ''}, {processes} process(es)); pass --tuning worker_memory_gb={math.ceil(need * 10) / 10:g} or more, or a smaller chunk_size",
        )
    return limit


def memory_processes(options) -> int:
    """Processes sharing worker_memory_gb: locally the budget is the machine's; on Dataflow one worker process's."""
    workers = common.local_workers(options)
    return (
        workers
        if workers and options.view_as(DirectOptions).direct_running_mode == "multi_processing"
        else 1
    )


def block_cache_bytes(args, processes: int) -> int:
    """--source cog/zarr: decoded blocks (a store's inner chunks) a process keeps (cog_blocks):
    what its memory share has left once it holds two open chunks (so reads still overlap), at
    most cog.BLOCK_CACHE_BYTES."""
    if args.source not in ("cog", "zarr"):
        return 0
    chunk_bytes = args.chunk_size**2 * band_count(args) * (1 if args.dtype == "int8" else 4)
    spare = (
        args.worker_memory_gb * 2**30 / max(1, processes)
        - fetch_bounds.PROCESS_BASE_BYTES
        - 2 * fetch_bounds.CHUNK_COST_FACTOR * chunk_bytes
    )
    return int(min(cog.BLOCK_CACHE_BYTES, max(0, spare)))


def requests_in_flight(args, options, open_chunks: int, itemsize: int) -> int:
    """What a run keeps in flight: the cap, or fewer when memory bounds the chunks held open
    (only the requests of open chunks go out). Locally one budget per process; on Dataflow one per shard."""
    workers = common.local_workers(options)
    if workers:
        holders = (
            workers
            if options.view_as(DirectOptions).direct_running_mode == "multi_processing"
            else 1
        )
    else:
        holders = fetch_bounds.shard_count(
            args.max_concurrent_requests, args.threads_per_worker or DEFAULT_THREADS_DISTRIBUTED
        )
    per_chunk = planlib.requests_per_chunk(
        args.chunk_size,
        args.chunk_size,
        band_count(args),
        itemsize,
        args.request_tile_size,
    )
    return max(1, min(args.max_concurrent_requests, holders * open_chunks * per_chunk))
