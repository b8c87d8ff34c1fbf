"""Reading the next windows while this one is computed: a bounded read-ahead in one background thread.

A product's DoFn (transforms/products/chunk_map.py) reads a chunk's windows, then computes on
them. Read in turn, a remote store's fetch (and any store's decode) adds to each chunk's time;
read ahead, the next chunk's read runs while this one is computed. `ReadAhead` holds the
elements pushed to it and gives them back in order with their values once more than `depth`
are waiting:

    ahead = ReadAhead(read, depth=1)
    for element in elements:
        for element, values, tag in ahead.push(element):   # the element `depth` before
            compute(values)
    for element, values, tag in ahead.drain():              # the last `depth`
        compute(values)

Memory: besides the values being computed, at most `depth` elements' reads are started and not
yet taken (one running, the others done and held), so a DoFn holds at most depth + 1 chunks'
windows. Reads run one at a time, in order, in a daemon thread; an exception a read raised is
raised again, the same object, where its values are taken (the caller's one-line failure
is the same as without read-ahead). depth=0 reads in the caller's thread, as before.

Beam's metrics are per thread (the state sampler of the bundle): a read that counts something
(the chunk guard's counter of unrecorded absent chunks, transforms/storage/integrity.py) runs
with the tracker of the thread that pushed it, so its counts reach the run's totals.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterator


class _Pending:
    """One read: its value or its exception, once done."""

    __slots__ = ("done", "value", "error")

    def __init__(self):
        self.done = threading.Event()
        self.value = None
        self.error = None

    def result(self):
        self.done.wait()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        value, self.value = self.value, None
        return value


class ReadAhead:
    """`read(element)` run up to `depth` elements ahead of the caller, in one background thread."""

    def __init__(self, read: Callable, depth: int = 1):
        self.read = read
        self.depth = max(0, int(depth))
        self._waiting = collections.deque()  # (element, _Pending, tag), in push order
        self._jobs = None  # queue of (element, _Pending, Beam's tracker) for the thread
        self._stop = None  # set by close(): the thread skips what is still queued
        self._thread = None

    def push(self, element, tag=None) -> list:
        """Start reading `element`; [(element, values, tag)] of the one read `depth` before, if any."""
        if self.depth == 0:
            return [(element, self.read(element), tag)]
        pending = _Pending()
        self._start()
        self._jobs.put((element, pending, _tracker()))
        self._waiting.append((element, pending, tag))
        ready = []
        while len(self._waiting) > self.depth:
            ready.append(self._take())
        return ready

    def drain(self) -> Iterator[tuple]:
        """The elements still waiting, in order, with their values."""
        while self._waiting:
            yield self._take()

    def waiting(self) -> int:
        """Elements pushed whose values were not taken yet."""
        return len(self._waiting)

    def close(self) -> None:
        """Forget what is waiting and stop the thread (after the read it is in, if any)."""
        self._waiting.clear()
        if self._thread is not None:
            self._stop.set()
            self._jobs.put(None)
            self._thread = None
            self._jobs = None

    def _take(self) -> tuple:
        element, pending, tag = self._waiting.popleft()
        return element, pending.result(), tag

    def _start(self) -> None:
        if self._thread is None:
            self._jobs, self._stop = queue.SimpleQueue(), threading.Event()
            self._thread = threading.Thread(
                target=_work,
                args=(self.read, self._jobs, self._stop),
                name="efm-read-ahead",
                daemon=True,
            )
            self._thread.start()


def _tracker():
    from apache_beam.runners.worker import statesampler

    return statesampler.get_current_tracker()


def _work(read: Callable, jobs: queue.SimpleQueue, stop: threading.Event) -> None:
    from apache_beam.runners.worker import statesampler

    while True:
        job = jobs.get()
        if job is None or stop.is_set():
            return
        element, pending, tracker = job
        statesampler.set_current_tracker(tracker)
        try:
            pending.value = read(element)
        except BaseException as exc:  # raised again in the caller's thread, where it is taken
            pending.error = exc
        finally:
            statesampler.set_current_tracker(None)
            pending.done.set()
