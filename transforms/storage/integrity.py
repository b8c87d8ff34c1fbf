"""Store integrity: is every chunk a store marks as written really there, whole?

Zarr writes no file for a chunk that is all fill value, so an absent chunk file is not by
itself a hole. Each done marker (`<store>/.efm/done/<t.row.col>`) therefore records what the
write left, as JSON:

    {"efm_chunk_files": 1, "files": {"embedding/0.1.1.0": {"bytes": 81234, "crc32": 3915...},
                                    "confidence/0.1.1": null}}

a chunk file's byte size and the crc32 of its bytes, or `null` for a chunk of fill values
(no file, on purpose). With that record:

* missing  -- the marker records a file and there is none (deleted, lost in a copy);
* altered  -- the file's size (or, when decoded, its crc32) is not the recorded one (truncated);
* corrupt  -- the file does not decode (any store, recorded or not);
* unrecorded -- a store written before these records (empty markers) or without markers: an
  absent file there may be a chunk of fill values or a deleted one; nothing can tell, so it is
  counted and reported as "absent (no record whether it held data)", not as damage.

`check` lists the markers and the chunk files (two listings, the markers' small records) and,
with `decode=True`, reads and decodes every chunk file, one at a time per thread (`efm verify`,
`efm extract --resume --repair`). Without decoding it costs no chunk read: that is what every
reader does before it starts (`store.open_embeddings`); readers then catch the rest (a chunk that
fails to decode, a file gone since) where they read it (`ChunkGuard`, transforms/storage/readers.py).
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from transforms.core.chunks import MARKER_DIR
from transforms.core.errors import EfmError

RECORD_KEY = "efm_chunk_files"
RECORD_VERSION = 1
UNRECORDED_COUNTER = (
    "input_chunks_unrecorded_absent"  # Beam counter: absent chunks no record vouches for
)
SHOWN = 10  # damaged chunks named one per line by `efm verify`; the rest are counted
PRODUCT_COMMANDS = {
    "classes": "efm classify (or efm predict, whichever made it)",
    "change": "efm change",
    "similarity": "efm similarity",
    "prediction": "efm predict",
}


# ---------------------------------------------------------------- the record a marker holds


def file_record(data: bytes | None) -> dict | None:
    """What a marker records of one chunk file: its size and crc32, or None for no file (all fill)."""
    if data is None:
        return None
    return {"bytes": len(data), "crc32": zlib.crc32(data)}


def marker_bytes(records: dict[str, dict | None]) -> bytes:
    """The marker's content: {"<variable>/<chunk key>": record} (see `file_record`)."""
    return json.dumps({RECORD_KEY: RECORD_VERSION, "files": records}, sort_keys=True).encode()


def parse_marker(data: bytes) -> dict[str, dict | None] | None:
    """A marker's records, or None for a marker that records nothing (written before records, or unreadable)."""
    if not data:
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("files"), dict):
        return None
    return parsed["files"]


# ---------------------------------------------------------------- the store's layout


