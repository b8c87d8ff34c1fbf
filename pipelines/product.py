"""The pipeline side of every per-pixel product (classify, change, similarity, predict), written once:

    prepare the store (new, --resume or --overwrite) -> the chunks left to do -> Beam graph
    (ChunkRows | ChunkSpecs | Reshuffle | MapChunks | WriteChunks | MarkComplete) with progress
    -> metric totals for the summary.

Each command checks its input first (one line, exit 2, nothing written), builds its template and
its `MapChunks`, then calls `run_map`.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from pipelines import common
from transforms.core import progress
from transforms.core.chunk_plan import ChunkPlan
from transforms.core.metrics import metric_totals
from transforms.storage import integrity, outputs, readers, store


@dataclasses.dataclass
class MapRun:
    totals: dict
    seconds: float
    planned: int
    already_done: int


def run_map(
    prog: str,
    output: str,
    template,
    plan: ChunkPlan,
    transform,
    options,
    *,
    info: readers.StoreInfo,
    resume: bool,
    overwrite: bool,
    windows_per_chunk: int = 1,
) -> MapRun:
    """Write `template`'s store at `output` chunk by chunk with `transform` (a MapChunks).

    Every check of the command comes before this: with --overwrite, the old store is removed here.
    The store is written where `output` really is (a link to a store: the store it points to).
    """
    output = outputs.resolve(output)
    done = store.prepare(output, template, resume=resume, overwrite=overwrite)
    todo = list(plan.rows(done))  # one small element per (year, chunk row): workers expand them
    todo_count = sum(stop - start for row in todo for start, stop in row.runs)

    def build(pipeline: beam.Pipeline) -> None:
        specs = (
            pipeline | "ChunkRows" >> beam.Create(todo) | "ChunkSpecs" >> beam.FlatMap(plan.expand)
        )
        if not common.single_local_worker(options):
            specs = specs | "Reshuffle" >> beam.Reshuffle()  # spread chunks over workers
        written = specs | "Compute" >> transform | "Write" >> store.WriteChunks(output, template)
        written | "MarkComplete" >> store.MarkComplete(
            output, plan
        )  # the plan iterates its markers: no list

    watch = progress.Progress(
        prog,
        lambda: len(store.done_markers(output)),
        plan.count,
        already=plan.count - todo_count,
        bytes_per_unit=info.chunk_rows
        * info.chunk_cols
        * len(info.bands)
        * 4
        * windows_per_chunk,  # embeddings read, as float32
        enabled=common.local_workers(options) is not None and not common.detached(options),
    )
    with common.Stopwatch() as clock, watch:
        result = common.run_pipeline(build, options)
    return MapRun(metric_totals(result), clock.seconds, plan.count, plan.count - todo_count)


def chunk_rows(run: MapRun) -> list[tuple[str, object]]:
    """The summary rows every product prints about its chunks."""
    return [
        ("chunks planned", run.planned),
        ("chunks already done (resume)", run.already_done),
        ("chunks written", run.totals.get("chunks_written", 0)),
        ("input chunks missing", input_chunks_missing(run.totals)),
    ]


def summary_rows(
    result: MapRun,
    info: readers.StoreInfo,
    sub,
    head: list,
    years: list[int] | None,
    computed: tuple[str, str],
    nodata: str,
    tail: list = (),
) -> list[tuple[str, object]]:
    """A per-pixel product's summary: `head` (what it applied), the grid (with `years`; None: a
    map without time), the chunk and subset rows, the pixels computed (`computed`: label, counter)
    and without data (`nodata`: label), `tail`, and the wall time with the pixel rate."""
    label, counter = computed
    pixels = result.totals.get(counter, 0)
    grid = f"{info.width} x {info.height} px in {info.crs}"
    return [
        *head,
        ("grid", grid if years is None else f"{grid}, year(s) {', '.join(map(str, years))}"),
        *chunk_rows(result),
        *(sub.summary_rows() if years is None else sub.summary_rows(len(years))),
        (label, pixels),
        (nodata, result.totals.get("pixels_nodata", 0)),
        *tail,
        ("wall time", f"{result.seconds:.1f} s ({pixels / max(result.seconds, 1e-9):,.0f} px/s)"),
    ]


def input_chunks_missing(totals: dict) -> str:
    """Embedding chunks the run found missing, apart from its no-data pixels: a chunk marked written
    and gone stops the run (transforms/storage/integrity.py), so this is 0, but for chunks of an old
    store (markers without a record) that are absent: no data or deleted, nothing can tell."""
    unrecorded = totals.get(integrity.UNRECORDED_COUNTER, 0)
    if not unrecorded:
        return "0"
    return (
        f"0 ({unrecorded} absent without a record of whether they held data, read as no data: "
        "a store written before efm recorded chunk files; `efm verify` on it says more)"
    )


def add_resume_flags(parser, what: str = "compute only the missing chunks") -> None:
    mode = parser.add_mutually_exclusive_group()
    common.add_resume(mode, what)
    common.add_overwrite(mode)
    add_dry_run(parser)


def add_dry_run(parser) -> None:
    common.add_dry_run(
        parser, "print the plan (per member and in total for a collection) and write nothing"
    )


def grid_attrs(args_embeddings: str, info: readers.StoreInfo) -> dict:
    """Store attributes every product carries (provenance, grid, licence)."""
    return {
        "source": args_embeddings,
        "embeddings_source": info.source,
        "crs": info.crs,
        "scale": abs(info.transform[0]),
        "chunk_size": info.chunk_rows,
        "license": store.LICENSE,
        "attribution": store.ATTRIBUTION,
    }


def check_resume_attrs(output: str, attrs: dict, names: dict[str, str], *, resume: bool) -> None:
    """--resume also needs the product's own inputs unchanged (attrs `names`: attr -> what it is), which
    transforms/storage/resume.py does not know of: e.g. a similarity store's reference vectors, a mask's threshold."""
    if not resume or not store.exists(output):
        return
    import zarr

    from transforms.core.errors import InputError

    try:
        existing = dict(zarr.open_group(output, mode="r").attrs)
    except Exception:  # not a store: outputs.check_output, run next, says what it is
        return
    differ = [what for name, what in names.items() if existing.get(name) != attrs.get(name)]
    if differ:
        raise InputError(
            "--resume",
            f"{output} was made with another {' and another '.join(differ)}; resume with the flags that made it, or pass --overwrite to replace it",
        )
