"""The data arrays of a store and their chunk files: which arrays hold pixels (over y and x), the
file key of each chunk a marker names and back, listing the files, and decoding one file whole
(a Zarr 2 chunk with numcodecs, a Zarr 3 shard with zarr itself). What transforms/storage/integrity.py
checks a store's markers against.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np


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
    fs, root = fs_of(path)
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


def fs_of(path: str):
    import fsspec

    from transforms.sources.remote_fs import storage_options

    # s3://: anonymous unless credentials are set (a public bucket), as every reader
    fs, root = fsspec.core.url_to_fs(path, **(storage_options(path) or {}))
    return fs, root.rstrip("/")


def listing(fs, folder: str) -> dict[str, int]:
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


def chunk_listing(fs, root: str, array: ArrayMeta) -> dict[str, int]:
    """key -> size of an array's chunk files (Zarr 2: `0.1.1.0` beside .zarray; Zarr 3: `c/0/0/1/1`)."""
    if array.zarr_format == 2:
        return {
            k: size
            for k, size in listing(fs, f"{root}/{array.name}").items()
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
