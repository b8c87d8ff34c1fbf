"""`efm extract` of an area no one UTM zone holds (or with --tuning split_zones=true): a collection.

    the area -> its UTM cells -> one planned store per cell (extract.plan_store, each with the
    checks of a single store) -> the plans per zone and in total (the --yes threshold on the
    total) -> the index -> each store run in turn (extract.run_store), one progress line over all.

From the COG mirror or a Zarr store (no quota), one pipeline writes every zone's store; from Earth
Engine the zones run one after another, each with the project's whole quota (one request cap per
pipeline). A run cut short is finished with --resume on the collection. The rule of what each store holds: transforms/core/zones.py.
"""

from __future__ import annotations

import copy

import shapely

from pipelines import common, extract_plan, extract_run
from transforms.core import grid as gridlib
from transforms.core import zones
from transforms.core.errors import InputError
from transforms.sources import extract_plan as planlib
from transforms.storage import collection, outputs

KIND = "embeddings-collection"


def wants_collection(args, aoi: shapely.Geometry) -> bool:
    """A collection: asked for (--tuning split_zones=true), an existing collection at --output, or an area
    that the UTM zone of its centre cannot hold and no --crs was given."""
    if args.split_zones or collection.is_collection(args.output):
        return True
    if args.crs is not None or args.source == "zarr":
        return False
    centre = aoi.centroid
    return not gridlib.fits_crs(aoi, gridlib.utm_crs_for(centre.x, centre.y))


def _check_flags(args, aoi) -> None:
    if args.crs is not None:
        raise InputError(
            "--crs",
            "a collection is written in each zone's own UTM CRS: drop --crs (or drop "
            "split_zones from --tuning, to write one store in the CRS you give)",
        )
    if args.source == "zarr" and args.grid == "source":
        raise InputError(
            "--tuning",
            "grid: a collection is one store per UTM zone; grid=source keeps the source's CRS: "
            "use grid=utm (or drop split_zones)",
        )
    west, south, east, north = aoi.bounds
    if south < zones.SOUTH_LIMIT or north > zones.NORTH_LIMIT:
        raise InputError(
            "--bbox/--aoi",
            f"lat {south:.2f}..{north:.2f}: UTM zones reach {zones.SOUTH_LIMIT:g}..{zones.NORTH_LIMIT:g}; "
            "pass --crs with a polar CRS for the rest (one store)",
        )


def _member_args(args, cell: zones.Cell, root: str, overwrite: bool):
    member = copy.copy(args)
    member.crs, member.split_zones = cell.crs, False
    member.output = collection.join(root, collection.member_name(cell))
    member.overwrite = overwrite and outputs.inspect(member.output, "embeddings").kind is not None
    if args.source == "zarr":
        member.grid = "utm"
    return member


def _total(jobs: list[planlib.JobPlan]) -> planlib.JobPlan:
    first = jobs[0]
    summed = {
        name: sum(getattr(j, name) for j in jobs)
        for name in (
            "chunks",
            "skipped",
            "done",
            "pixel_years",
            "requests",
            "wire_bytes",
            "store_bytes",
            "store_bytes_on_disk",
            "seconds_at_quota",
            "seconds_at_emulator",
        )
    }
    return planlib.JobPlan(**summed, quota_requests_per_second=first.quota_requests_per_second)


def _check_members(old: collection.Collection, cells: list[zones.Cell], flag: str) -> None:
    had, now = [m.cell for m in old.members], [c.name for c in cells]
    if had != now:
        raise InputError(
            flag,
            f"{old.root} is a collection of zones {', '.join(had)}; this area spans "
            f"{', '.join(now)}: give the area it was made for",
        )


