"""`efm extract`: an area and years -> a Zarr store of the embeddings.

source chunk specs | FetchChunks(EarthEngineSource, CogSource or ZarrSource) | WriteChunks | MarkComplete
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import uuid
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions

from pipelines import common
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.core.metrics import coverage_warning, metric_max, metric_range, metric_totals
from transforms.sources import cog, cog_index, earthengine, request_plan
from transforms.sources import fetch as fetchlib
from transforms.sources.fetch import FetchChunks, RetryPolicy
from transforms.sources.zone_mask import ZoneMask
from transforms.storage import integrity, outputs, progress, store, zarr_source
from transforms.storage import plan as planlib

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


def build_parser():
    parser = common.make_parser(
        "efm extract",
        "Extract satellite embedding fields from Earth Engine (or the int8 COG mirror, --source cog, "
        "or a region of a Zarr embedding store, --source zarr) into a Zarr store.",
    )
    area = parser.add_mutually_exclusive_group(required=True)
    area.add_argument("--bbox", help="area as W,S,E,N in degrees (lon/lat), e.g. 5.9,45.8,6.2,46.0")
    area.add_argument(
        "--aoi",
        help="area as a vector file (GeoJSON, GeoPackage, Shapefile, ...); chunks that miss it are not requested",
    )
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--years", help="years, e.g. 2021,2022 or 2019-2024 (from 2017)")
    when.add_argument(
        "--add-years",
        help="instead of --years: years to add to the existing store at --output, after its last "
        "year; only they are fetched (the other flags as the store was made)",
    )
    parser.add_argument(
        "--output", required=True, help="Zarr store to write: a local path or gs://bucket/path"
    )
    parser.add_argument(
        "--source",
        choices=["ee", "cog", "zarr"],
        default="ee",
        help="where to read: ee = Earth Engine, cog = the int8 COG mirror at --cog-root, zarr = a "
        "Zarr embedding store at --zarr-root (default: %(default)s)",
    )
    parser.add_argument(
        "--cog-root",
        help="with --source cog: the mirror's root (local folder, gs://, s3:// or https:// URL) holding aef_index.parquet|.gpkg|.csv and <year>/<zone>/<name>.tiff",
    )
    parser.add_argument(
        "--zarr-root",
        help="with --source zarr: an embedding store (the public AEF mosaic, a TESSERA zone group, "
        "any convention store, efm's own): local path, s3://, gs:// or https:// URL",
    )
    parser.add_argument(
        "--grid",
        choices=list(zarr_source.GRIDS),
        help="with --source zarr: source = the store's own pixels, copied (default for a store in a "
        "projected CRS); utm = the grid --crs/--scale plan, default the area's UTM zone at 10 m, "
        "nearest source pixel (default for a store in degrees, or with --crs or --scale)",
    )
    parser.add_argument(
        "--collection",
        default=earthengine.DEFAULT_COLLECTION,
        help="Earth Engine image collection (default: %(default)s)",
    )
    parser.add_argument(
        "--split-zones",
        action="store_true",
        help="write a collection: one store per UTM zone the area touches, plus an index "
        "(the default for an area no one zone holds; README: Continent)",
    )
    parser.add_argument(
        "--crs", help="target CRS, e.g. EPSG:32631 (default: the UTM zone of the area's centre)"
    )
    parser.add_argument("--scale", type=float, help="pixel size in CRS units (default: 10)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help="chunk side in pixels (default: %(default)s)",
    )
    parser.add_argument(
        "--request-tile-size",
        type=int,
        help="square request tile side in pixels; must divide --chunk-size (default: the fewest requests that fit)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "int8"],
        default="float32",
        help="store dtype: float32 (NaN no-data) or int8 codes (-128 no-data) (default: %(default)s)",
    )
    parser.add_argument(
        "--transfer-dtype",
        choices=["auto", "int8", "float32"],
        default="auto",
        help="dtype on the wire: int8 quantises on the server (lossless for the embedding collection, 4x fewer requests); auto = int8 for the embedding collection, float32 otherwise",
    )
    parser.add_argument(
        "--ee-project",
        help="Google Cloud project for Earth Engine requests (default: from the credentials)",
    )
    parser.add_argument(
        "--ee-api-url",
        default=earthengine.HIGH_VOLUME_URL,
        help="Earth Engine API base URL (default: the high-volume endpoint %(default)s)",
    )
    parser.add_argument(
        "--max-concurrent-requests",
        type=int,
        help="cap on Earth Engine requests in flight across all workers of this job "
        "(default: 40, the per-project quota); with --source cog or zarr, reads in flight on this machine (default 8; on Dataflow see --threads-per-worker)",
    )
    parser.add_argument(
        "--max-requests-per-second",
        type=float,
        default=100.0,
        help="cap on requests per second across all workers (default: %(default)s)",
    )
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        help="request threads per shard; with --source cog or zarr, reads in flight per worker (default: the cap split over local workers; on Dataflow 10, or 8 with --source cog or zarr)",
    )
    parser.add_argument(
        "--worker-memory-gb",
        type=float,
        default=DEFAULT_WORKER_MEMORY_GB,
        help="memory one worker process may use (locally: this machine's share for the whole run); sets how many chunks "
        "a process holds while they are fetched (default: %(default)s)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=8,
        help="retries per request on 429/5xx/timeouts (default: %(default)s)",
    )
    parser.add_argument(
        "--retry-initial-delay",
        type=float,
        default=1.0,
        help="first backoff in seconds, doubled each retry, with jitter (default: %(default)s)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted run: fetch and write only the missing chunks",
    )
    mode.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--repair",
        action="store_true",
        help="with --resume: also refetch the chunks marked written whose file is missing, altered or does "
        "not decode (what `efm verify` reports); every other chunk is left as it is",
    )
    # --dry_run too: Beam has a --dry_run test option that would otherwise take it silently.
    parser.add_argument(
        "--dry-run",
        "--dry_run",
        dest="dry_run",
        action="store_true",
        help="check every input, print the plan (chunks, requests, bytes, store size, time) and stop: nothing is written",
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="run a job past the size threshold (see the README, 'Plan and size') after reading its plan",
    )
    return parser


def band_count(args) -> int:
    """Bands of the store this run writes: the source store's with --source zarr, else the 64."""
    layout = getattr(args, "zarr_layout", None)
    return len(layout.bands) if layout is not None else len(earthengine.EMBEDDING_BANDS)


