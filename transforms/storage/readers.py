"""Reading an embedding store by path, lazily, a window at a time.

DoFns carry a `StoreReader` (a path and a few small facts), never arrays: the store is
opened once per worker, in `setup()`, and each chunk is read when its element arrives.
Values come back as float32 (int8 stores de-quantised by `store.as_float`), NaN = no data.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import affine
import numpy as np
import xarray as xr

from transforms.core.chunks import ChunkSpec, plan_chunks
from transforms.core.errors import InputError
from transforms.core.grid import Window, tile_windows
from transforms.storage import integrity, layout_view, layouts, store
from transforms.storage.chunk_files import ChunkFiles
from transforms.storage.zarr_direct import _all_fill


@dataclasses.dataclass(frozen=True)
class StoreInfo:
    """What a pipeline needs to know about a store, small enough to pickle to every worker."""

    path: str
    crs: str
    transform: tuple[float, ...]  # affine coefficients a, b, c, d, e, f
    width: int
    height: int
    chunk_rows: int
    chunk_cols: int
    years: tuple[int, ...]
    bands: tuple[str, ...]
    dtype: str
    source: str

    @property
    def affine(self) -> affine.Affine:
        return affine.Affine(*self.transform)

    def windows(self) -> list[Window]:
        return list(tile_windows(self.height, self.width, self.chunk_rows, self.chunk_cols))

    def chunk_specs(self, years: list[int]) -> list[ChunkSpec]:
        """Chunks of `years` (time_index = position in `years`, i.e. in the output store)."""
        return plan_chunks(list(years), self.windows())

    def time_index(self, year: int) -> int:
        return self.years.index(year)

    def grid_summary(self) -> dict:
        return {
            "crs": self.crs,
            "transform": list(self.transform),
            "width": self.width,
            "height": self.height,
        }


def store_info(path: str, ds: xr.Dataset | None = None, *, flag: str = "--embeddings") -> StoreInfo:
    """Open (or take) a complete embedding store and describe it."""
    import rioxarray  # noqa: F401  (registers .rio)

    ds = store.open_embeddings(path, flag=flag) if ds is None else ds
    emb = ds["embedding"]
    chunks = emb.encoding.get("chunks") or emb.encoding.get("preferred_chunks")
    chunks = dict(zip(emb.dims, chunks)) if isinstance(chunks, tuple) else dict(chunks or {})
    try:
        crs = str(ds.rio.crs) if ds.rio.crs is not None else ds.attrs["crs"]
        transform = ds.rio.transform(recalc=False)
    except Exception as exc:  # rioxarray raises several types for a missing grid mapping
        raise InputError(
            flag, f"{path} has no readable CRS/transform (spatial_ref): {exc}"
        ) from None
    years = tuple(int(str(t)[:4]) for t in ds["time"].values)
    return StoreInfo(
        path=path,
        crs=crs,
        transform=tuple(transform)[:6],
        width=ds.sizes["x"],
        height=ds.sizes["y"],
        chunk_rows=int(chunks.get("y", ds.sizes["y"])),
        chunk_cols=int(chunks.get("x", ds.sizes["x"])),
        years=years,
        bands=tuple(str(b) for b in ds["band"].values),
        dtype=str(emb.dtype),
        source=str(ds.attrs.get("source", "")),
    )


def select_years(info: StoreInfo, years: list[int] | None, flag: str = "--years") -> list[int]:
    if not years:
        return list(info.years)
    missing = [y for y in years if y not in info.years]
    if missing:
        raise InputError(
            flag,
            f"{info.path} has no year {missing[0]}; it holds {', '.join(map(str, info.years))}",
        )
    return list(years)


class StoreReader:
    """Reads windows of a store's `embedding` array; opens it on first use (per process)."""

    def __init__(self, path: str):
        self.path = path
        self._array = None
        self._files = None
        self._other = None  # a store in another layout: layout_view.LayoutReader reads it
        self._shards = None  # efm's own Zarr 3 store: its embedding array (for the chunk guard)
        self._lock = threading.Lock()
        self._guard = integrity.ChunkGuard(path)

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    @property
    def array(self):
        if self._array is None:
            import zarr

            with self._lock:
                if self._array is None:
                    from transforms.sources.remote_fs import storage_options

                    # s3://: anonymous unless credentials are set (a public bucket), as the driver
                    group = zarr.open_group(
                        self.path, mode="r", storage_options=storage_options(self.path) or None
                    )
                    if group.metadata.zarr_format != 2 or "embedding" not in group:
                        # another layout (checked in the driver): layout_view.LayoutReader reads it;
                        # efm's own Zarr 3 stores keep the chunk guard (their shards are recorded)
                        layout = layouts.describe(self.path, group=group)
                        self._other = layout_view.LayoutReader(layout, group)
                        self._array = self._other
                        if group.attrs.get("efm_product") == "embeddings":
                            self._shards, _ = self._other._open()  # its `embedding` array
                        return self._array
                    local = "://" not in self.path or self.path.startswith("file://")
                    self._files = (
                        ChunkFiles(os.path.join(self.path.removeprefix("file://"), "embedding"))
                        if local
                        else None
                    )
                    self._array = group["embedding"]
        return self._array

    def read_codes(self, time_index: int, rows: slice, cols: slice) -> np.ndarray:
        """The stored values (float32, or int8 codes) of a window: (rows, cols, bands).

        A chunk marked written that is gone or does not decode raises integrity.DamagedStoreError
        naming it and the repair, never a silent fill (transforms/storage/integrity.py)."""
        array = self.array
        if self._other is not None:
            if self._shards is None:
                return self._other.read_codes(time_index, rows, cols)
            try:
                values = self._other.read_codes(time_index, rows, cols)
            except Exception as exc:  # zarr's codec error: name the shard
                raise self._guard.corrupt(
                    self._shard_names(time_index, rows, cols)[0][0], exc
                ) from None
            self._check_shards(values, time_index, rows, cols)
            return values
        whole = (
            self._files.read((time_index, rows, cols)) if self._files is not None else None
        )  # one chunk file, decoded in place
        if whole is not None:
            return whole
        try:
            values = array[time_index, rows, cols, :]
        except Exception as exc:  # zarr's codec error (e.g. blosc's RuntimeError): name the chunk
            raise self._guard.corrupt(self._chunk_names(time_index, rows, cols)[0], exc) from None
        self._check_fill(values, time_index, rows, cols)
        return values

    def read_band_first(self, time_index: int, rows: slice, cols: slice) -> np.ndarray:
        """`read_codes`' values as (bands, rows, cols): for a sharded store in the convention's
        order, read as stored (transforms/storage/band_first.py); else a view of `read_codes`."""
        self.array  # noqa: B018  (opens the store)
        other = self._other
        direct = None
        if other is not None and other.layout.scale_array is None:
            other._open()
            direct = other._direct
        if direct is None:
            return np.moveaxis(self.read_codes(time_index, rows, cols), -1, 0)
        from transforms.storage import band_first

        try:
            values = band_first.read(direct, time_index, rows, cols)
        except Exception as exc:  # zarr's codec error: name the shard
            if self._shards is None:
                raise
            raise self._guard.corrupt(
                self._shard_names(time_index, rows, cols)[0][0], exc
            ) from None
        if self._shards is not None:
            fill = self._shards.fill_value
            for name, marker, part in self._shard_names(time_index, rows, cols):
                window = values[(slice(None), *part)]
                if window.size and _all_fill(window, fill):
                    self._guard.check_absent("embedding", name.split("/", 1)[1], marker)
        return values

    def read_points(self, time_index: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        """(n, bands) float32 of the pixels (rows[k], cols[k]), NaN = no data, reading only the
        inner chunks that hold them (transforms/storage/shard_points.py); None for a store it
        cannot read so (Zarr 2, per-pixel scales, another codec): read windows instead."""
        _ = self.array  # opens the store: sets _other for a layout LayoutReader reads
        other = self._other
        if other is None or other.layout.scale_array:
            return None
        other._open()
        if other._direct is None:
            return None
        from transforms.storage import shard_points

        def corrupt(name, exc):
            name = name[len(other._direct.path) - len("embedding") :]  # embedding/<shard key>
            return self._guard.corrupt(name, exc) if self._shards is not None else exc

        found = shard_points.read_points(other._direct, time_index, rows, cols, corrupt)
        if self._shards is not None:  # a shard that is gone: no data, or a hole?
            for name, i, j in found.missing:
                key = name[len(other._direct.path) + 1 :]
                sy, sx = other._direct.shard_rows, other._direct.shard_cols
                self._guard.check_absent("embedding", key, f"{time_index}.{i * sy}.{j * sx}")
        return store.as_float(found.values)

    def _shard_names(self, time_index: int, rows: slice, cols: slice):
        """(`embedding/<shard key>`, marker, (row slice, col slice) in the window) of the shards
        a window of an efm Zarr 3 store reads."""
        meta = self._shards.metadata
        dims = tuple(meta.dimension_names)
        shard = dict(zip(dims, self._shards.shards or self._shards.chunks))
        sy, sx = shard["y"], shard["x"]
        found = []
        for i in range(rows.start // sy, -(-rows.stop // sy)):
            for j in range(cols.start // sx, -(-cols.stop // sx)):
                index = {"time": time_index, "band": 0, "y": i, "x": j}
                key = meta.encode_chunk_key(tuple(index[d] for d in dims))
                part = (
                    slice(
                        max(rows.start, i * sy) - rows.start,
                        min(rows.stop, (i + 1) * sy) - rows.start,
                    ),
                    slice(
                        max(cols.start, j * sx) - cols.start,
                        min(cols.stop, (j + 1) * sx) - cols.start,
                    ),
                )
                found.append((f"embedding/{key}", f"{time_index}.{i * sy}.{j * sx}", part))
        return found

    def _check_shards(self, values: np.ndarray, time_index: int, rows: slice, cols: slice) -> None:
        """Each shard whose part of the window is all no-data: a shard of no data, or a hole?"""
        fill = np.nan if values.dtype.kind == "f" else self._shards.fill_value
        for name, marker, part in self._shard_names(time_index, rows, cols):
            window = values[part]
            if window.size and _all_fill(window, fill):
                self._guard.check_absent("embedding", name.split("/", 1)[1], marker)

    def _chunk_names(self, time_index: int, rows: slice, cols: slice) -> list[str]:
        """`embedding/<key>` of the chunks a window reads."""
        _, cy, cx, _ = self._array.chunks
        sep = self._array.metadata.dimension_separator or "."
        return [
            f"embedding/{sep.join(map(str, (time_index, i, j, 0)))}"
            for i in range(rows.start // cy, -(-rows.stop // cy))
            for j in range(cols.start // cx, -(-cols.stop // cx))
        ]

    def _check_fill(self, values: np.ndarray, time_index: int, rows: slice, cols: slice) -> None:
        """Each chunk whose part of the window is all fill: is that a chunk of no data, or a hole?"""
        _, cy, cx, _ = self._array.chunks
        fill = self._array.fill_value
        for i in range(rows.start // cy, -(-rows.stop // cy)):
            for j in range(cols.start // cx, -(-cols.stop // cx)):
                r0, r1 = (
                    max(rows.start, i * cy) - rows.start,
                    min(rows.stop, (i + 1) * cy) - rows.start,
                )
                c0, c1 = (
                    max(cols.start, j * cx) - cols.start,
                    min(cols.stop, (j + 1) * cx) - cols.start,
                )
                part = values[r0:r1, c0:c1]
                if part.size and _all_fill(part, fill):
                    sep = self._array.metadata.dimension_separator or "."
                    key = sep.join(map(str, (time_index, i, j, 0)))
                    self._guard.check_absent("embedding", key, f"{time_index}.{i * cy}.{j * cx}")

    def read(self, time_index: int, window: Window) -> np.ndarray:
        """A window as float32 (rows, cols, bands), NaN where there is no data."""
        return store.as_float(
            self.read_codes(
                time_index,
                slice(window.row, window.row + window.rows),
                slice(window.col, window.col + window.cols),
            )
        )


def valid_mask(values: np.ndarray) -> np.ndarray:
    """Pixels with data: (…, bands) -> (…) bool. NaN in any band = no data (one pass, no band-sized temporary)."""
    return ~np.isnan(np.add.reduce(values, axis=-1, dtype=np.float32))
