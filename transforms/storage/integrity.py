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

from transforms.core.chunks import MARKER_DIR
from transforms.core.errors import EfmError
from transforms.storage import store_arrays

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


def read_markers(path: str) -> dict[str, dict | None]:
    """marker name -> its records (None: the marker records nothing)."""
    fs, root = store_arrays.fs_of(path)
    fs.invalidate_cache()
    folder = f"{root}/{MARKER_DIR}"
    sizes = store_arrays.listing(fs, folder)
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

    fs, root = store_arrays.fs_of(path)
    from transforms.sources.remote_fs import storage_options

    attrs = dict(
        zarr.open_group(path, mode="r", storage_options=storage_options(path) or None).attrs
    )
    report = Report(path, str(attrs.get("efm_product", "embeddings")), attrs.get(store.STATUS_ATTR))
    arrays = store_arrays.data_arrays(path)
    markers = read_markers(path)
    tasks: list[tuple[store_arrays.ArrayMeta, str, dict | None, str | None]] = []  # to decode
    for array in arrays:
        files = store_arrays.chunk_listing(fs, root, array)
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
    fs, root = store_arrays.fs_of(path)
    arrays = store_arrays.data_arrays(path)
    markers = len(store_arrays.listing(fs, f"{root}/{MARKER_DIR}"))
    if markers:
        return markers * len(arrays)
    return sum(len(store_arrays.chunk_listing(fs, root, a)) for a in arrays)


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
            fs, root = store_arrays.fs_of(self.path)
            try:
                data = fs.cat_file(f"{root}/{MARKER_DIR}/{marker}")
            except FileNotFoundError:
                data = b""
            self._records[marker] = parse_marker(data)
        return self._records[marker]

    def check_absent(self, variable: str, key: str, marker: str) -> None:
        """Called for a chunk read back as all fill: raise if its file is gone but its marker records one."""
        fs, root = store_arrays.fs_of(self.path)
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
