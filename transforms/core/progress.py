"""Progress of a long local run: a line on stderr every few seconds, from the output itself.

    efm extract: progress: 120/480 chunks written (25%), 41.3 MB/s, ETA 2 min 10 s

Beam's counters cannot be read reliably while a local runner (FnApiRunner, DirectRunner in
multi-process mode) is running, so a thread on the driver counts what the run has already
*committed to the output*: the done markers under `<store>/.efm/done/` (extract, classify), or
the part files (sample). One listing of one folder every interval is cheap (one request per
1,000 names on GCS), it counts only chunks that are really in place, and it works the same
whatever runner or number of worker processes. On Dataflow the job's counters (chunks_written,
requests, bytes) are the progress, in the job's page; this thread is not started there.

The interval is `EFM_PROGRESS_INTERVAL` seconds (default 10; tests set it short).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

INTERVAL_ENV = "EFM_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 10.0


def interval_from_env() -> float:
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def count_files(folder: str, pattern: str) -> int:
    """Files matching `pattern` in `folder` (local or gs://), listed afresh."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(folder)
    fs.invalidate_cache()
    return len(fs.glob(f"{root.rstrip('/')}/{pattern}")) if fs.exists(root) else 0


def progress_line(
    prog: str,
    done: int,
    planned: int,
    new: int,
    elapsed: float,
    bytes_per_unit: float | None,
    unit: str = "chunks",
    verb: str = "written",
) -> str:
    """`done` of `planned` units are in place, `new` of them by this run in `elapsed` seconds.

    MB/s is left out when a unit has no meaningful size (`bytes_per_unit` None).
    """
    percent = 100.0 * done / planned if planned else 100.0
    rate = new / elapsed if elapsed > 0 else 0.0
    speed = (
        ""
        if bytes_per_unit is None
        else f", {new * bytes_per_unit / 1e6 / elapsed if elapsed > 0 else 0.0:.1f} MB/s"
    )
    if done >= planned:
        eta = "ETA 0 s"
    elif rate > 0:
        eta = f"ETA {duration((planned - done) / rate)}"
    else:
        eta = "ETA unknown (nothing written yet)"
    return f"{prog}: progress: {done}/{planned} {unit} {verb} ({percent:.0f}%){speed}, {eta}"


class Progress:
    """Context manager: prints a progress line every `interval` s while the body runs, and one at the end.

    `count()` returns how many units are in place now (including those of an earlier run:
    `already`); `bytes_per_unit` turns units into MB/s (the uncompressed bytes of a unit; None: no MB/s).
    Does nothing when `enabled` is false (distributed runners, where counters are the progress).
    """

    def __init__(
        self,
        prog: str,
        count: Callable[[], int],
        planned: int,
        *,
        already: int = 0,
        bytes_per_unit: float | None = None,
        unit: str = "chunks",
        verb: str = "written",
        enabled: bool = True,
        interval: float | None = None,
    ):
        self.prog, self.count, self.planned, self.already = prog, count, planned, already
        self.bytes_per_unit, self.unit, self.verb = bytes_per_unit, unit, verb
        self.enabled = enabled and planned > already
        self.interval = interval if interval is not None else interval_from_env()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lines: list[str] = []
        self._done = 0

    def _print(self) -> None:
        try:
            # Never backwards: sample's parts folder is removed once the table is assembled.
            done = self._done = max(self._done, min(self.count(), self.planned))
        except (
            Exception
        ):  # a listing that fails (network hiccup) must not stop the run: skip a line
            return
        line = progress_line(
            self.prog,
            done,
            self.planned,
            max(0, done - self.already),
            time.monotonic() - self._start,
            self.bytes_per_unit,
            self.unit,
            self.verb,
        )
        self.lines.append(line)
        print(line, file=sys.stderr, flush=True)

    def _loop(self) -> None:
        next_at = self._start + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self._print()
            next_at += self.interval  # a fixed cadence: a slow listing does not stretch it
            if next_at < time.monotonic():
                next_at = time.monotonic() + self.interval

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="efm-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self._print()  # the final count
