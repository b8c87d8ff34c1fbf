"""Creating a store from its template and writing its chunks with zarr itself, no dask.

What xarray-beam's `setup_zarr` / `write_chunk_to_zarr` do, for the stores efm writes, at a
fraction of the cost (benchmarks/store_write_paths.py): `setup_zarr` calls `to_zarr(compute=False)`
on the lazy template, which builds a dask graph (and imports dask.distributed) only to write
metadata, ~0.1 CPU s against 0.02; `write_chunk_to_zarr` reopens the whole store with xarray for
every chunk and writes it through a dask graph, ~5x a plain zarr write. Here the metadata is
written once and each chunk is one `array[region] = values` per variable. The stores are the
same, file for file: tests/test_store_direct.py compares them with what xarray-beam writes.

efm writes Zarr 3 (the geo-embedding convention, docs/data-contract.md): every data variable
sharded, one shard per chunk a worker writes (so a shard is always written whole, by one
writer), inner chunks of `inner_side` px for small range reads, Blosc-Zstd (`CODEC`). A shard is
encoded by zarr itself into memory and put in one request; stores from before (Zarr 2) are
still written the v2 way when resumed.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import xarray as xr
from xarray.backends.zarr import FillValueCoder, encode_zarr_attr_value

ZARR_FORMAT = 3  # what new stores are written in (a store being resumed keeps its own)
INNER = 256  # px: the inner chunk's side (benchmarks/store_shards.py: small windows vs per-request cost)
CODEC = {"cname": "zstd", "clevel": 1, "shuffle": "noshuffle"}  # Blosc: benchmarks/store_codecs.py
# Blosc's block for values of 4 bytes and more (float32): its automatic block at Zstd level 1 is
# small, and each block is compressed alone. A 256 KiB block makes a float32 shard of de-quantised
# codes 23 % smaller (0.357 of the data against 0.464) and decodes it 13-16 % faster (the decode is
# what a product reading a Zarr 3 store pays above a Zarr 2 one; benchmarks/RESULTS.md "Store
# formats"). 1-byte values keep the automatic block: 256 KiB makes int8 codes 2 % bigger.
WIDE_BLOCKSIZE = 256 * 1024


def codec(dtype) -> dict:
    """The Blosc codec's settings for an array of `dtype` (`CODEC`, with WIDE_BLOCKSIZE for values
    of 4 bytes and more)."""
    return {**CODEC, "blocksize": WIDE_BLOCKSIZE} if np.dtype(dtype).itemsize >= 4 else dict(CODEC)


def inner_side(shard: int) -> int:
    """The inner chunk's side for a shard of `shard` px: INNER, or the largest power of two
    below it that divides the shard (a small --chunk-size), or the shard itself."""
    side = INNER
    while side >= 16:
        if shard % side == 0 and side <= shard:
            return side
        side //= 2
    return shard


def dims_of(array) -> tuple[str, ...]:
    """An array's dimension names: Zarr 3's `dimension_names`, else xarray's `_ARRAY_DIMENSIONS` (Zarr 2)."""
    names = getattr(array.metadata, "dimension_names", None)
    if names:
        return tuple(str(n) for n in names)
    return tuple(array.attrs.get("_ARRAY_DIMENSIONS", ()))


@contextlib.contextmanager
def quiet():
    """Without the warnings zarr gives for what efm writes on purpose: consolidated metadata in a
    Zarr 3 store (one read opens it on a bucket; readers that do not know it ignore it), string
    coordinates, the .efm/ bookkeeping folder beside the arrays."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Consolidated metadata is currently not part")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        warnings.filterwarnings(
            "ignore", message=".*not recognized as a component of a Zarr hierarchy"
        )
        yield


def consolidate(path: str) -> None:
    import zarr

    with quiet():
        zarr.consolidate_metadata(path)


def _attrs(attrs: dict) -> dict:
    return {k: encode_zarr_attr_value(v) for k, v in attrs.items()}


def _coordinates(template: xr.Dataset, name: str) -> str | None:
    """xarray's `coordinates` attribute of a data variable: its non-dimension coords, sorted."""
    dims = set(template[name].dims)
    names = sorted(
        str(c) for c in template.coords if c not in template.dims and set(template[c].dims) <= dims
    )
    return " ".join(names) or None


