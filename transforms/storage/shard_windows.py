"""Windows of a sharded Zarr 3 array read directly, shard by shard (`ShardWindows`), and the
band-last interleaving of planar inner chunks (`interleave`).
"""

from __future__ import annotations

import mmap
import os
import sys
import threading

import numpy as np

from transforms.sources.remote_fs import storage_options
from transforms.storage import layouts

ROWS_PER_PASS = 16  # rows moved band-last per pass: the pass's buffers stay in the CPU's caches


# A remote shard's inner chunks are asked for in requests of up to PART_BYTES, IN_FLIGHT at a time:
# on a cloud link (~100 MB/s a connection) 8 MiB take ~80 ms against a first byte's ~20-50 ms, and
# the first part is decoded while the others arrive. IN_FLIGHT bounds the connections (and the
# bytes held) of one reader.
PART_BYTES = 8 * 2**20
IN_FLIGHT = 8

EMPTY = np.uint64(2**64 - 1)  # a shard index's (offset, nbytes) of an inner chunk never written


def interleave(planar: np.ndarray, out: np.ndarray) -> None:
    """`planar` (bands, rows, cols) into `out` (rows, cols, bands); both may be views of larger
    arrays whose last axis is contiguous.

    numpy's transposition is slowest for small items (one byte per element). In two steps it
    is several times faster (transforms/sources/cog_blocks.py, benchmarks/store_formats.py):
    move 8-byte words (8 int8 or 2 float32 pixels of one band) into pixel order, then transpose
    each (pixels per word x bands) tile, a cache-local copy. The words are only reinterpreted,
    never computed with, so byte order does not matter."""
    bands, rows, cols = planar.shape
    size = planar.dtype.itemsize
    per_word = 8 // size if size in (1, 2, 4) else 0
    whole = cols - cols % per_word if per_word else 0
    if whole and planar.strides[2] == size and out.strides[2] == size:
        words = planar[:, :, :whole].view(np.uint64)  # (bands, rows, whole / per_word)
        n = whole // per_word
        target = np.lib.stride_tricks.as_strided(
            out,
            shape=(rows, n, per_word, bands),
            strides=(out.strides[0], per_word * out.strides[1], out.strides[1], out.strides[2]),
            writeable=True,
        )
        buffer = np.empty((ROWS_PER_PASS, n, bands), dtype=np.uint64)
        for r in range(0, rows, ROWS_PER_PASS):
            k = min(ROWS_PER_PASS, rows - r)
            np.copyto(buffer[:k], words[:, r : r + k, :].transpose(1, 2, 0))
            target[r : r + k] = (
                buffer[:k].view(planar.dtype).reshape(k, n, bands, per_word).transpose(0, 1, 3, 2)
            )
    if whole < cols:
        out[:, whole:, :] = planar[:, :, whole:].transpose(1, 2, 0)


