"""A per-pixel product (classify, predict, change, similarity) on a store or on a collection.

A command builds one `Job` per input store with its `make_job(embeddings, cell)` (every check
of that store: years, --bbox, model bands, ...), and `run` does the rest, the same for all:

- a store: the output checked, --resume's inputs compared, run_map, the summary;
- a collection (transforms/storage/collection.py): a collection of maps with the same members
  (cells, relative names), each member computed from the input member of the same cell. Every
  member's job is built and checked (and, with --resume, compared with what is there) before
  anything is written; then the old collection is removed (--overwrite: only an efm collection
  of this kind), the index written, and the members written one by one: with --resume a
  complete member is skipped (its files untouched) and an unfinished one finished. With
  --bbox/--aoi only the members whose store the area reaches are written.

--dry-run prints the plan (per member and in total for a collection) and writes nothing.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import apache_beam as beam
import xarray as xr

from pipelines import common, product
from transforms.core.chunk_plan import ChunkPlan
from transforms.core.errors import InputError
from transforms.core.zones import Cell
from transforms.storage import collection as collectionlib
from transforms.storage import outputs, readers, store


@dataclasses.dataclass
class Job:
    """One output store to write: what run_map needs, and what the summary says of it."""

    info: readers.StoreInfo
    template: xr.Dataset
    plan: ChunkPlan
    transform: beam.PTransform
    years: list[int]
    rows: Callable[[product.MapRun], list]  # the product's summary rows for this store
    counter: str  # the metric counting the pixels computed (for the total)
    resume_names: dict = dataclasses.field(default_factory=dict)  # product.check_resume_attrs
    windows_per_chunk: int = 1
    output: str = ""


def run(
    prog: str,
    args,
    options,
    *,
    kind: str,
    inputs: dict,
    make_job: Callable[[str, Cell | None], Job | None],
    is_collection: bool | None = None,
) -> int:
    """Check everything, then write the product of `kind` at args.output (a store or a collection).

    `is_collection`: whether args.embeddings is a collection, when the command has looked already
    (each look may be a remote reachability check)."""
    if is_collection is None:
        is_collection = collectionlib.is_collection(args.embeddings)
    if is_collection:
        return _run_collection(prog, args, options, kind, inputs, make_job)
    job = make_job(args.embeddings, None)
    found = outputs.check_output(
        args.output, kind, inputs=inputs, resume=args.resume, overwrite=args.overwrite
    )
    job.output = args.output
    product.check_resume_attrs(
        args.output, dict(job.template.attrs), job.resume_names, resume=args.resume
    )
    if getattr(args, "dry_run", False):
        _print_plan(prog, args.output, [(None, job)], found.path or outputs.resolve(args.output))
        return 0
    result = _run_job(prog, job, options, args.resume, args.overwrite)
    common.print_summary(f"{prog}: {args.output} complete", job.rows(result))
    return 0


def _run_job(prog: str, job: Job, options, resume: bool, overwrite: bool) -> product.MapRun:
    return product.run_map(
        prog,
        job.output,
        job.template,
        job.plan,
        job.transform,
        options,
        info=job.info,
        resume=resume,
        overwrite=overwrite,
        windows_per_chunk=job.windows_per_chunk,
    )


def _members(coll: collectionlib.Collection) -> str:
    return ", ".join(f"{m.cell} ({m.path})" for m in coll.members) or "none"


def refuse_area(args, coll: collectionlib.Collection) -> None:
    """--bbox/--aoi reaching no member of the collection."""
    raise InputError(
        "--bbox" if getattr(args, "bbox", None) else "--aoi",
        f"the area reaches no store of the collection {args.embeddings} "
        f"({_members(coll)}); choose an area that overlaps it",
    )


def _check_existing(args, out_root: str, kind: str, members: list) -> None:
    """--resume into a collection: its index must list the members this run writes."""
    if not (args.resume and collectionlib.is_collection(out_root)):
        return
    old = collectionlib.read(out_root, flag="--resume", check_stores=False)
    want = [(m.cell, m.path) for m in members]
    if old.kind != kind or [(m.cell, m.path) for m in old.members] != want:
        raise InputError(
            "--resume",
            f"{args.output} holds {old.kind} stores for {_members(old)}, this run writes {kind} "
            f"stores for {', '.join(f'{c} ({p})' for c, p in want)}; resume with the input and "
            "flags that made it, or pass --overwrite to replace it",
        )


def _complete(path: str) -> bool:
    import zarr

    try:
        return zarr.open_group(path, mode="r").attrs.get(store.STATUS_ATTR) == "complete"
    except Exception:  # not there (yet)
        return False


def _run_collection(prog, args, options, kind, inputs, make_job) -> int:
    coll = collectionlib.read(args.embeddings, flag="--embeddings")
    # 1. Every member's checks, then the output's, before anything is written.
    jobs = []
    for member in coll.members:
        job = make_job(coll.path_of(member), member.zone)
        if job is not None:
            jobs.append((member, job))
    if not jobs:
        refuse_area(args, coll)
    found = outputs.check_output(
        args.output,
        f"{kind}-collection",
        inputs=inputs,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    out_root = found.path or outputs.resolve(args.output)
    _check_existing(args, out_root, kind, [m for m, _ in jobs])
    out = collectionlib.Collection(
        root=out_root,
        kind=kind,
        members=tuple(m for m, _ in jobs),
        years=tuple(jobs[0][1].years),
        area_lonlat=coll.area_lonlat,
        attrs={"source": args.embeddings, "product": kind},
    )
    for member, job in jobs:
        job.output = out.path_of(member)
        attrs = dict(job.template.attrs)
        if args.resume and store.exists(job.output):
            outputs.check_output(job.output, kind, resume=True)
            store.check_resume(job.output, job.template)
        product.check_resume_attrs(job.output, attrs, job.resume_names, resume=args.resume)
    if getattr(args, "dry_run", False):
        _print_plan(prog, args.output, jobs, out_root)
        return 0
    # 2. Write: the old collection removed (--overwrite), the index, then member by member.
    if args.overwrite and found.kind is not None:
        outputs.remove(out_root, f"{kind}-collection", found=found)
    collectionlib.write(out)
    _print_plan(prog, args.output, jobs, out_root)
    results = []
    for member, job in jobs:
        if args.resume and _complete(job.output):
            results.append((member, job, None))
            continue
        result = _run_job(prog, job, options, args.resume, False)
        results.append((member, job, result))
        common.print_summary(f"{prog}: {member.cell} ({member.path}) complete", job.rows(result))
    _print_total(prog, args.output, results)
    return 0


def _todo(job: Job, path: str) -> int:
    """Chunks of the plan still to write at `path` (all of them for a new store)."""
    done = store.done_markers(path) if store.exists(path) else set()
    return sum(stop - start for row in job.plan.rows(done) for start, stop in row.runs)


def _print_plan(prog: str, output: str, jobs: list, out_root: str) -> None:
    """The plan, on stderr: per member (cell, CRS, grid, chunks) and in total."""
    rows, total, todo_total = [], 0, 0
    for member, job in jobs:
        path = job.output or out_root
        todo = 0 if (member is not None and _complete(path)) else _todo(job, path)
        total, todo_total = total + job.plan.count, todo_total + todo
        name = "store" if member is None else f"{member.cell} ({member.path})"
        info = job.info
        rows.append(
            (
                name,
                f"{info.crs}, {info.width} x {info.height} px, year(s) "
                f"{', '.join(map(str, job.years))}: {job.plan.count} chunks, {todo} to write",
            )
        )
    if len(jobs) > 1 or jobs[0][0] is not None:
        rows.append(("total", f"{len(jobs)} stores, {total} chunks, {todo_total} to write"))
    common.print_summary(f"{prog}: plan for {output}", rows, stream=sys.stderr)


def _print_total(prog: str, output: str, results: list) -> None:
    planned = written = skipped = pixels = 0
    seconds = 0.0
    for _, job, result in results:
        planned += job.plan.count
        if result is None:
            skipped += 1
            continue
        written += result.totals.get("chunks_written", 0)
        pixels += result.totals.get(job.counter, 0)
        seconds += result.seconds
    common.print_summary(
        f"{prog}: {output} complete (a collection of {len(results)} stores)",
        [
            ("members", ", ".join(f"{m.cell} ({m.path})" for m, _, _ in results)),
            ("members already complete (resume)", skipped),
            ("chunks planned", planned),
            ("chunks written", written),
            ("pixels computed", pixels),
            ("wall time", f"{seconds:.1f} s"),
        ],
    )
