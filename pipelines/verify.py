"""`efm verify STORE`: is every chunk the store marks as written there, whole, and decodable?

Reads every chunk file of every data variable (one chunk per thread at a time), compares it with
what its done marker recorded (size, crc32; transforms/storage/integrity.py) and decodes it.

Exit status: 0 sound; 1 damaged (one line per damaged chunk, the first 10, then a count and the
command that repairs it); 2 not a store (or a bad flag).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

from pipelines import common, tuning
from transforms.core import progress
from transforms.core.errors import InputError
from transforms.storage import integrity, kinds, outputs, store

EXIT_DAMAGED = 1


def build_parser():
    parser = common.make_parser(
        "efm verify",
        "Check that every chunk a store marks as written is there and decodes (embedding stores and "
        "product stores: class maps, predictions, similarity, change). Exit 0: sound; 1: damaged "
        "chunks (each named, with the command that repairs them); 2: not a store.",
        beam_options=False,
    )
    parser.add_argument("store", help="the Zarr store to check: a local path or gs://bucket/path")
    tuning.add_flag(parser, "verify")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = common.own_args(build_parser(), argv)
    path = args.store
    if not store.exists(path):
        raise InputError("store", f"{path} does not exist; give the path of an efm Zarr store")
    found = outputs.inspect(path, "embeddings", shallow=True)
    if found.kind not in kinds.RESUMABLE:
        raise InputError("store", f"{path} is not an efm Zarr store (no efm store metadata)")
    total = integrity.count_chunks(path)
    checked = [0]
    lock = threading.Lock()

    def tick() -> None:
        with lock:
            checked[0] += 1

    watch = progress.Progress("efm verify", lambda: checked[0], total, verb="checked")
    with common.Stopwatch() as clock, watch:
        report = integrity.check(path, decode=True, threads=args.threads, on_chunk=tick)
    rows = [
        ("store", f"{kinds.KINDS.get(report.kind, report.kind)}, efm_status {report.status}"),
        ("chunks checked", report.chunks),
        ("chunk files decoded", report.decoded),
        ("chunks of no data (recorded, no file)", report.empty),
        ("chunks missing or damaged", len(report.problems)),
    ]
    if report.unrecorded_absent:
        rows.append(
            (
                "chunks absent, no record",
                f"{report.unrecorded_absent} (written before efm recorded chunk files: no data, "
                "or deleted; nothing can tell)",
            )
        )
    if report.unmarked:
        rows.append(("chunk files without a done marker", report.unmarked))
    rows.append(("wall time", f"{clock.seconds:.1f} s"))
    if report.sound:
        common.print_summary(f"efm verify: {path} is sound", rows)
        return 0
    common.print_summary(f"efm verify: {path} is damaged", rows)
    for problem in report.problems[: integrity.SHOWN]:
        print(f"  {problem.line()}")
    hidden = len(report.problems) - integrity.SHOWN
    if hidden > 0:
        print(f"  ... and {hidden} more")
    print(
        f"efm verify: error: {path}: {len(report.problems)} damaged chunk(s); repair with "
        f"`{integrity.repair_command(path, report.kind)}`",
        file=sys.stderr,
    )
    return EXIT_DAMAGED


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm verify", main, argv)


if __name__ == "__main__":
    sys.exit(run())