class ShardWindows:
    """Windows of a sharded Zarr 3 array in the convention's order (time, band, y, x), as
    (rows, cols, bands), read shard by shard without zarr-python's per-chunk machinery.

    zarr-python reads such a window band-first and the caller then moves the bands last: a 1024 px
    int8 window cost 2.3x the CPU of a Zarr 2 band-last chunk (decode 0.17 s + transposition
    0.32 s against 0.07 s; benchmarks/store_formats.py). Here a local shard is read in as few
    reads as it can be (the whole file when the window wants every inner chunk of it, else its
    index, then one read per contiguous run of the inner chunks wanted); a remote one's index
    first, then its inner chunks in ranged requests that are decoded as they arrive
    (`_read_streamed`). Each inner chunk is decoded into one reused buffer and moved band-last
    straight into the result (`interleave`). The values are
    zarr's own (tests/test_layouts.py compares them with zarr-python's read of the same windows).

    `of` gives None for any array it does not know how to read so (other codecs, a transposed
    layout, bands split over chunks...): zarr reads those.
    """

    def __init__(self, array, path: str):
        meta = array.metadata
        (sharding,) = meta.codecs
        self.meta = meta
        self.path = path.rstrip("/")
        self.dtype = np.dtype(array.dtype)
        self.fill = array.fill_value
        self.bands = meta.shape[1]
        _, _, self.shard_rows, self.shard_cols = array.shards
        _, _, self.inner_rows, self.inner_cols = array.chunks
        self.grid = (self.shard_rows // self.inner_rows, self.shard_cols // self.inner_cols)
        self.height, self.width = meta.shape[2], meta.shape[3]
        self.index_bytes = 16 * self.grid[0] * self.grid[1] + (
            4 if len(sharding.index_codecs) == 2 else 0
        )
        self.index_at_end = str(getattr(sharding.index_location, "value", "end")) == "end"
        self.codec = _inner_decoder(sharding.codecs)
        self.local = "://" not in path or path.startswith("file://")
        if self.local:
            self.path = self.path.removeprefix("file://")
            self.fs = None
        else:
            import fsspec

            self.fs, self.path = fsspec.core.url_to_fs(path, **(storage_options(path) or {}))
            self.path = self.path.rstrip("/")

    @classmethod
    def of(cls, array, path: str) -> ShardWindows | None:
        """A reader for `array` (stored at `path`), or None if it is not one this class reads."""
        from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

        meta = array.metadata
        if getattr(meta, "zarr_format", None) != 3 or len(meta.codecs) != 1:
            return None
        sharding = meta.codecs[0]
        if (
            not isinstance(sharding, ShardingCodec)
            or layouts.array_dims(array) != layouts.CONVENTION
        ):
            return None
        shards, inner = array.shards, array.chunks
        dtype = np.dtype(array.dtype)
        index = [type(c) for c in sharding.index_codecs]
        endian = getattr(sharding.codecs[0], "endian", None) if sharding.codecs else None
        endian = getattr(endian, "value", endian)
        if (
            shards is None
            or shards[0] != 1
            or inner[0] != 1
            or inner[1] != meta.shape[1]
            or shards[1] != meta.shape[1]
            or shards[2] % inner[2]
            or shards[3] % inner[3]
            or dtype.kind not in "fiu"
            or index not in ([BytesCodec, Crc32cCodec], [BytesCodec])
            or _inner_decoder(sharding.codecs) is None
            or (dtype.itemsize > 1 and endian != sys.byteorder)
        ):
            return None
        return cls(array, path)

    # ---- fetching

    def _key(self, time_index: int, i: int, j: int) -> str:
        return f"{self.path}/{self.meta.encode_chunk_key((time_index, 0, i, j))}"

    def _read_local(self, requests: list[tuple[str, int | None, int | None]]) -> list:
        out = []
        for name, start, stop in requests:
            try:
                with open(name, "rb") as f:
                    if start is None:
                        # mapped, not copied: the inner chunks decode from the page cache
                        size = os.fstat(f.fileno()).st_size
                        out.append(
                            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
                        )
                    elif start < 0:
                        f.seek(0, os.SEEK_END)
                        f.seek(max(0, f.tell() + start))
                        out.append(f.read())
                    else:
                        f.seek(start)
                        out.append(f.read(stop - start))
            except FileNotFoundError as exc:
                out.append(exc)
        return out

    def _fetch(self, requests: list[tuple[str, int | None, int | None]]) -> list:
        """bytes (or FileNotFoundError) per (object, start, stop); start None = the whole object,
        start < 0 = its last -start bytes. Remote requests go out together."""
        if not requests:
            return []
        if self.local:
            return self._read_local(requests)
        names = [r[0] for r in requests]
        # a whole object as the range "0-": one GET (s3fs asks a HEAD first for a whole object,
        # then fetches it in pieces copied into one buffer)
        starts = [0 if r[1] is None else r[1] for r in requests]
        stops = [r[2] for r in requests]
        got = self.fs.cat_ranges(names, starts, stops, on_error="return")
        for value in got:
            if isinstance(value, Exception) and not isinstance(value, FileNotFoundError):
                raise value
        return got

    def _parse_index(self, data: bytes) -> np.ndarray:
        index = data[-self.index_bytes :] if self.index_at_end else data[: self.index_bytes]
        entries = np.frombuffer(index, dtype="<u8", count=2 * self.grid[0] * self.grid[1])
        return entries.reshape(self.grid[0], self.grid[1], 2)

    # ---- reading

    def read(self, time_index: int, rows: slice, cols: slice) -> np.ndarray:
        """The window as stored, (rows, cols, bands)."""
        r0, r1 = max(rows.start or 0, 0), min(rows.stop, self.height)
        c0, c1 = max(cols.start or 0, 0), min(cols.stop, self.width)
        out = np.empty((r1 - r0, c1 - c0, self.bands), dtype=self.dtype)
        if out.size == 0:
            return out
        sy, sx, iy, ix = self.shard_rows, self.shard_cols, self.inner_rows, self.inner_cols
        shards = []  # (object, shard row, shard col, [(inner row, inner col)] wanted, whole)
        for i in range(r0 // sy, (r1 - 1) // sy + 1):
            for j in range(c0 // sx, (c1 - 1) // sx + 1):
                wanted = [
                    (a, b)
                    for a in range(
                        max(r0, i * sy) // iy - i * self.grid[0],
                        (min(r1, (i + 1) * sy) - 1) // iy + 1 - i * self.grid[0],
                    )
                    for b in range(
                        max(c0, j * sx) // ix - j * self.grid[1],
                        (min(c1, (j + 1) * sx) - 1) // ix + 1 - j * self.grid[1],
                    )
                ]
                present = (
                    (min(sy, self.height - i * sy) + iy - 1)
                    // iy
                    * ((min(sx, self.width - j * sx) + ix - 1) // ix)
                )
                shards.append((self._key(time_index, i, j), i, j, wanted, len(wanted) >= present))

        def place(i, j, a, b, chunk):
            self._place(out, chunk, i, j, a, b, r0, r1, c0, c1)

        if self.local:
            self._read_files(shards, place)
        else:
            self._read_streamed(shards, place)
        return out

    def _read_files(self, shards, place) -> None:
        """Local shards: whole objects, and the indexes of the others, in one round; then one
        read per contiguous run of the inner chunks wanted."""
        first = self._fetch(
            [
                (name, None, None) if whole else (name, -self.index_bytes, None)
                for name, *_, whole in shards
            ]
        )
        runs, parts = [], []  # ranged reads; (shard, inner chunk, run, offset in run, nbytes)
        for (name, i, j, wanted, whole), data, index in self._present(shards, first, place):
            if whole:
                view = memoryview(data)  # inner chunks sliced without copies
                for a, b in wanted:
                    offset, nbytes = (int(v) for v in index[a, b])
                    chunk = None if offset == EMPTY else view[offset : offset + nbytes]
                    place(i, j, a, b, chunk)
                continue
            for offset, nbytes, a, b in self._spans(index, i, j, wanted, place):
                if runs and runs[-1][0] == name and runs[-1][2] == offset:
                    runs[-1][2] = offset + nbytes
                else:
                    runs.append([name, offset, offset + nbytes])
                parts.append((i, j, a, b, len(runs) - 1, offset - runs[-1][1], nbytes))
        fetched = self._fetch([tuple(r) for r in runs])
        for i, j, a, b, run, at, nbytes in parts:
            data = fetched[run]
            if isinstance(data, FileNotFoundError):  # gone since its index was read
                raise data
            place(i, j, a, b, memoryview(data)[at : at + nbytes])

    def _read_streamed(self, shards, place) -> None:
        """Remote shards: their indexes in one round, then the inner chunks wanted in requests of
        up to PART_BYTES (contiguous ones together), IN_FLIGHT at a time, each decoded as soon as
        it arrives, while the others are still on the wire.

        One request for a whole shard (s3fs: a HEAD, then 50 MiB pieces copied into one buffer)
        cost 1.6x the client CPU and 1.3x the wall time of the same bytes in 6 MiB ranges, and its
        decoding could only start once the last byte had come (benchmarks/store_formats.py)."""
        indexes = self._fetch([(name, -self.index_bytes, None) for name, *_ in shards])
        parts = []  # [object, start, stop, [(i, j, a, b, offset in the part, nbytes)]]
        for (name, i, j, wanted, _), _, index in self._present(shards, indexes, place):
            for offset, nbytes, a, b in self._spans(index, i, j, wanted, place):
                last = parts[-1] if parts else None
                if (
                    last is not None
                    and last[0] == name
                    and last[2] == offset
                    and last[2] + nbytes - last[1] <= PART_BYTES
                ):
                    last[3].append((i, j, a, b, offset - last[1], nbytes))
                    last[2] = offset + nbytes
                else:
                    parts.append([name, offset, offset + nbytes, [(i, j, a, b, 0, nbytes)]])
        for part, data in self._arriving(parts):
            view = memoryview(data)
            for i, j, a, b, at, nbytes in part[3]:
                place(i, j, a, b, view[at : at + nbytes])

    def _present(self, shards, fetched, place):
        """(shard, its bytes as fetched, its index) for each shard that exists; the wanted inner
        chunks of a shard never written are placed as fill."""
        for shard, data in zip(shards, fetched):
            if isinstance(data, FileNotFoundError):
                _, i, j, wanted, _ = shard
                for a, b in wanted:
                    place(i, j, a, b, None)
                continue
            yield shard, data, self._parse_index(data)

    def _spans(self, index, i, j, wanted, place) -> list[tuple[int, int, int, int]]:
        """(offset, nbytes, a, b) of the wanted inner chunks that were written, in file order; the
        ones never written are placed as fill."""
        spans = []
        for a, b in wanted:
            offset, nbytes = index[a, b]
            if offset == EMPTY:
                place(i, j, a, b, None)
            else:
                spans.append((int(offset), int(nbytes), a, b))
        return sorted(spans)

    def _arriving(self, parts):
        """(part, its bytes) for each ranged request, in the order they complete; at most
        IN_FLIGHT requests out at once. A part gone since its index was read raises."""
        if not getattr(self.fs, "async_impl", False):
            fetched = self._fetch([(name, start, stop) for name, start, stop, _ in parts])
            for part, data in zip(parts, fetched):
                if isinstance(data, FileNotFoundError):
                    raise data
                yield part, data
            return
        import asyncio
        import collections
        import concurrent.futures

        waiting, running = collections.deque(parts), {}

        def send():
            name, start, stop, _ = part = waiting.popleft()
            read = self.fs._cat_file(name, start=start, end=stop)
            running[asyncio.run_coroutine_threadsafe(read, self.fs.loop)] = part

        for _ in range(min(IN_FLIGHT, len(waiting))):
            send()
        try:
            while running:
                done, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    part = running.pop(future)
                    if waiting:
                        send()
                    yield part, future.result()
        finally:
            for future in running:  # an error, or the reader stopped: nothing left on the wire
                future.cancel()

    def _place(self, out, chunk, i, j, a, b, r0, r1, c0, c1) -> None:
        """Inner chunk (a, b) of shard (i, j), decoded, into its part of `out` (the window r0:r1, c0:c1)."""
        y0 = i * self.shard_rows + a * self.inner_rows
        x0 = j * self.shard_cols + b * self.inner_cols
        ys, ye = max(r0, y0), min(r1, y0 + self.inner_rows)
        xs, xe = max(c0, x0), min(c1, x0 + self.inner_cols)
        target = out[ys - r0 : ye - r0, xs - c0 : xe - c0]
        if chunk is None:
            target[...] = self.fill
            return
        buffer = self._buffer()
        self.codec(chunk, buffer)
        interleave(buffer[:, ys - y0 : ye - y0, xs - x0 : xe - x0], target)

    def _buffer(self) -> np.ndarray:
        local = _BUFFERS.__dict__
        key = (self.dtype.str, self.bands, self.inner_rows, self.inner_cols)
        if local.get("key") != key:
            local["key"] = key
            local["buffer"] = np.empty((self.bands, self.inner_rows, self.inner_cols), self.dtype)
        return local["buffer"]


_BUFFERS = threading.local()  # one decode buffer per thread


def _inner_decoder(codecs):
    """decode(encoded bytes, out array) for an inner chunk's codecs, or None if not known here."""
    from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

    if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
        return None
    if len(codecs) == 1:

        def raw(data, out):
            flat = out.reshape(-1).view(np.uint8)
            if len(data) != flat.size:
                raise ValueError(f"an inner chunk of {len(data)} bytes, not {flat.size}")
            flat[:] = np.frombuffer(data, dtype=np.uint8)

        return raw
    if isinstance(codecs[1], BloscCodec):
        import numcodecs

        blosc = numcodecs.Blosc()

        def blosc_decode(data, out):
            if len(data) < 16 or int.from_bytes(data[12:16], "little") > len(data):
                raise ValueError(f"{len(data)} bytes, fewer than the blosc header's")  # no crash
            blosc.decode(data, out=out)

        return blosc_decode
    if isinstance(codecs[1], ZstdCodec):
        import numcodecs

        zstd = numcodecs.Zstd()

        def zstd_decode(data, out):
            decoded = zstd.decode(data)
            flat = out.reshape(-1).view(np.uint8)
            if len(decoded) != flat.size:
                raise ValueError(f"an inner chunk decodes to {len(decoded)} bytes, not {flat.size}")
            flat[:] = np.frombuffer(decoded, dtype=np.uint8)

        return zstd_decode
    return None
