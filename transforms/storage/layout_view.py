"""Reading a store in any layout (transforms/storage/layouts.py `describe`) as efm reads its own:
windows as (rows, cols, bands) (`LayoutReader`), and the canonical lazy Dataset
`embedding (time, y, x, band)` (`open_dataset`).
"""

from __future__ import annotations

import numpy as np

from transforms.core import quantize
from transforms.core.errors import InputError
from transforms.storage import layouts, shard_windows


class LayoutReader:
    """Windows of any layout as efm's (rows, cols, bands), opened on first use per process.

    `read_codes` gives what efm's products take as stored values: int8 codes for the
    signed-square quantisation (efm's own), float32 otherwise (a per-pixel scale is applied
    here, NaN where the scale says no data); `read` always gives float32, NaN = no data.
    """

    def __init__(self, layout: layouts.Layout, group=None):
        self.layout = layout
        self._group = group  # the store's root, when the caller has it open (not pickled)
        self._arrays = None
        self._direct = None  # shard_windows.ShardWindows, for the arrays it reads

    def __getstate__(self):
        return {"layout": self.layout}

    def __setstate__(self, state):
        self.__init__(state["layout"])

    def _open(self):
        if self._arrays is None:
            group = self._group
            if group is None:  # (a Group's truth lists its members)
                group = layouts.open_group(self.layout.path, "--embeddings")
            scale = group[self.layout.scale_array] if self.layout.scale_array else None
            array = group[self.layout.array]
            self._direct = shard_windows.ShardWindows.of(
                array, f"{self.layout.path.rstrip('/')}/{self.layout.array}"
            )
            self._arrays = (array, scale)
        return self._arrays

    def read_codes(self, time_index: int, rows: slice, cols: slice) -> np.ndarray:
        array, scale = self._open()
        if self._direct is not None:
            rs, cs = rows.step or 1, cols.step or 1
            if rs == 1 and cs == 1:
                values = self._direct.read(time_index, rows, cols)
            else:  # a strided window (the label page zoomed out): the span, every step-th pixel
                span = self._direct.read(
                    time_index, slice(rows.start, rows.stop), slice(cols.start, cols.stop)
                )
                values = np.ascontiguousarray(span[::rs, ::cs])
        else:
            index = {"time": time_index, "y": rows, "x": cols, "band": slice(None)}
            values = array[tuple(index[d] for d in self.layout.dims)]
            kept = [d for d in self.layout.dims if d != "time"]
            values = np.moveaxis(values, kept.index("band"), -1) if kept[-1] != "band" else values
            values = np.ascontiguousarray(values)
        if scale is None:
            return values
        factors = np.asarray(scale[time_index, rows, cols], dtype=np.float32)
        out = values.astype(np.float32)
        with np.errstate(invalid="ignore"):  # 0 * inf where the scale says no data: NaN below
            out *= factors[..., np.newaxis]
        out[~np.isfinite(factors)] = np.nan  # +inf: land not yet filled; NaN: water
        return out

    def read(self, time_index: int, rows: slice, cols: slice) -> np.ndarray:
        values = self.read_codes(time_index, rows, cols)
        return (
            quantize.dequantize(values)
            if values.dtype == np.int8
            else values.astype(np.float32, copy=False)
        )


def open_dataset(layout: layouts.Layout, *, flag: str = "--embeddings", group=None):
    """A convention store as efm's canonical lazy Dataset: `embedding (time, y, x, band)` (int8
    codes of the AEF quantisation, or float32 with NaN), `time` as 1 January of each year, x/y
    centres, `spatial_ref` (rioxarray's CRS and transform). Nothing is read but metadata and
    coordinates; a per-pixel scale (TESSERA) is applied lazily, chunk by chunk."""
    import affine
    import dask.array as da
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    # The arrays are opened by name, never by listing the group: a store served over plain
    # HTTP(S) (a CDN in front of a bucket) cannot be listed, and a convention store need not be
    # consolidated. One dask chunk = one unit of work (whole inner chunks).
    group = layouts.open_group(layout.path, flag) if group is None else group
    rows, cols = layout.work_unit
    sizes = {"time": 1, "band": len(layout.bands), "y": rows, "x": cols}
    data = da.from_zarr(group[layout.array], chunks=tuple(sizes[d] for d in layout.dims))
    data = data.transpose([layout.dims.index(d) for d in layouts.CANONICAL])
    if layout.quantization == layouts.PER_PIXEL_SCALE:  # a (time, y, x) scale over every band
        scale = group[layout.scale_array]
        if layouts.array_dims(scale) and layouts.array_dims(scale) != ("time", "y", "x"):
            raise InputError(
                flag,
                f"{layout.path}: the scale array's dimensions are {list(layouts.array_dims(scale))}",
            )
        factors = da.from_zarr(scale, chunks=(1, rows, cols))[..., np.newaxis]
        data = da.where(da.isfinite(factors), data.astype(np.float32) * factors, np.float32(np.nan))
    a, b, c, d, e, f = layout.transform
    ds = xr.Dataset(
        {"embedding": (layouts.CANONICAL, data)},
        coords={
            "time": np.array([f"{y}-01-01" for y in layout.years], dtype="datetime64[ns]"),
            "y": f + (np.arange(layout.height) + 0.5) * e,
            "x": c + (np.arange(layout.width) + 0.5) * a,
            "band": np.array(layout.bands),
        },
    )
    ds = ds.rio.write_crs(layout.crs).rio.write_transform(affine.Affine(a, b, c, d, e, f))
    ds["embedding"].attrs.update(grid_mapping="spatial_ref")
    chunks = (1, rows, cols, len(layout.bands))
    ds["embedding"].encoding.update(
        chunks=chunks, preferred_chunks=dict(zip(layouts.CANONICAL, chunks))
    )
    ds.attrs.update(
        {
            "source": layout.path,
            "crs": layout.crs,
            "years": list(layout.years),
            "efm_status": "complete",  # a published store: complete as it is
            "efm_layout": f"zarr{layout.zarr_format} {' '.join(layout.dims)} ({layout.array})",
        }
    )
    if data.dtype == np.int8:
        ds["embedding"].attrs["quantization"] = ds.attrs["quantization"] = quantize.FORMULA
        ds["embedding"].attrs["_FillValue"] = (
            quantize.NODATA_CODE
        )  # as xarray shows efm's v2 stores
    return ds
