"""What bounds a fetch inside one process: the retry policy (backoff with jitter), the request
rate, the chunks being assembled at once (a process-wide semaphore), and glibc's mmap threshold
(so that freed tile buffers go back to the OS); and the sizes behind them: shards under a global
cap, chunks a process may hold in its memory."""

from __future__ import annotations

import dataclasses
import math
import random
import threading
import time


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 8
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random."""
        ceiling = min(self.max_delay_s, self.initial_delay_s * 2**attempt)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class RateLimiter:
    """Spaces request starts at least 1/rate seconds apart (thread-safe)."""

    def __init__(self, rate: float):
        self._interval = 1.0 / rate if rate and math.isfinite(rate) else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)


class OpenChunks:
    """Process-wide bound on chunks being assembled: every DoFn of a process shares one.

    Keyed by the bound so that pipelines with different settings in one process (tests)
    do not share a count.
    """

    _registry: dict[int, OpenChunks] = {}
    _registry_lock = threading.Lock()

    def __init__(self, limit: int):
        self.limit = limit
        self._slots = threading.Semaphore(limit)
        self._lock = threading.Lock()
        self.open = 0

    @classmethod
    def for_limit(cls, limit: int) -> OpenChunks:
        with cls._registry_lock:
            return cls._registry.setdefault(limit, cls(limit))

    def try_acquire(self, blocking: bool) -> int | None:
        """Take a slot; returns the number now open, or None when none is free (non-blocking)."""
        if not self._slots.acquire(blocking=blocking):
            return None
        with self._lock:
            self.open += 1
            return self.open

    def release(self) -> None:
        with self._lock:
            self.open -= 1
        self._slots.release()


def return_big_buffers_to_the_os(threshold: int = 4 << 20) -> None:
    """Ask glibc to mmap every buffer >= `threshold` (and unmap it when freed).

    By default glibc raises its mmap threshold after each large free (up to 32 MiB), so tile
    bodies and decoded tiles land in per-thread heaps that fragment: peak RSS then crept up
    with the number of chunks (1.62 -> 1.87 GiB from 1x to 16x in benchmarks/memory.py). A fixed
    threshold keeps it flat. 4 MiB, not 1: GDAL allocates each 1024 x 1024 int8 block of the
    COG mirror (1 MiB) on its own, and mapping and unmapping each of them made reading the
    mirror ~1.5x slower. No effect (and no error) off glibc.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def shard_count(max_concurrent_requests: int, threads_per_worker: int) -> int:
    """Shards such that shards x threads-per-shard never exceeds the global cap."""
    return max(
        1,
        math.ceil(
            max_concurrent_requests / max(1, min(threads_per_worker, max_concurrent_requests))
        ),
    )


def max_open_chunks(
    memory_bytes: float, chunk_bytes: int, processes: int = 1, extra_bytes: int = 0
) -> int:
    """Chunks one process may hold: what is left of its share of the budget after the
    process's own footprint (and `extra_bytes`, e.g. a source's cache), over what one open
    chunk costs (see README, memory). 0 = too little."""
    per_process = memory_bytes / max(1, processes) - PROCESS_BASE_BYTES - extra_bytes
    return max(0, int(per_process // (CHUNK_COST_FACTOR * chunk_bytes)))


PROCESS_BASE_BYTES = (
    512 * 2**20
)  # Python, Beam, numpy, xarray, zarr, the ee client: measured ~400 MiB
# Per open chunk: the chunk and its tiles in flight (body + decoded), ~1.5x, and room for its
# write. A process writes one shard at a time, whose encoding holds two encoded copies (zarr keeps
# every inner chunk, then joins them: 1.7-2.5x an int8 shard beyond its values, ~1x a float32 one,
# which compresses to half; benchmarks/store_shards.py, "writer peak RSS"): counted once, that
# fits within the 1x per open chunk this leaves for it at the defaults (6 int8 or 2 float32 chunks).
CHUNK_COST_FACTOR = 2.5
