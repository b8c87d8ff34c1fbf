"""One frame for every per-pixel product: read a chunk of the embedding store, compute per pixel,
write a chunk of the same grid.

    chunk specs | MapChunks(embeddings, compute, inputs, variables) | store.WriteChunks | MarkComplete

A product is a `ChunkFunction` (small, picklable: `setup()` once per worker, e.g. to load a
model; `__call__(windows, time_index) -> {variable: (rows, cols) array}`), its output `Variable`s and an
`inputs` map saying which store time steps each output time step reads: one for a class map,
two for change detection (from-year, to-year). The output template is built here from the
embedding store's grid, so every product's store carries the same coords and `spatial_ref`.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
import xarray as xr
import xarray_beam as xbeam

from transforms.core.chunks import ChunkSpec
from transforms.core.grid import Window
from transforms.core.metrics import METRICS_NAMESPACE
from transforms.storage import geozarr, store
from transforms.storage.read_ahead import ReadAhead
from transforms.storage.readers import StoreReader
from transforms.storage.subset import geotransform_attrs


@dataclasses.dataclass(frozen=True)
class Variable:
    """One output variable: its name, dtype, fill (NaN for floats: no data) and attributes."""

    name: str
    dtype: str
    fill: object
    attrs: dict = dataclasses.field(default_factory=dict, hash=False)


class ChunkFunction:
    """The per-chunk computation of a product (subclass it; instances are pickled to workers).

    `__call__(windows, time_index)` gets one (rows, cols, bands) float32 window per input time
    step (NaN = no data) and the output time index, and returns {variable name: (rows, cols) array}; pixels without data hold the
    variable's fill. `counter` names the metric that counts the pixels with data.
    """

    counter = "pixels_computed"

    def setup(self) -> None:
        pass

    def __call__(self, windows: list[np.ndarray], time_index: int) -> dict[str, np.ndarray]:
        raise NotImplementedError


def output_template(
    embeddings: xr.Dataset,
    variables: list[Variable],
    years: list[int] | None,
    *,
    chunk_rows: int,
    chunk_cols: int,
    product: str,
    attrs: dict,
    window: Window | None = None,
) -> xr.Dataset:
    """A lazy Dataset on the embedding store's grid (or on `window` of it, --bbox/--aoi): (time, y, x) per year in `years`,
    or (y, x) if years is None."""
    import dask.array as da

    rows, cols = (
        (slice(None), slice(None))
        if window is None
        else (
            slice(window.row, window.row + window.rows),
            slice(window.col, window.col + window.cols),
        )
    )
    coords = {"y": embeddings["y"].values[rows], "x": embeddings["x"].values[cols]}
    if years is not None:
        coords = {"time": np.array([f"{y}-01-01" for y in years], dtype="datetime64[ns]"), **coords}
    dims = tuple(coords)
    shape = tuple(len(v) for v in coords.values())
    chunks = ((1,) if years is not None else ()) + (chunk_rows, chunk_cols)
    if "spatial_ref" in embeddings.coords:
        coords["spatial_ref"] = (
            (),
            np.int64(0),
            geotransform_attrs(embeddings["spatial_ref"].attrs, window),
        )
    ds = xr.Dataset(coords=coords)
    for v in variables:
        ds[v.name] = (dims, da.full(shape, v.fill, dtype=v.dtype, chunks=chunks))
        ds[v.name].attrs.update({"grid_mapping": "spatial_ref", **v.attrs})
        if np.issubdtype(np.dtype(v.dtype), np.integer):
            ds[v.name].encoding["_FillValue"] = np.array(v.fill, dtype=v.dtype)
    ds.attrs.update(attrs)
    if years is not None:
        ds.attrs["years"] = list(years)
    ds.attrs.update(
        {
            "efm_version": store.tool_version(),
            "efm_product": product,
            store.STATUS_ATTR: "incomplete",
        }
    )
    return (
        geozarr.annotate(ds) if "spatial_ref" in ds.coords else ds
    )  # GeoZarr proj:/spatial: attrs (transforms/storage/geozarr.py)


def count_valid(array: np.ndarray, fill) -> int:
    if isinstance(fill, float) and np.isnan(fill):
        return int(np.count_nonzero(~np.isnan(array)))
    return int(np.count_nonzero(array != fill))


READ_AHEAD = 1  # chunks read ahead of the one computed (transforms/storage/read_ahead.py); 0: none


class _MapFn(beam.DoFn):
    """Reads a chunk's windows while the chunk before is computed (READ_AHEAD chunks ahead, in a
    background thread): a chunk's output is emitted when the next one arrives, the last ones at the
    end of the bundle. Memory per DoFn: at most READ_AHEAD + 1 chunks' windows."""

    def __init__(
        self,
        embeddings: str,
        compute: ChunkFunction,
        inputs: dict,
        variables: tuple[Variable, ...],
        timed: bool,
        offset: tuple[int, int] = (0, 0),
        read_ahead: int | None = None,
    ):
        self.reader = StoreReader(embeddings)
        self.offset = offset
        self.compute = compute
        self.inputs = inputs
        self.variables = variables
        self.timed = timed
        self.read_ahead = READ_AHEAD if read_ahead is None else read_ahead
        self.pixels = beam.metrics.Metrics.counter(METRICS_NAMESPACE, compute.counter)
        self.nodata = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "pixels_nodata")
        self.ahead = None

    def setup(self):
        self.compute.setup()
        self.ahead = ReadAhead(self._read, self.read_ahead)

    def start_bundle(self):
        if self.ahead.waiting():  # left by a failed bundle: its retry starts afresh
            self.ahead.close()
            self.ahead = ReadAhead(self._read, self.read_ahead)

    def _read(self, spec: ChunkSpec) -> list[np.ndarray]:
        w, (dr, dc) = (
            spec.window,
            self.offset,
        )  # spec: the output's chunk; read the same pixels of the input grid
        source = Window(w.row + dr, w.col + dc, w.rows, w.cols)
        return [self.reader.read(t, source) for t in self.inputs[spec.time_index]]

    def process(
        self, spec: ChunkSpec, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam
    ):
        for ready, windows, _ in self.ahead.push(spec, (window, timestamp)):
            yield self._compute(ready, windows)

    def finish_bundle(self):
        from apache_beam.utils.windowed_value import WindowedValue

        for spec, windows, (window, timestamp) in self.ahead.drain():
            yield WindowedValue(self._compute(spec, windows), timestamp, [window])

    def teardown(self):
        if self.ahead is not None:
            self.ahead.close()

    def _compute(self, spec: ChunkSpec, windows: list[np.ndarray]):
        out = self.compute(windows, spec.time_index)
        first = self.variables[0]
        n_valid = count_valid(
            out[first.name], first.fill
        )  # the first variable is no data exactly where the pixel is
        self.pixels.inc(n_valid)
        self.nodata.inc(out[first.name].size - n_valid)
        if self.timed:
            data = {
                v.name: (("time", "y", "x"), out[v.name][np.newaxis])
                for v in self.variables
                if v.name in out
            }
            key = xbeam.Key({"time": spec.time_index, "y": spec.window.row, "x": spec.window.col})
        else:
            data = {v.name: (("y", "x"), out[v.name]) for v in self.variables if v.name in out}
            key = xbeam.Key({"y": spec.window.row, "x": spec.window.col})
        return key, xr.Dataset(data)


@dataclasses.dataclass
class MapChunks(beam.PTransform):
    """ChunkSpecs -> (xbeam.Key, Dataset of `variables`): `compute` applied to each chunk's windows.

    inputs: output time index -> the store time indexes whose windows `compute` gets, in order.
    timed: the output has a time dimension (False: (y, x), the plan has a single "year").
    offset: (row, col) of the output grid's origin in the input grid (a --bbox/--aoi window, transforms/storage/subset.py).
    """

    embeddings: str
    compute: ChunkFunction
    inputs: dict
    variables: tuple
    timed: bool = True
    offset: tuple = (0, 0)

    def __post_init__(self):
        super().__init__()

    def expand(self, specs):
        return specs | "Compute" >> beam.ParDo(
            _MapFn(
                self.embeddings,
                self.compute,
                self.inputs,
                tuple(self.variables),
                self.timed,
                tuple(self.offset),
            )
        )