def _check_positive(flag: str, value, kind=int):
    if value is not None and not value > 0:
        raise InputError(
            flag, f"must be a positive {'integer' if kind is int else 'number'}, got {value}"
        )


def open_chunk_limit(args, options) -> int:
    """Chunks a process may hold, from --worker-memory-gb (README: what memory a run needs and why)."""
    chunk_bytes = args.chunk_size**2 * band_count(args) * (1 if args.dtype == "int8" else 4)
    processes = memory_processes(options)
    cache = block_cache_bytes(args, processes)
    limit = fetchlib.max_open_chunks(
        args.worker_memory_gb * 2**30, chunk_bytes, processes, extra_bytes=cache
    )
    if limit < 1:
        need = (
            (fetchlib.PROCESS_BASE_BYTES + cache + fetchlib.CHUNK_COST_FACTOR * chunk_bytes)
            * processes
            / 2**30
        )
        each = fetchlib.CHUNK_COST_FACTOR * chunk_bytes / 2**20
        raise InputError(
            "--worker-memory-gb",
            f"{args.worker_memory_gb:g} GB cannot hold one {args.chunk_size} px {args.dtype} chunk ({each:.0f} MiB with its "
            f"requests, plus {(fetchlib.PROCESS_BASE_BYTES + cache) / 2**30:.2g} GiB per process{' with its cache of decoded blocks' if cache else ''}, {processes} process(es)); pass --worker-memory-gb {math.ceil(need * 10) / 10:g} or more, or a smaller --chunk-size",
        )
    return limit


