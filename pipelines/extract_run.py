"""`efm extract`, planned stores written: set up (or reopened), fetched and written by one pipeline,
with progress and the summary."""

from __future__ import annotations

import sys
import uuid

import apache_beam as beam

from pipelines import common
from pipelines.extract_plan import StoreRun
from pipelines.extract_sizing import (
    COG_NEIGHBOURHOOD_CHUNKS,
    DEFAULT_COG_CONCURRENCY,
    DEFAULT_THREADS_DISTRIBUTED,
    block_cache_bytes,
    memory_processes,
)
from transforms.core import progress
from transforms.core.metrics import coverage_warning, metric_max, metric_range, metric_totals
from transforms.sources import cog, earthengine
from transforms.sources.fetch import FetchChunks
from transforms.sources.fetch_bounds import RetryPolicy
from transforms.sources.zone_mask import ZoneMask
from transforms.storage import store, store_years, zarr_source


def _setup(run: StoreRun, run_token: str | None = None):
    """The first write of a store's run: set it up (or reopen it); its chunks to do, its fetch."""
    args, options, output, grid, years = run.args, run.options, run.output, run.grid, run.years
    if (
        run.damaged
    ):  # --repair: the damaged chunks are not done any more (incomplete until they are)
        store.drop_markers(output, run.damaged)
    if run.adding:  # the time axis grows (marked incomplete until the new years are written)
        store_years.add_years(output, run.template)
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
    cache (fetch_bounds.OpenChunks, cog_blocks: one per process and size)."""
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
                f"{metric_max(result, 'open_chunks') or 0} (limit {fetch.max_open_chunks}, worker_memory_gb={args.worker_memory_gb:g})",
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