def run(args, options, aoi: shapely.Geometry) -> int:
    _check_flags(args, aoi)
    adding = args.add_years is not None
    found = outputs.check_output(
        args.output,
        KIND,
        inputs={"--cog-root": args.cog_root, "--zarr-root": args.zarr_root, "--aoi": args.aoi},
        resume=args.resume or adding,
        overwrite=args.overwrite,
    )
    root = found.path or outputs.resolve(args.output)
    cells = zones.cells_for(aoi)
    if adding and found.kind is None:
        raise InputError(
            "--add-years",
            f"no collection at {args.output}: --add-years adds years to one `efm extract` made; "
            "make it with --years",
        )
    if found.kind is not None and (args.resume or adding):
        _check_members(
            collection.read(root, flag="--output", check_stores=False),
            cells,
            "--resume" if args.resume else "--add-years",
        )
    runs = [
        extract_plan.plan_store(
            _member_args(args, cell, root, args.overwrite),
            options,
            zones.part_in(aoi, cell),
            cell=cell,
        )
        for cell in cells
    ]
    job = _total([r.job for r in runs])
    dry = " (dry run: nothing written)" if args.dry_run else ""
    for cell, r in zip(cells, runs):
        common.print_summary(f"efm extract: plan for {r.output} (zone {cell.name}){dry}", r.rows)
    common.print_summary(
        f"efm extract: plan for the collection {args.output}{dry}",
        [
            ("stores", f"{len(cells)}, one per UTM zone: {', '.join(c.name for c in cells)}"),
            *_total_rows(job, runs),
        ],
    )
    if args.dry_run:
        if job.too_big():
            print(
                f"efm extract: a large job ({'; '.join(job.too_big())}): the real run needs --yes"
            )
        return 0
    if job.too_big() and not args.yes:
        raise InputError(
            "--yes",
            f"a large job ({'; '.join(job.too_big())}): read the plan above, then run again with "
            "--yes (or make the area or years smaller, or the pixels larger: --tuning scale=...)",
        )
    # The first write: the old collection goes (every check has passed), the index comes first.
    if args.overwrite and found.kind is not None:
        outputs.remove(root, KIND, found=found)
        for r in runs:
            r.args.overwrite = False
    years = sorted({y for r in runs for y in r.years})
    collection.write(
        collection.Collection(
            root=root,
            kind="embeddings",
            members=tuple(
                collection.Member(
                    c.name, c.crs, collection.member_name(c), tuple(zones.part_in(aoi, c).bounds)
                )
                for c in cells
            ),
            years=tuple(years),
            area_lonlat=tuple(aoi.bounds),
            attrs={"source": args.source, "dtype": args.dtype, "scale": runs[0].grid.scale},
        )
    )
    todo = [
        r
        for r in runs
        if not (args.resume and outputs.inspect(r.output, "embeddings", shallow=True).complete)
    ]
    for r in runs:
        if r not in todo:
            print(f"efm extract: {r.output} is complete: left as it is")
    if args.source != "ee":  # no quota to share: one pipeline for every zone
        if todo:
            extract_run.run_stores(todo)
    else:  # zone after zone, each with the whole quota (one cap per pipeline)
        total, before = sum(r.plan.count for r in runs), 0
        for r in runs:
            if r in todo:
                extract_run.run_store(r, progress_base=(before, total))
            before += r.plan.count
    print(
        f"efm extract: the collection {args.output} is complete: {len(runs)} stores "
        f"({', '.join(c.name for c in cells)}) and {collection.INDEX}"
    )
    return 0


def _total_rows(job: planlib.JobPlan, runs) -> list[tuple[str, object]]:
    store_dtype = runs[0].args.dtype
    return [
        ("chunks planned", f"{job.chunks:,}"),
        ("chunks already done (resume)", f"{job.done:,}"),
        ("pixels (x years)", f"{job.pixel_years:,}"),
        ("requests", f"{job.requests:,}"),
        ("bytes on the wire", planlib.human_bytes(job.wire_bytes)),
        (
            "store size",
            f"{planlib.human_bytes(job.store_bytes_on_disk)} on disk ({store_dtype}, all zones)",
        ),
        (
            "time at the quota bound",
            f"{planlib.human_seconds(job.seconds_at_quota)} (zones one after another)"
            if runs[0].args.source == "ee"
            else "no quota: as fast as the workers read",
        ),
    ]