@dataclasses.dataclass(frozen=True)
class ArrayMeta:
    """One data variable of a store: what names and decodes its chunk files (Zarr 2) or its
    shard files (Zarr 3: the unit a worker writes, and a marker records)."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]  # the file's extent: the chunk (Zarr 2), the shard (Zarr 3)
    dtype: str
    compressor: dict | None
    filters: tuple
    separator: str
    zarr_format: int = 2
    document: str = ""  # Zarr 3: the array's zarr.json (to decode a shard with zarr itself)

    def key(self, marker: str) -> str:
        """The file key (`0.1.1.0`; Zarr 3: `c/0/0/1/1`) of the chunk a marker (`t.row.col`, pixel offsets) names."""
        t, row, col = (int(v) for v in marker.split("."))
        offsets = {"time": t, "y": row, "x": col}
        index = [
            offsets.get(d, 0) // (c if d in ("y", "x") else 1)
            for d, c in zip(self.dims, self.chunks)
        ]
        text = self.separator.join(str(i) for i in index)
        return f"c{self.separator}{text}" if self.zarr_format == 3 else text

    def marker(self, key: str) -> str | None:
        """The marker (`t.row.col`) of a file key, or None if the key is not a chunk of this array."""
        if self.zarr_format == 3:
            if not key.startswith(f"c{self.separator}"):
                return None
            key = key[2:]
        try:
            index = dict(zip(self.dims, (int(v) for v in key.split(self.separator)), strict=True))
        except ValueError:
            return None
        rows, cols = self.chunks[self.dims.index("y")], self.chunks[self.dims.index("x")]
        return f"{index.get('time', 0)}.{index['y'] * rows}.{index['x'] * cols}"

    def decode(self, data: bytes, key: str | None = None) -> np.ndarray:
        """The chunk's values; raises if the bytes are not one whole chunk (shard) of this array."""
        if self.zarr_format == 3:
            return self._decode_shard(data, key)
        import numcodecs

        out = data
        if self.compressor:
            out = numcodecs.get_codec(dict(self.compressor)).decode(out)
        for spec in reversed(self.filters):
            out = numcodecs.get_codec(dict(spec)).decode(out)
        values = np.frombuffer(bytes(out) if not isinstance(out, np.ndarray) else out, np.uint8)
        expected = int(np.prod(self.chunks)) * np.dtype(self.dtype).itemsize
        if values.nbytes != expected:
            raise ValueError(f"decodes to {values.nbytes} bytes, a chunk holds {expected}")
        return values.view(self.dtype).reshape(self.chunks)

    def _decode_shard(self, data: bytes, key: str | None) -> np.ndarray:
        """Decode a whole shard with zarr: the array's own metadata over a memory store holding it."""
        import zarr
        from zarr.core.buffer import default_buffer_prototype
        from zarr.storage import MemoryStore

        key = key or self.key("0.0.0")
        index = [int(v) for v in key[2:].split(self.separator)]
        proto = default_buffer_prototype()
        memory = {
            "zarr.json": proto.buffer.from_bytes(self.document.encode()),
            key: proto.buffer.from_bytes(data),
        }
        array = zarr.open_array(MemoryStore(memory), mode="r", zarr_format=3)
        region = tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, self.chunks, self.shape)
        )
        return array[region]


def data_arrays(path: str) -> list[ArrayMeta]:
    """The store's data variables (arrays over y and x), from its consolidated metadata."""
    fs, root = _fs(path)
    if fs.exists(f"{root}/zarr.json"):
        return _data_arrays_v3(fs, root)
    meta = json.loads(fs.cat_file(f"{root}/.zmetadata"))["metadata"]
    arrays = []
    for key, value in sorted(meta.items()):
        if not key.endswith("/.zarray"):
            continue
        name = key[: -len("/.zarray")]
        dims = tuple(meta.get(f"{name}/.zattrs", {}).get("_ARRAY_DIMENSIONS", ()))
        if "y" not in dims or "x" not in dims or "/" in name:
            continue
        arrays.append(
            ArrayMeta(
                name=name,
                dims=dims,
                shape=tuple(value["shape"]),
                chunks=tuple(value["chunks"]),
                dtype=np.dtype(value["dtype"]).str,
                compressor=value.get("compressor"),
                filters=tuple(value.get("filters") or ()),
                separator=value.get("dimension_separator") or ".",
            )
        )
    return arrays


def _data_arrays_v3(fs, root: str) -> list[ArrayMeta]:
    group = json.loads(fs.cat_file(f"{root}/zarr.json"))
    children = (group.get("consolidated_metadata") or {}).get("metadata") or {}
    if not children:  # not consolidated: each array's own document
        import zarr

        opened = zarr.open_group(f"{root}", mode="r", storage_options=None)
        names = list(opened.array_keys())
        children = {n: json.loads(fs.cat_file(f"{root}/{n}/zarr.json")) for n in names}
    arrays = []
    for name, doc in sorted(children.items()):
        dims = tuple(doc.get("dimension_names") or ())
        if doc.get("node_type") != "array" or "y" not in dims or "x" not in dims or "/" in name:
            continue
        encoding = doc.get("chunk_key_encoding") or {}
        arrays.append(
            ArrayMeta(
                name=name,
                dims=dims,
                shape=tuple(doc["shape"]),
                chunks=tuple(doc["chunk_grid"]["configuration"]["chunk_shape"]),
                dtype=str(doc["data_type"]),
                compressor=None,
                filters=(),
                separator=(encoding.get("configuration") or {}).get("separator", "/"),
                zarr_format=3,
                document=json.dumps(doc),
            )
        )
    return arrays


def _fs(path: str):
    import fsspec

    from transforms.sources.remote_fs import storage_options

    # s3://: anonymous unless credentials are set (a public bucket), as every reader
    fs, root = fsspec.core.url_to_fs(path, **(storage_options(path) or {}))
    return fs, root.rstrip("/")


