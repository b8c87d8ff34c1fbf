"""Apply a model to an embedding store chunk by chunk -> the class-map store.

    chunk specs | ClassifyChunks(store path, model path + sha256, ...) | store.WriteChunks | MarkComplete

`predict_chunk` is the pure function under it: a (rows, cols, bands) float32 window in,
class codes (rows, cols) and optionally the max class probability out. The window is
viewed as a (pixels, bands) matrix without copying; only when some pixels are no data are
the valid rows gathered (one copy, needed anyway by scikit-learn). No-data pixels keep
the fill value and are never shown to the model.

The class-map store (data contract): variable `class` (time, y, x), uint8 (int16 past 255
classes), fill value in the Zarr metadata (`_FillValue`) and in the `fill_value` attribute,
CF `flag_values` / `flag_meanings`, the original labels in `class_labels`; optional
`confidence` float32 (NaN = no data); the embedding store's y/x/time coords and `spatial_ref`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re

import apache_beam as beam
import numpy as np
import xarray as xr
import xarray_beam as xbeam

from transforms import models, store
from transforms.chunks import ChunkSpec
from transforms.errors import InputError
from transforms.fetch import METRICS_NAMESPACE
from transforms.readers import StoreReader, valid_mask

UINT8_FILL = 255
INT16_FILL = -1


@dataclasses.dataclass(frozen=True)
class ClassEncoding:
    """How class labels are stored: label i is written as values[i]."""

    labels: tuple
    values: tuple[int, ...]
    meanings: tuple[str, ...]
    dtype: str
    fill: int

    def lookup(self) -> "LabelLookup":
        return LabelLookup.build(self.labels, self.values)


def _word(text: str) -> str:
    return re.sub(r"\s+", "_", str(text).strip()) or "unnamed"


def class_encoding(labels, *, prefix: str = "class") -> ClassEncoding:
    """Integer labels in [0, 254] are stored as themselves (a land-cover code stays its code);
    anything else is numbered 0..n-1 in label order. uint8 up to 255 classes, int16 beyond."""
    labels = tuple(models._jsonable(list(labels)))
    n = len(labels)
    if n == 0:
        raise InputError("--model", "the model has no classes")
    integer = all(isinstance(v, int) and not isinstance(v, bool) for v in labels)
    if integer and min(labels) >= 0 and max(labels) < UINT8_FILL:
        values = labels
    else:
        values = tuple(range(n))
    dtype, fill = ("uint8", UINT8_FILL) if max(values) < UINT8_FILL else ("int16", INT16_FILL)
    if n > 32767:
        raise InputError("--model", f"{n} classes is more than a class map can hold (32767)")
    meanings = tuple(f"{prefix}_{v}" if integer else _word(v) for v in labels)
    return ClassEncoding(labels, tuple(int(v) for v in values), meanings, dtype, fill)


@dataclasses.dataclass(frozen=True)
class LabelLookup:
    """Maps predicted labels to stored codes, vectorised (sorted labels + searchsorted)."""

    sorted_labels: np.ndarray
    codes: np.ndarray

    @classmethod
    def build(cls, labels, values) -> "LabelLookup":
        labels = np.asarray(labels)
        order = np.argsort(labels, kind="stable")
        return cls(labels[order], np.asarray(values)[order])

    def __call__(self, predicted: np.ndarray, dtype) -> np.ndarray:
        predicted = np.asarray(predicted)
        index = np.clip(np.searchsorted(self.sorted_labels, predicted), 0, len(self.sorted_labels) - 1)
        if not np.all(self.sorted_labels[index] == predicted):
            unknown = predicted[self.sorted_labels[index] != predicted][0]
            raise ValueError(f"the model predicted {unknown!r}, which is not one of its classes {self.sorted_labels.tolist()}")
        return self.codes[index].astype(dtype, copy=False)


def predict_chunk(model, values: np.ndarray, lookup: LabelLookup, dtype: str, fill: int, confidence: bool = False):
    """(rows, cols, bands) float32, NaN = no data -> class codes (rows, cols) [, confidence (rows, cols) float32]."""
    rows, cols, bands = values.shape
    flat = values.reshape(rows * cols, bands)  # a view: the window is C-contiguous
    valid = valid_mask(flat)
    classes = np.full(rows * cols, fill, dtype=dtype)
    conf = np.full(rows * cols, np.nan, dtype=np.float32) if confidence else None
    n_valid = int(np.count_nonzero(valid))
    if n_valid:
        features = flat if n_valid == flat.shape[0] else flat[valid]
        classes[valid] = lookup(model.predict(features), dtype)
        if confidence:
            conf[valid] = model.predict_proba(features).max(axis=1)
    classes = classes.reshape(rows, cols)
    return (classes, conf.reshape(rows, cols)) if confidence else (classes, None)


def class_template(embeddings: xr.Dataset, years: list[int], encoding: ClassEncoding, *, confidence: bool, chunk_rows: int, chunk_cols: int, attrs: dict) -> xr.Dataset:
    """A lazy Dataset with the class map's full shape, the embedding store's coords and CRS."""
    import dask.array as da

    times = np.array([f"{y}-01-01" for y in years], dtype="datetime64[ns]")
    shape = (len(years), embeddings.sizes["y"], embeddings.sizes["x"])
    chunks = (1, chunk_rows, chunk_cols)
    coords = {"time": times, "y": embeddings["y"].values, "x": embeddings["x"].values}
    if "spatial_ref" in embeddings.coords:
        coords["spatial_ref"] = ((), np.int64(0), dict(embeddings["spatial_ref"].attrs))
    ds = xr.Dataset(coords=coords)
    ds["class"] = (("time", "y", "x"), da.full(shape, encoding.fill, dtype=encoding.dtype, chunks=chunks))
    ds["class"].attrs.update(
        long_name="class", grid_mapping="spatial_ref", flag_values=list(encoding.values),
        flag_meanings=" ".join(encoding.meanings), class_labels=list(encoding.labels), fill_value=encoding.fill,
    )
    ds["class"].encoding["_FillValue"] = np.array(encoding.fill, dtype=encoding.dtype)
    if confidence:
        ds["confidence"] = (("time", "y", "x"), da.full(shape, np.nan, dtype=np.float32, chunks=chunks))
        ds["confidence"].attrs.update(long_name="maximum class probability", units="1", grid_mapping="spatial_ref", fill_value="NaN")
    ds.attrs.update(attrs)
    ds.attrs.update({"years": list(years), "efm_version": store.tool_version(), "efm_product": "classes", store.STATUS_ATTR: "incomplete"})
    return ds


@contextlib.contextmanager
def _nothing():
    yield


class _LoadedModel:
    """Weak-referenceable holder, so that beam's Shared can keep one model per worker process."""

    def __init__(self, model):
        self.model = model


