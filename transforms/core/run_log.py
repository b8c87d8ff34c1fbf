"""Where a run's tracebacks go: to the log (through `logging`), not to the terminal.

Beam's SDK harness prints a failed bundle's traceback on `sys.stderr` (sdk_worker.py, `_execute`)
before it hands the failure back to the runner, which raises it again in the command's process:
the failure is then reported once, as one line (pipelines/failures.py), and the trace is in the
log. That print happens in the command's own process (`--direct_running_mode=multi_threading`)
and in a local runner's worker processes (`multi_processing`). `TracebacksToLog` is the
`sys.stderr` of both while a pipeline runs: a write holding a traceback goes to the logger
`efm.stderr` (INFO: the log file, never the terminal), anything else (a step's own output) passes
on unchanged. No file descriptor is touched: what a native library writes to descriptor 2 still
reaches the terminal. In a worker process it is installed by `transforms.core.beam_worker`, which
the command names in `--beam_plugins` (Beam imports it when the worker starts).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys

LOGGER = "efm.stderr"
_TRACEBACK = "Traceback (most recent call last)"


class TracebacksToLog(io.TextIOBase):
    """A text stream: a write holding a traceback (and the newline `print` adds after it) goes to
    the log; anything else to `terminal`."""

    def __init__(self, terminal):
        self.terminal, self._diverted = terminal, False

    def write(self, text: str) -> int:
        if _TRACEBACK in text or (self._diverted and text == "\n"):
            if text.strip():
                logging.getLogger(LOGGER).info("a traceback printed on stderr:\n%s", text.rstrip())
            self._diverted = text != "\n"
        else:
            self._diverted = False
            self.terminal.write(text)
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()

    def fileno(self) -> int:
        return self.terminal.fileno()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    @property
    def encoding(self):
        return getattr(self.terminal, "encoding", "utf-8")


@contextlib.contextmanager
def tracebacks_to_log():
    """`sys.stderr` is a `TracebacksToLog` over the one before, for the block."""
    before = sys.stderr
    sys.stderr = TracebacksToLog(before)
    try:
        yield
    finally:
        if isinstance(sys.stderr, TracebacksToLog):
            sys.stderr.flush()
        sys.stderr = before


def install() -> None:
    """For the rest of this process (a worker process Beam started for one run)."""
    if not isinstance(sys.stderr, TracebacksToLog):
        sys.stderr = TracebacksToLog(sys.stderr)