def create(
    path: str, template: xr.Dataset, chunks: dict, fills: dict, zarr_format: int = ZARR_FORMAT
) -> None:
    """Write `template`'s coords, attrs and data-variable metadata (no chunks) at `path`, which holds no store.

    chunks: dim -> the write unit (Zarr 2: the chunk; Zarr 3: the shard); fills: data variable -> its fill value.
    """
    import zarr

    data_vars = list(template.data_vars)
    for name in data_vars:
        if "coordinates" in template[name].attrs or "coordinates" in template[name].encoding:
            raise ValueError(
                f"{name}: an explicit `coordinates` is not supported here"
            )  # xarray's rules for it are not ours to copy
    # Coordinates through xarray (its CF encoding of times, strings and spatial_ref); "w-": never replaces anything.
    coords = template.drop_vars(data_vars)
    coords.attrs = {}
    if (
        zarr_format == 3 and "band" in coords.coords
    ):  # the convention's strings: Zarr 3's `string` type
        coords = coords.assign_coords(band=coords["band"].values.astype(object))
    with quiet():
        if zarr_format == 3:
            # The group and its attributes first ("w-": never over anything), so that a set-up
            # cut short at any point leaves a group that says it is efm's and incomplete.
            # (xarray rewrites the group's attributes with the dataset's: give it them too)
            zarr.open_group(path, mode="w-", zarr_format=3, attributes=_attrs(template.attrs))
            coords.attrs = dict(template.attrs)
            coords.to_zarr(path, mode="a", consolidated=False, zarr_format=3)
        else:
            coords.to_zarr(path, mode="w-", consolidated=False, zarr_format=zarr_format)
        group = zarr.open_group(path, mode="r+", zarr_format=zarr_format)
        for name in data_vars:
            variable = template[name]
            attrs = dict(variable.attrs)
            coordinates = _coordinates(template, name)
            if coordinates:
                attrs["coordinates"] = coordinates
            shape = tuple(chunks[d] for d in variable.dims)
            if zarr_format == 2:
                attrs["_ARRAY_DIMENSIONS"] = list(variable.dims)
                group.create_array(
                    name,
                    shape=variable.shape,
                    chunks=shape,
                    dtype=variable.dtype,
                    fill_value=fills[name],
                    attributes=_attrs(attrs),
                )
                continue
            from zarr.codecs import BloscCodec

            # xarray masks by the `_FillValue` attribute in Zarr 3 (the array's fill_value is Zarr's own).
            attrs["_FillValue"] = FillValueCoder.encode(
                np.asarray(fills[name]).item(), np.dtype(variable.dtype)
            )
            inner = tuple(
                inner_side(c) if d in ("y", "x") else c for d, c in zip(variable.dims, shape)
            )
            group.create_array(
                name,
                shape=variable.shape,
                shards=shape,
                chunks=inner,
                dtype=variable.dtype,
                fill_value=fills[name],
                compressors=[BloscCodec(**codec(variable.dtype))],
                dimension_names=list(variable.dims),
                attributes=_attrs(attrs),
            )
        # The group's attributes exactly as xarray writes them: the dataset's, and no global `coordinates`
        # (every coordinate here belongs to a data variable).
        group.attrs.put(_attrs(template.attrs))  # one write: never a moment without them
        zarr.consolidate_metadata(path, zarr_format=zarr_format)