def _limit_threads(model, n_jobs: int | None):
    if n_jobs is not None and hasattr(model, "get_params") and "n_jobs" in model.get_params(deep=False):
        model.set_params(n_jobs=n_jobs)
    return model


class _ClassifyFn(beam.DoFn):
    def __init__(self, embeddings: str, model_path: str, model_sha256: str, encoding: ClassEncoding, year_to_time: dict, confidence: bool, n_jobs: int | None):
        from apache_beam.utils import shared

        self.reader = StoreReader(embeddings)
        self.model_path = model_path
        self.model_sha256 = model_sha256
        self.encoding = encoding
        self.year_to_time = year_to_time
        self.confidence = confidence
        self.n_jobs = n_jobs
        self.shared = shared.Shared()
        self.pixels = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "pixels_classified")
        self.nodata = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "pixels_nodata")

    def setup(self):
        path, sha, n_jobs = self.model_path, self.model_sha256, self.n_jobs
        # One model per worker process, shared by every thread's DoFn instance.
        self.model = self.shared.acquire(lambda: _LoadedModel(_limit_threads(models.load_verified(path, sha), n_jobs)), tag=sha).model
        self.lookup = self.encoding.lookup()

    def process(self, spec: ChunkSpec):
        import threadpoolctl

        values = self.reader.read(self.year_to_time[spec.year], spec.window)
        # BLAS/OpenMP threads (k-NN distances, ...) share the cores with the other workers, like n_jobs.
        with threadpoolctl.threadpool_limits(limits=self.n_jobs) if self.n_jobs else _nothing():
            classes, conf = predict_chunk(self.model, values, self.lookup, self.encoding.dtype, self.encoding.fill, self.confidence)
        n_valid = int(np.count_nonzero(classes != self.encoding.fill))
        self.pixels.inc(n_valid)
        self.nodata.inc(classes.size - n_valid)
        data = {"class": (("time", "y", "x"), classes[np.newaxis])}
        if self.confidence:
            data["confidence"] = (("time", "y", "x"), conf[np.newaxis])
        key = xbeam.Key({"time": spec.time_index, "y": spec.window.row, "x": spec.window.col})
        yield key, xr.Dataset(data)


@dataclasses.dataclass
class ClassifyChunks(beam.PTransform):
    """ChunkSpecs -> (xbeam.Key, Dataset of `class` [and `confidence`]) for one model.

    The model is read from `model_path` once per worker process (in setup(), shared across
    threads) and only if its sha256 is `model_sha256`, the hash the driver checked.
    """

    embeddings: str
    model_path: str
    model_sha256: str
    encoding: ClassEncoding
    year_to_time: dict
    confidence: bool = False
    n_jobs: int | None = None  # estimator n_jobs on workers (None: as trained)

    def __post_init__(self):
        super().__init__()

    def expand(self, specs):
        return specs | "Predict" >> beam.ParDo(
            _ClassifyFn(self.embeddings, self.model_path, self.model_sha256, self.encoding, self.year_to_time, self.confidence, self.n_jobs)
        )