def memory_processes(options) -> int:
    """Processes sharing --worker-memory-gb: locally the budget is the machine's; on Dataflow one worker process's."""
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
        - fetchlib.PROCESS_BASE_BYTES
        - 2 * fetchlib.CHUNK_COST_FACTOR * chunk_bytes
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
        holders = fetchlib.shard_count(
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
    for flag, value in [
        ("--max-concurrent-requests", args.max_concurrent_requests),
        ("--threads-per-worker", args.threads_per_worker),
        ("--request-tile-size", args.request_tile_size),
    ]:
        _check_positive(flag, value)
    _check_positive("--max-requests-per-second", args.max_requests_per_second, float)
    _check_positive("--worker-memory-gb", args.worker_memory_gb, float)
    if args.repair and not args.resume:
        raise InputError(
            "--repair", "only with --resume: add --resume to refetch the damaged chunks of a store"
        )
    if args.max_retries < 0:
        raise InputError(
            "--max-retries",
            f"must be 0 or more (0 = give up at the first failure), got {args.max_retries}",
        )
    if not 0 < args.retry_initial_delay < float("inf"):
        raise InputError(
            "--retry-initial-delay",
            f"must be a positive number of seconds (e.g. 1), got {args.retry_initial_delay}",
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
    run = plan_store(args, options, aoi)
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
            "(or make the area, years or --scale smaller)",
        )
    run_store(run)
    return 0


@dataclasses.dataclass
class StoreRun:
    """One store's run, planned: what `run_store` needs (the checks are done, nothing written)."""

    args: object
    options: object
    aoi: object  # lon/lat
    output: str
    grid: gridlib.Grid
    years: list
    bands: tuple
    itemsize: int
    transfer_dtype: str
    template: object
    plan: planlib.ChunkPlan
    adding: bool
    damaged: set
    job: planlib.JobPlan
    rows: list
    open_chunks: int
    mirror_index: object
    settings: object
    cell: object = None  # a collection member's zone: pixels outside it are no data


def plan_store(args, options, aoi, *, cell=None) -> StoreRun:
    """Check the sources and the output, and plan the store (nothing is written)."""
    adding = args.add_years is not None
    added = gridlib.parse_years(args.add_years, flag="--add-years") if adding else None
    years = None if adding else gridlib.parse_years(args.years)
    mirror_index = None
    grid_rule = None
    if adding:  # the store's years, and the years after the add (README: adding years)
        found = outputs.check_output(
            args.output,
            "embeddings",
            inputs={"--cog-root": args.cog_root, "--zarr-root": args.zarr_root, "--aoi": args.aoi},
            resume=True,
        )
        if found.kind is None:
            raise InputError(
                "--add-years",
                f"no store at {args.output}: --add-years adds years to a store `efm extract` "
                "made; make it with --years",
            )
        had, years = store.years_to_add(
            found.path or outputs.resolve(args.output), added, resume=args.resume
        )
    args.zarr_layout = None
    if args.source == "zarr":  # the store's metadata: its bands, dtype and grid plan the run
        args.zarr_layout = zarr_source.describe(args.zarr_root)
        with _years_flag(adding):
            zarr_source.check_years(args.zarr_layout, years)
        zarr_source.check_dtype(args.zarr_layout, args.dtype)
        grid, aoi_in_crs, grid_rule = zarr_source.choose_grid(
            args.zarr_layout,
            aoi,
            args.grid,
            args.crs,
            args.scale,
            area_flag="--bbox" if args.bbox else "--aoi",
        )
    else:
        grid, aoi_in_crs = gridlib.plan_grid(
            aoi, args.crs, 10.0 if args.scale is None else args.scale
        )
    open_chunks = open_chunk_limit(args, options)
    if args.source == "cog" and not args.cog_root:
        raise InputError(
            "--cog-root", "--source cog needs --cog-root: the mirror's root folder or gs:// path"
        )
    if args.source != "cog" and args.cog_root:
        raise InputError(
            "--cog-root", "only used with --source cog; add --source cog to read the COG mirror"
        )
    if args.source == "zarr":
        itemsize = zarr_source.transfer_itemsize(args.zarr_layout)
        transfer_dtype = "int8" if itemsize == 1 else "float32"
        bands = args.zarr_layout.bands
    else:
        transfer_dtype = "int8" if args.source == "cog" else args.transfer_dtype
        if transfer_dtype == "auto":
            transfer_dtype = (
                "int8" if args.collection == earthengine.DEFAULT_COLLECTION else "float32"
            )
        itemsize = 1 if transfer_dtype == "int8" else 4
        bands = earthengine.EMBEDDING_BANDS
    if args.request_tile_size:
        request_plan.check_request_tile_size(args.request_tile_size, len(bands), itemsize)
    found = outputs.check_output(
        args.output,
        "embeddings",
        inputs={"--cog-root": args.cog_root, "--zarr-root": args.zarr_root, "--aoi": args.aoi},
        resume=args.resume or adding,
        overwrite=args.overwrite,
    )
    output = found.path or outputs.resolve(args.output)  # where it really is: written there all run

    # 2. Source checks: Earth Engine credentials, collection, years; or the mirror's index, years, coverage.
    settings = earthengine.EarthEngineSettings(project=args.ee_project, api_url=args.ee_api_url)
    if args.source == "cog":
        with _years_flag(adding):
            mirror_index = cog_index.check_cog_root(args.cog_root, years, aoi)
    elif args.source == "ee":
        earthengine.initialize(settings)
        with _years_flag(adding):
            earthengine.check_collection(args.collection, years)
            images_record = earthengine.check_coverage(args.collection, years, aoi)

    # 3. Plan: counts and sizes by arithmetic; a big job stops here unless --yes; a dry run always does.
    plan = planlib.ChunkPlan.for_area(grid, args.chunk_size, years, aoi_in_crs)
    # What the store records about its source: where it is and a fingerprint of what was read
    # (README: what --resume checks).
    if args.source == "cog":
        source_attrs = cog.store_attrs(args.cog_root, mirror_index)
    elif args.source == "zarr":
        source_attrs = zarr_source.store_attrs(
            args.zarr_root, args.zarr_layout, grid_rule, args.dtype
        )
    else:
        source_attrs = {
            "source": f"earthengine:{args.collection}",
            **images_record,
            "transfer_dtype": transfer_dtype,
        }
    skipped = plan.touched.size - plan.per_year
    template = store.embedding_template(
        grid, years, bands, args.dtype, args.chunk_size, {**source_attrs, "skipped_chunks": skipped}
    )
    if adding:  # the place check over the store's own years (their source record included)
        if args.source == "cog":
            had_attrs = cog.store_attrs(
                args.cog_root, cog_index.check_cog_root(args.cog_root, had, aoi)
            )
        elif args.source == "ee":
            had_attrs = {**source_attrs, **earthengine.check_coverage(args.collection, had, aoi)}
        else:
            had_attrs = source_attrs
        store.check_add(
            output,
            store.embedding_template(
                grid,
                had,
                bands,
                args.dtype,
                args.chunk_size,
                {**had_attrs, "skipped_chunks": skipped},
            ),
        )
    if (
        args.resume and found.kind is not None
    ):  # a store in another place is refused before a plan (or dry run) counts its chunks as done
        if not adding:
            store.check_resume(output, template)
        damaged = damaged_chunks(args)
    else:
        damaged = set()
    # Every run shows its plan first (a 48 GB area must not start without a word).
    already = (
        store.done_markers(output) - damaged if args.resume and store.exists(output) else set()
    )
    in_flight = requests_in_flight(args, options, open_chunks, itemsize)
    # --add-years: the plan shown is the added years' (the store's own years are done)
    first = years.index(min(added)) if adding else 0
    shown = (
        planlib.ChunkPlan.for_area(grid, args.chunk_size, years[first:], aoi_in_crs)
        if adding
        else plan
    )
    job = planlib.estimate(
        shown,
        n_bands=len(bands),
        transfer_itemsize=itemsize,
        store_dtype=args.dtype,
        tile_size=args.request_tile_size,
        done=sum(1 for m in plan.markers() if m in already and int(m.split(".")[0]) >= first)
        if already
        else 0,
        max_concurrent=in_flight,
        max_requests_per_second=args.max_requests_per_second,
    )
    rows = planlib.summary_rows(
        job,
        grid,
        years[first:],
        transfer_dtype=transfer_dtype,
        store_dtype=args.dtype,
        max_concurrent=in_flight,
        quota=args.source == "ee",
        source_name="Zarr store" if args.source == "zarr" else "COG mirror",
    )
    if adding:
        rows.insert(
            0,
            (
                "adding years",
                f"{', '.join(map(str, years[first:]))} after the store's "
                f"{', '.join(map(str, years[:first])) or 'none'} (their files are left as they are)",
            ),
        )
    if args.source == "zarr":
        rows.insert(1, ("source grid", grid_row(args.zarr_layout, grid_rule)))
    if args.source == "ee" and in_flight < args.max_concurrent_requests:
        rows.append(
            (
                "requests in flight",
                f"{in_flight} of the cap's {args.max_concurrent_requests}: --worker-memory-gb {args.worker_memory_gb:g} holds "
                f"{open_chunks} open chunk(s) per process; more memory buys speed (README: what memory a run needs)",
            )
        )
    if damaged:
        rows.append(("chunks to repair (refetched)", len(damaged)))
    return StoreRun(
        args,
        options,
        aoi,
        output,
        grid,
        years,
        tuple(bands),
        itemsize,
        transfer_dtype,
        template,
        plan,
        adding,
        damaged,
        job,
        rows,
        open_chunks,
        mirror_index,
        settings,
        cell,
    )


def _setup(run: StoreRun, run_token: str | None = None):
    """The first write of a store's run: set it up (or reopen it); its chunks to do, its fetch."""
    args, options, output, grid, years = run.args, run.options, run.output, run.grid, run.years
    if (
        run.damaged
    ):  # --repair: the damaged chunks are not done any more (incomplete until they are)
        store.drop_markers(output, run.damaged)
    if run.adding:  # the time axis grows (marked incomplete until the new years are written)
        store.add_years(output, run.template)
        done = store.done_markers(output)
    else:
        done = store.prepare(output, run.template, resume=args.resume, overwrite=args.overwrite)
    todo = list(run.plan.rows(done))  # one small element per (year, chunk row): workers expand them
    cache = block_cache_bytes(args, memory_processes(options))
    if args.source == "zarr":
        source = zarr_source.make_source(
            grid,
            years,
            args.zarr_layout,
            args.dtype,
            args.request_tile_size,
            block_cache_bytes=cache,
        )
    elif args.source == "cog":
        source = cog.make_source(
            grid,
            years,
            run.bands,
            args.dtype,
            args.cog_root,
            run.mirror_index,
            args.request_tile_size,
            block_cache_bytes=cache,
            run_token=run_token,
        )
    else:
        source = earthengine.EarthEngineSource(
            grid=grid,
            years=tuple(years),
            bands=run.bands,
            store_dtype=args.dtype,
            transfer_itemsize=run.itemsize,
            request_tile_size=args.request_tile_size,
            collection=args.collection,
            settings=run.settings,
            transfer_dtype=run.transfer_dtype,
        )
    if run.cell is not None:  # a collection member: pixels wholly outside its zone are no data
        source = ZoneMask(source, grid, run.cell)
    workers = common.local_workers(options)
    distributed_threads = (
        DEFAULT_THREADS_DISTRIBUTED if args.source == "ee" else DEFAULT_COG_CONCURRENCY
    )  # cog, zarr: per worker, no global cap
    threads = args.threads_per_worker or (
        max(1, args.max_concurrent_requests // workers) if workers else distributed_threads
    )
    fetch = FetchChunks(
        source,
        max_concurrent_requests=args.max_concurrent_requests,
        max_requests_per_second=args.max_requests_per_second,
        threads_per_worker=threads,
        retry=RetryPolicy(max_retries=args.max_retries, initial_delay_s=args.retry_initial_delay),
        max_open_chunks=run.open_chunks,
        global_cap=args.source == "ee",
        output=output,
        neighbourhood=0 if args.source == "ee" else COG_NEIGHBOURHOOD_CHUNKS * args.chunk_size,
    )
    return todo, fetch


def run_store(run: StoreRun, *, progress_base: tuple[int, int] | None = None) -> None:
    """One store: set up (or reopen) the store and run its pipeline."""
    run_stores([run], progress_base=progress_base)


def run_stores(runs: list[StoreRun], *, progress_base: tuple[int, int] | None = None) -> None:
    """Stores written by ONE pipeline (a collection's stores read from a source without a quota:
    one start-up, and the workers move from zone to zone without waiting). `progress_base`:
    chunks done in stores run before, and the total, for one progress line over a collection.
    Memory stays per process: the stores' fetches share the process's open-chunk slots and block
    cache (fetch.OpenChunks, cog_blocks: one per process and size)."""
    first = runs[0]
    args, options = first.args, first.options
    token = uuid.uuid4().hex  # one for the run's sources: they share decoded blocks
    setups = [_setup(r, token) for r in runs]
    todo_count = sum(stop - start for todo, _ in setups for row in todo for start, stop in row.runs)
    planned = sum(r.plan.count for r in runs)

    def build(pipeline: beam.Pipeline) -> None:
        for r, (todo, fetch) in zip(runs, setups):
            name = "" if len(runs) == 1 else f"{r.cell.name}/"
            written = (
                pipeline
                | f"{name}ChunkRows" >> beam.Create(todo)
                | f"{name}ChunkSpecs" >> beam.FlatMap(r.plan.expand)
                | f"{name}Fetch" >> fetch
                | f"{name}Write" >> store.WriteChunks(r.output, r.template)
            )
            # the plan iterates its markers: no list
            written | f"{name}MarkComplete" >> store.MarkComplete(r.output, r.plan)

    chunk_bytes = (
        sum(r.grid.width * r.grid.height for r in runs)
        / max(1, sum(r.plan.touched.size for r in runs))
        * len(first.bands)
        * (1 if args.dtype == "int8" else 4)
    )
    before, total = progress_base or (0, planned)
    workers = common.local_workers(options)
    watch = progress.Progress(
        "efm extract",
        lambda: before + sum(len(store.done_markers(r.output)) for r in runs),
        total,
        already=before + planned - todo_count,
        bytes_per_unit=chunk_bytes,
        enabled=workers is not None and not common.detached(options),
    )
    with common.Stopwatch() as clock, watch:
        result = common.run_pipeline(build, options)
    totals = metric_totals(result)
    # Bytes the sources read, not the area's pixels: the mirror's compressed blocks, EE's bodies.
    megabytes = totals.get("bytes", 0) / 1e6
    read_label = {
        "cog": "compressed blocks read from the mirror's files",
        "zarr": f"inner chunks decoded from the store, {first.transfer_dtype}",
    }.get(args.source, f"computePixels response bodies, {first.transfer_dtype}")
    fetch = setups[0][1]
    common.print_summary(
        f"efm extract: {args.output if len(runs) == 1 else ', '.join(r.output for r in runs)} complete",
        [
            *(
                (
                    "grid" if len(runs) == 1 else f"grid {r.cell.name}",
                    f"{r.grid.width} x {r.grid.height} px at {r.grid.scale:g} in {r.grid.crs}, "
                    f"{len(r.years)} year(s)",
                )
                for r in runs
            ),
            ("chunks planned", planned),
            ("chunks skipped (outside the AOI)", sum(r.plan.skipped for r in runs)),
            ("chunks already done (resume)", planned - todo_count),
            ("chunks written", totals.get("chunks_written", 0)),
            *([("chunks repaired", sum(len(r.damaged) for r in runs))] if args.repair else []),
            ("requests", totals.get("requests", 0)),
            ("retries", totals.get("retries", 0)),
            ("transferred", f"{megabytes:.1f} MB ({read_label})"),
            (
                "shards x threads",
                f"{fetch.shards} x {fetch.threads_per_shard}"
                if fetch.global_cap
                else f"all workers x {fetch.threads_per_shard} (no global cap)",
            ),
            (
                "chunks skipped (already written by a failed attempt)",
                totals.get("chunks_skipped_done", 0),
            ),
            (
                "peak open chunks per process",
                f"{metric_max(result, 'open_chunks') or 0} (limit {fetch.max_open_chunks}, --worker-memory-gb {args.worker_memory_gb:g})",
            ),
            (
                "wall time",
                f"{clock.seconds:.1f} s ({megabytes / max(clock.seconds, 1e-9):.1f} MB/s)",
            ),
        ],
    )
    with_data = totals.get("pixels_with_data", 0)
    parts = [r.aoi.bounds for r in runs]
    area = tuple(f(b[i] for b in parts) for f, i in ((min, 0), (min, 1), (max, 2), (max, 3)))
    warning = coverage_warning(
        totals.get("pixels_read", 0),
        with_data,
        data_bounds_lonlat(
            first.grid, metric_range(result, "data_row"), metric_range(result, "data_col")
        )
        if len(runs) == 1
        else (area if with_data else None),  # (rows of several grids: not one box)
        area,
        mirror_coverage(first.mirror_index)
        if args.source == "cog"
        else zarr_source.coverage_text(args.zarr_layout)
        if args.source == "zarr"
        else None,
    )
    if warning:
        print(f"efm extract: warning: {warning}", file=sys.stderr)


@contextlib.contextmanager
def _years_flag(adding: bool):
    """With --add-years, a source's refusal of a year names --add-years (the run's years are the
    store's and the added ones)."""
    try:
        yield
    except InputError as exc:
        if adding and exc.flag == "--years":
            raise InputError("--add-years", str(exc).removeprefix("--years: ")) from None
        raise


def check_source_flags(args) -> None:
    """Each source's own flags, and only with it (local checks: nothing is read yet)."""
    if args.source == "zarr" and not args.zarr_root:
        raise InputError(
            "--zarr-root",
            "--source zarr needs --zarr-root: the embedding store to copy from (path or URL)",
        )
    if args.source != "zarr":
        for flag, value in (("--zarr-root", args.zarr_root), ("--grid", args.grid)):
            if value:
                raise InputError(
                    flag, "only used with --source zarr; add --source zarr to copy from a store"
                )


def grid_row(layout, rule: str) -> str:
    """The plan's line on how the source's pixels reach the grid."""
    a, _, _, _, e, _ = layout.transform
    src = f"{layout.width} x {layout.height} px at {abs(a):g} x {abs(e):g} in {zarr_source.crs_name(layout.crs)}, {len(layout.bands)} bands, {layout.dtype}"
    how = (
        "--grid source: its own pixels, copied"
        if rule == "source"
        else "--grid utm: the nearest source pixel under each pixel centre"
    )
    return f"{src}; {how}"


def damaged_chunks(args) -> set[str]:
    """--resume into a store with chunks marked written that are missing or damaged
    (transforms/storage/integrity.py): with --repair, the markers to drop so those chunks are
    fetched again (every chunk file decoded to find them); without, a refusal saying to add --repair."""
    if not args.repair:
        report = integrity.check(args.output, decode=False)
        if report.problems:
            first = report.problems[0]
            raise InputError(
                "--resume",
                f"{args.output} has {len(report.problems)} damaged chunk(s) ({first.chunk} is {first.kind}: "
                f"{first.detail}); add --repair to refetch them (every other chunk is left as it is)",
            )
        return set()
    report = integrity.check(args.output, decode=True)
    for problem in report.problems[: integrity.SHOWN]:
        print(f"efm extract: to repair: {problem.line()}")
    if len(report.problems) > integrity.SHOWN:
        print(f"efm extract: to repair: ... and {len(report.problems) - integrity.SHOWN} more")
    return report.damaged_markers()


def data_bounds_lonlat(grid, rows, cols) -> tuple[float, float, float, float] | None:
    """The lon/lat box around grid rows [r0, r1] x cols [c0, c1] (the pixels that had data)."""
    if rows is None or cols is None:
        return None
    import pyproj

    left, right = grid.x0 + cols[0] * grid.scale, grid.x0 + (cols[1] + 1) * grid.scale
    top, bottom = grid.y0 - rows[0] * grid.scale, grid.y0 - (rows[1] + 1) * grid.scale
    to_lonlat = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    return tuple(to_lonlat.transform_bounds(left, bottom, right, top))


def mirror_coverage(index) -> str | None:
    """Where the mirror has files for the run's years (from its index)."""
    boxes = list(index.attrs.get("coverage_lonlat", {}).values())
    if not boxes:
        return None
    w, s, e, n = (f(b[i] for b in boxes) for f, i in ((min, 0), (min, 1), (max, 2), (max, 3)))
    return f"the mirror's files for these years span lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f}"


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm extract", main, argv)


if __name__ == "__main__":
    sys.exit(run())