class ChunkWriter:
    """Writes (key, Dataset) chunks into a store made by `create`; opens it once (per worker).

    A chunk lands in the store's own dimension order (a Zarr 3 embedding store is (time, band,
    y, x), one of Zarr 2 (time, y, x, band): the chunk is transposed to it). A chunk that is
    exactly one whole write unit is written as its file in one step:
    - Zarr 3: one whole shard, encoded by zarr itself into memory (the store's own metadata
      over a memory store), then put as one object: zarr's bytes, one request, no read-back;
    - Zarr 2: one whole chunk of a plain array (one compressor, no filters, C order; at the
      array's edge, the part inside it), encoded with the array's own codec: what zarr writes,
      byte for byte (tests/test_store_direct.py), without zarr's per-write machinery.
    Anything else goes through zarr, which merges it with what is there.
    """

    def __init__(self, path: str, template: xr.Dataset, chunks: dict):
        import fsspec
        import fsspec.implementations.local
        import zarr

        self.group = zarr.open_group(path, mode="r+")
        self.template = template
        self.chunks = chunks
        self.arrays = {name: self.group[name] for name in template.data_vars}
        self.dims = {name: dims_of(array) for name, array in self.arrays.items()}
        self.fs, self.root = fsspec.core.url_to_fs(path)
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, fsspec.implementations.local.LocalFileSystem)

    def _shard_file(self, name: str, region: tuple[slice, ...]) -> str | None:
        """The shard file `region` fills whole (Zarr 3), or None."""
        array = self.arrays[name]
        meta = array.metadata
        if getattr(meta, "zarr_format", None) != 3:
            return None
        shard = array.shards or array.chunks
        if any(
            r.start % c or (r.stop - r.start != c and r.stop != n)
            for r, c, n in zip(region, shard, meta.shape)
        ):
            return None
        key = meta.encode_chunk_key(tuple(r.start // c for r, c in zip(region, shard)))
        return f"{self.root}/{name}/{key}"

    def _write_shard(self, name: str, path: str, region, values: np.ndarray) -> bytes | None:
        """Encode one whole shard with zarr into memory and put it; returns its bytes (None: all fill, no file)."""
        import zarr
        from zarr.core.buffer import default_buffer_prototype
        from zarr.storage import MemoryStore

        array = self.arrays[name]
        memory: dict = dict(array.metadata.to_buffer_dict(default_buffer_prototype()))
        scratch = zarr.open_array(MemoryStore(memory), mode="r+", zarr_format=3)
        scratch[region] = values
        written = [k for k in memory if k != "zarr.json"]
        if not written:  # zarr writes no shard of fill values, and drops an old one
            if self.fs.exists(path):
                self.fs.rm(path)
            return None
        (key,) = written
        data = memory[key].to_bytes()
        if self.local:  # nested keys (c/0/0/1/1): the folders first, on a disk
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)
        return data

    def _chunk_file(self, name: str, region: tuple[slice, ...]) -> str | None:
        """The chunk file `region` fills whole, when the array is plain enough to write it directly."""
        meta = self.arrays[name].metadata
        if getattr(meta, "zarr_format", None) != 2 or meta.filters or meta.order != "C":
            return None
        if any(
            r.start % c or (r.stop - r.start != c and r.stop != n)
            for r, c, n in zip(region, meta.chunks, meta.shape)
        ):
            return (
                None  # not one whole chunk (an edge chunk, cut by the array's end, counts as whole)
            )
        index = (meta.dimension_separator or ".").join(
            str(r.start // c) for r, c in zip(region, meta.chunks)
        )
        return f"{self.root}/{name}/{index}"

    def _write_file(self, name: str, path: str, values: np.ndarray) -> bytes | None:
        """Write one chunk file; returns its bytes (None: a chunk of fill values, no file)."""
        meta = self.arrays[name].metadata
        if _all_fill(
            values, meta.fill_value
        ):  # zarr writes no chunk of fill values, and drops an old one
            if self.fs.exists(path):
                self.fs.rm(path)
            return None
        if values.shape != tuple(
            meta.chunks
        ):  # an edge chunk: zarr 2 stores it whole, padded with the fill value
            padded = np.full(meta.chunks, meta.fill_value, dtype=values.dtype)
            padded[tuple(slice(0, n) for n in values.shape)] = values
            values = padded
        data = np.ascontiguousarray(values)
        encoded = meta.compressor.encode(data) if meta.compressor is not None else data.tobytes()
        encoded = bytes(encoded) if not isinstance(encoded, bytes) else encoded
        self.fs.pipe_file(path, encoded)
        return encoded

    def region(self, offsets: dict, sizes: dict, dims: tuple) -> tuple[slice, ...]:
        """The chunk's place; refuses what would land outside the store or straddle zarr chunks (two writers, one chunk)."""
        region = []
        for dim in dims:
            start, size, total = offsets.get(dim, 0), sizes[dim], self.template.sizes[dim]
            if start < 0 or start + size > total:
                raise ValueError(
                    f"chunk at {dim}={start} (size {size}) lies outside the store ({dim} has {total})"
                )
            step = self.chunks.get(dim, total)
            if start % step or (size % step and start + size != total):
                raise ValueError(
                    f"chunk at {dim}={start} (size {size}) is not aligned with the store's {dim} chunks of {step}"
                )
            region.append(slice(start, start + size))
        return tuple(region)

    def write(self, offsets: dict, chunk: xr.Dataset) -> dict:
        """Write the chunk; returns what its done marker records of each file it wrote
        ({"<variable>/<chunk or shard key>": {"bytes", "crc32"} or None for no file}: transforms/storage/integrity.py)."""
        from transforms.storage import integrity

        records = {}
        unknown = [name for name in chunk.data_vars if name not in self.arrays]
        if unknown:
            raise ValueError(
                f"chunk variable {unknown[0]!r} is not in the store ({', '.join(self.arrays)})"
            )
        for name in chunk.data_vars:
            variable, array, dims = chunk[name].variable, self.arrays[name], self.dims[name]
            if set(variable.dims) != set(dims) or len(variable.dims) != len(dims):
                raise ValueError(
                    f"{name}: chunk dims {variable.dims} differ from the store's {dims}"
                )
            values = np.asarray(variable.transpose(*dims).values)
            if values.dtype != array.dtype:
                # What xarray's encoding would do for float -> float (e.g. float64 results into a float32 store);
                # anything else (e.g. floats into an integer store) is a bug upstream, not a cast to make silently.
                if not (
                    np.issubdtype(values.dtype, np.floating)
                    and np.issubdtype(array.dtype, np.floating)
                ):
                    raise TypeError(
                        f"{name}: chunk dtype {values.dtype} differs from the store's {array.dtype}"
                    )
                values = values.astype(array.dtype)
            region = self.region(offsets, dict(zip(dims, values.shape)), dims)
            shard = self._shard_file(name, region)
            path = shard or self._chunk_file(name, region)
            if shard is not None:
                key = shard[len(self.root) + len(name) + 2 :]
                records[f"{name}/{key}"] = integrity.file_record(
                    self._write_shard(name, shard, region, values)
                )
            elif path is not None:
                key = path.rsplit("/", 1)[-1]
                records[f"{name}/{key}"] = integrity.file_record(
                    self._write_file(name, path, values)
                )
            else:
                array[region] = values
                records.update(self._records_of(name, region))
        return records

    def _records_of(self, name: str, region: tuple[slice, ...]) -> dict:
        """The records of the chunk files zarr wrote for `region` (read back: this path is the rare one)."""
        import itertools

        from transforms.storage import integrity

        array = self.arrays[name]
        meta = array.metadata
        units = (array.shards or array.chunks) if meta.zarr_format == 3 else meta.chunks
        ranges = [range(r.start // c, -(-r.stop // c)) for r, c in zip(region, units)]
        records = {}
        for index in itertools.product(*ranges):
            if meta.zarr_format == 3:
                key = meta.encode_chunk_key(index)
            else:
                key = (meta.dimension_separator or ".").join(map(str, index))
            try:
                data = self.fs.cat_file(f"{self.root}/{name}/{key}")
            except FileNotFoundError:
                data = None
            records[f"{name}/{key}"] = integrity.file_record(data)
        return records


def _all_fill(values: np.ndarray, fill) -> bool:
    """Every value is the fill value (NaN matches NaN); a sparse sample first, so most chunks cost nothing."""
    flat = values.reshape(-1)
    if fill is None or flat.size == 0:
        return False
    if np.issubdtype(values.dtype, np.floating) and np.isnan(fill):
        return bool(np.isnan(flat[::4099]).all()) and bool(np.isnan(flat).all())
    return bool((flat[::4099] == fill).all()) and bool((flat == fill).all())
