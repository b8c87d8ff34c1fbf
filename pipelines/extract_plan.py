"""`efm extract`, one store planned: the sources and the output checked, the grid, the chunk plan
and its figures (nothing written). `extract_run` writes what this plans."""

from __future__ import annotations

import contextlib
import dataclasses

from pipelines.extract_sizing import open_chunk_limit, requests_in_flight
from transforms.core import grid as gridlib
from transforms.core.chunk_plan import ChunkPlan
from transforms.core.errors import InputError
from transforms.sources import cog, cog_index, earthengine, request_plan
from transforms.sources import extract_plan as planlib
from transforms.storage import integrity, outputs, store, store_years, zarr_source


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
    plan: ChunkPlan
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
        had, years = store_years.years_to_add(
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
    plan = ChunkPlan.for_area(grid, args.chunk_size, years, aoi_in_crs)
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
        store_years.check_add(
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
    shown = ChunkPlan.for_area(grid, args.chunk_size, years[first:], aoi_in_crs) if adding else plan
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
                f"{in_flight} of the cap's {args.max_concurrent_requests}: worker_memory_gb={args.worker_memory_gb:g} holds "
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


def grid_row(layout, rule: str) -> str:
    """The plan's line on how the source's pixels reach the grid."""
    a, _, _, _, e, _ = layout.transform
    src = f"{layout.width} x {layout.height} px at {abs(a):g} x {abs(e):g} in {zarr_source.crs_name(layout.crs)}, {len(layout.bands)} bands, {layout.dtype}"
    how = (
        "grid=source: its own pixels, copied"
        if rule == "source"
        else "grid=utm: the nearest source pixel under each pixel centre"
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