def _listing(fs, folder: str) -> dict[str, int]:
    """name -> size of the files in `folder` (empty if there is none)."""
    try:
        entries = fs.ls(folder, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {
        e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
        for e in entries
        if e.get("type") != "directory"
    }


def read_markers(path: str) -> dict[str, dict | None]:
    """marker name -> its records (None: the marker records nothing)."""
    fs, root = _fs(path)
    fs.invalidate_cache()
    folder = f"{root}/{MARKER_DIR}"
    sizes = _listing(fs, folder)
    recorded = [name for name, size in sizes.items() if size]
    contents = fs.cat([f"{folder}/{name}" for name in recorded]) if recorded else {}
    by_name = {k.rstrip("/").rsplit("/", 1)[-1]: v for k, v in contents.items()}
    return {
        name: parse_marker(by_name.get(name, b"")) if size else None for name, size in sizes.items()
    }


# ---------------------------------------------------------------- the check


@dataclasses.dataclass(frozen=True)
class Problem:
    chunk: str  # "<variable>/<chunk key>", the chunk file's path in the store
    kind: str  # "missing" | "altered" | "corrupt"
    detail: str
    marker: str | None  # the done marker that covers it (what --repair drops)

    def line(self) -> str:
        return f"{self.chunk}: {self.kind} ({self.detail})"


@dataclasses.dataclass
class Report:
    path: str
    kind: str  # the store's efm_product ("embeddings", "classes", ...)
    status: str | None
    chunks: int = 0  # chunk files checked (present) + recorded absences
    decoded: int = 0
    empty: int = 0  # chunks recorded as all fill (no file, on purpose)
    unrecorded_absent: int = 0  # marked done, no record, no file: fill or deleted, nothing can tell
    unmarked: int = 0  # chunk files with no done marker (a store written without markers)
    problems: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def sound(self) -> bool:
        return not self.problems

    def damaged_markers(self) -> set[str]:
        return {p.marker for p in self.problems if p.marker is not None}


def repair_command(path: str, kind: str) -> str:
    """What re-creates a damaged chunk of a store of `kind`."""
    if kind == "embeddings":
        return f"efm extract --resume --repair --output {path} ... (the flags that made it)"
    command = PRODUCT_COMMANDS.get(kind, "the efm command that made it")
    return (
        f"{command} ... --output {path} --overwrite (the flags that made it: a product is "
        "recomputed whole from its embedding store)"
    )


def check(
    path: str,
    *,
    decode: bool = False,
    threads: int = 4,
    on_chunk: Callable[[], None] | None = None,
) -> Report:
    """Compare every done marker's record with the chunk files; with `decode`, read and decode every chunk file.

    Memory: one chunk per thread. `on_chunk` is called once per chunk checked (progress)."""
    import zarr

    from transforms.storage import store

    fs, root = _fs(path)
    from transforms.sources.remote_fs import storage_options

    attrs = dict(
        zarr.open_group(path, mode="r", storage_options=storage_options(path) or None).attrs
    )
    report = Report(path, str(attrs.get("efm_product", "embeddings")), attrs.get(store.STATUS_ATTR))
    arrays = data_arrays(path)
    markers = read_markers(path)
    tasks: list[tuple[ArrayMeta, str, dict | None, str | None]] = []  # to decode
    for array in arrays:
        files = _chunk_listing(fs, root, array)
        covered = set()
        for marker, records in sorted(markers.items()):
            try:
                key = array.key(marker)
            except ValueError:
                continue  # not a marker name (a stray file in .efm/done/)
            name = f"{array.name}/{key}"
            covered.add(key)
            recorded = records is not None and name in records
            record = records.get(name) if recorded else None
            size = files.get(key)
            report.chunks += 1
            if size is None:
                if not recorded:
                    report.unrecorded_absent += 1
                elif record is None:
                    report.empty += 1
                else:
                    report.problems.append(
                        Problem(
                            name,
                            "missing",
                            f"its marker records a file of {record['bytes']} bytes",
                            marker,
                        )
                    )
                if on_chunk:
                    on_chunk()
                continue
            if record is not None and size != record.get("bytes"):
                report.problems.append(
                    Problem(
                        name,
                        "altered",
                        f"{size} bytes, its marker records {record['bytes']}",
                        marker,
                    )
                )
                if on_chunk:
                    on_chunk()
                continue
            if decode:
                tasks.append((array, key, record, marker))
            elif on_chunk:
                on_chunk()
        for key in sorted(set(files) - covered):
            if array.marker(key) is None:
                continue
            report.unmarked += 1
            report.chunks += 1
            if decode:
                tasks.append((array, key, None, None))
            elif on_chunk:
                on_chunk()

    def one(task) -> Problem | None:
        array, key, record, marker = task
        name = f"{array.name}/{key}"
        try:
            data = fs.cat_file(f"{root}/{name}")
        except FileNotFoundError:
            return Problem(name, "missing", "the file went away while it was checked", marker)
        try:
            if record is not None and zlib.crc32(data) != record.get("crc32"):
                return Problem(name, "altered", "its bytes differ from the recorded crc32", marker)
            array.decode(data, key)
        except Exception as exc:  # any codec's error: the chunk cannot be read
            return Problem(name, "corrupt", f"does not decode: {_first_line(exc)}", marker)
        finally:
            if on_chunk:
                on_chunk()
        return None

    if tasks:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for problem in pool.map(one, tasks):
                report.decoded += 1
                if problem is not None:
                    report.problems.append(problem)
    report.problems.sort(key=lambda p: p.chunk)
    return report


def count_chunks(path: str) -> int:
    """Roughly what `check` will look at (for progress): the markers, or the chunk files of a store without."""
    fs, root = _fs(path)
    arrays = data_arrays(path)
    markers = len(_listing(fs, f"{root}/{MARKER_DIR}"))
    if markers:
        return markers * len(arrays)
    return sum(len(_chunk_listing(fs, root, a)) for a in arrays)


def _chunk_listing(fs, root: str, array: ArrayMeta) -> dict[str, int]:
    """key -> size of an array's chunk files (Zarr 2: `0.1.1.0` beside .zarray; Zarr 3: `c/0/0/1/1`)."""
    if array.zarr_format == 2:
        return {
            k: size
            for k, size in _listing(fs, f"{root}/{array.name}").items()
            if not k.startswith(".")
        }
    base = f"{root}/{array.name}/"
    try:
        found = fs.find(f"{base}c", detail=True)
    except FileNotFoundError:
        return {}
    return {
        name[len(base) :]: int(info.get("size") or 0)
        for name, info in found.items()
        if info.get("type") != "directory" and name.startswith(base)
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


# ---------------------------------------------------------------- what readers raise


class DamagedStoreError(EfmError, RuntimeError):
    """A chunk a store marks as written is missing or does not decode: one line naming it and the repair."""


def damaged_message(path: str, kind: str, problems: list[Problem]) -> str:
    first = problems[0]
    more = f" and {len(problems) - 1} more damaged chunk(s)" if len(problems) > 1 else ""
    return (
        f"{path} is damaged: chunk {first.chunk} is {first.kind} ({first.detail}){more}; "
        f"repair it with `{repair_command(path, kind)}` (`efm verify {path}` lists every damaged chunk)"
    )


class ChunkGuard:
    """Per-chunk check for a reader: raise DamagedStoreError, never a silent fill, when a chunk marked
    written (with a record of its file) is absent, or a chunk file does not decode. Costs a stat and
    one small marker read only for a chunk read back as all fill."""

    def __init__(self, path: str, kind: str = "embeddings"):
        self.path, self.kind = path, kind
        self._records: dict[str, dict | None] = {}

    def __getstate__(self):
        return {"path": self.path, "kind": self.kind}

    def __setstate__(self, state):
        self.__init__(state["path"], state["kind"])

    def _marker_record(self, marker: str) -> dict | None:
        if marker not in self._records:
            fs, root = _fs(self.path)
            try:
                data = fs.cat_file(f"{root}/{MARKER_DIR}/{marker}")
            except FileNotFoundError:
                data = b""
            self._records[marker] = parse_marker(data)
        return self._records[marker]

    def check_absent(self, variable: str, key: str, marker: str) -> None:
        """Called for a chunk read back as all fill: raise if its file is gone but its marker records one."""
        fs, root = _fs(self.path)
        name = f"{variable}/{key}"
        if fs.exists(f"{root}/{name}"):
            return
        records = self._marker_record(marker)
        if records is None or name not in records:  # an old store: no data, or deleted?
            import apache_beam as beam

            from transforms.core.metrics import METRICS_NAMESPACE

            beam.metrics.Metrics.counter(METRICS_NAMESPACE, UNRECORDED_COUNTER).inc()
            return
        record = records[name]
        if record is not None:
            raise self.damaged(
                Problem(
                    name, "missing", f"its marker records a file of {record['bytes']} bytes", marker
                )
            )

    def damaged(self, problem: Problem) -> DamagedStoreError:
        return DamagedStoreError(damaged_message(self.path, self.kind, [problem]))

    def corrupt(self, name: str, exc: BaseException) -> DamagedStoreError:
        return self.damaged(Problem(name, "corrupt", f"does not decode: {_first_line(exc)}", None))
