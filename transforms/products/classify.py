"""Apply a model to an embedding store chunk by chunk -> the class-map store.

    chunk specs | ClassifyChunks(store path, model path + sha256, ...) | store.WriteChunks | MarkComplete

`ClassifyChunks` is the chunk-map frame (transforms/products/chunk_map.py) with `ClassifyFunction`.

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

import numpy as np
import xarray as xr

from transforms.core.errors import InputError
from transforms.learning import model_cache, model_sidecar
from transforms.products.chunk_map import ChunkFunction, MapChunks, Variable, output_template
from transforms.storage.readers import valid_mask

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

    def lookup(self) -> LabelLookup:
        return LabelLookup.build(self.labels, self.values)


def _word(text: str) -> str:
    return re.sub(r"\s+", "_", str(text).strip()) or "unnamed"


def class_encoding(labels, *, prefix: str = "class") -> ClassEncoding:
    """Integer labels in [0, 254] are stored as themselves (a land-cover code stays its code);
    anything else is numbered 0..n-1 in label order. uint8 up to 255 classes, int16 beyond."""
    labels = tuple(model_sidecar.jsonable(list(labels)))
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
    def build(cls, labels, values) -> LabelLookup:
        labels = np.asarray(labels)
        order = np.argsort(labels, kind="stable")
        return cls(labels[order], np.asarray(values)[order])

    def __call__(self, predicted: np.ndarray, dtype) -> np.ndarray:
        predicted = np.asarray(predicted)
        index = np.clip(
            np.searchsorted(self.sorted_labels, predicted), 0, len(self.sorted_labels) - 1
        )
        if not np.all(self.sorted_labels[index] == predicted):
            unknown = predicted[self.sorted_labels[index] != predicted][0]
            raise ValueError(
                f"the model predicted {unknown!r}, which is not one of its classes {self.sorted_labels.tolist()}"
            )
        return self.codes[index].astype(dtype, copy=False)


PART_ROWS = (
    4096  # rows of a part are a multiple of this (scikit-learn's k-NN works in blocks of 256 rows)
)


def in_parts(fn, features: np.ndarray, parts: int) -> np.ndarray:
    """fn(features) computed as `parts` row ranges in as many threads, concatenated: the same rows, the same result.

    scikit-learn's own threads cover only part of a k-NN `predict` (the distance reduction; the vote
    is one thread): one call used ~1.4 of 2 cores. Whole calls side by side keep every core busy,
    as dask's threads do with whole chunks; the estimator itself then runs single-threaded."""
    if parts <= 1 or len(features) < 2 * PART_ROWS:
        return fn(features)
    from concurrent.futures import ThreadPoolExecutor

    step = -(-len(features) // (parts * PART_ROWS)) * PART_ROWS
    pieces = [features[start : start + step] for start in range(0, len(features), step)]
    with ThreadPoolExecutor(len(pieces)) as pool:
        return np.concatenate(list(pool.map(fn, pieces)))


def predict_chunk(
    model,
    values: np.ndarray,
    lookup: LabelLookup,
    dtype: str,
    fill: int,
    confidence: bool = False,
    parts: int = 1,
):
    """(rows, cols, bands) float32, NaN = no data -> class codes (rows, cols) [, confidence (rows, cols) float32].

    parts: predict in that many threads over row ranges (`in_parts`)."""
    rows, cols, bands = values.shape
    flat = values.reshape(rows * cols, bands)  # a view: the window is C-contiguous
    valid = valid_mask(flat)
    classes = np.full(rows * cols, fill, dtype=dtype)
    conf = np.full(rows * cols, np.nan, dtype=np.float32) if confidence else None
    n_valid = int(np.count_nonzero(valid))
    if n_valid:
        features = flat if n_valid == flat.shape[0] else flat[valid]
        classes[valid] = lookup(in_parts(model.predict, features, parts), dtype)
        if confidence:
            conf[valid] = in_parts(
                lambda part: model.predict_proba(part).max(axis=1), features, parts
            )
    classes = classes.reshape(rows, cols)
    return (classes, conf.reshape(rows, cols)) if confidence else (classes, None)


def class_variables(encoding: ClassEncoding, *, confidence: bool) -> list[Variable]:
    variables = [
        Variable(
            "class",
            encoding.dtype,
            encoding.fill,
            {
                "long_name": "class",
                "flag_values": list(encoding.values),
                "flag_meanings": " ".join(encoding.meanings),
                "class_labels": list(encoding.labels),
                "fill_value": encoding.fill,
            },
        )
    ]
    if confidence:
        variables.append(
            Variable(
                "confidence",
                "float32",
                float("nan"),
                {"long_name": "maximum class probability", "units": "1", "fill_value": "NaN"},
            )
        )
    return variables


def class_template(
    embeddings: xr.Dataset,
    years: list[int],
    encoding: ClassEncoding,
    *,
    confidence: bool,
    chunk_rows: int,
    chunk_cols: int,
    attrs: dict,
    window=None,
) -> xr.Dataset:
    """A lazy Dataset with the class map's full shape (or `window`'s), the embedding store's coords and CRS."""
    return output_template(
        embeddings,
        class_variables(encoding, confidence=confidence),
        years,
        chunk_rows=chunk_rows,
        chunk_cols=chunk_cols,
        product="classes",
        attrs=attrs,
        window=window,
    )


@contextlib.contextmanager
def _nothing():
    yield


def _limit_threads(model, n_jobs: int | None):
    if (
        n_jobs is not None
        and hasattr(model, "get_params")
        and "n_jobs" in model.get_params(deep=False)
    ):
        model.set_params(n_jobs=n_jobs)
    return model


class ClassifyFunction(ChunkFunction):
    """The class map's per-chunk computation: one year's window -> `class` [and `confidence`]."""

    counter = "pixels_classified"

    def __init__(
        self,
        model_path: str,
        model_sha256: str,
        encoding: ClassEncoding,
        confidence: bool,
        n_jobs: int | None,
        model=None,
    ):
        self.model_object = model  # a fitted model in memory (the Python API, efm/): pickled with the function, not loaded from model_path
        self.model_path = model_path
        self.model_sha256 = model_sha256
        self.encoding = encoding
        self.confidence = confidence
        self.n_jobs = n_jobs

    def setup(self):
        # One model per worker process (and the driver's, in process), shared by every DoFn instance;
        # single-threaded: the chunk is predicted in n_jobs threads over its rows (in_parts).
        model = (
            self.model_object
            if self.model_object is not None
            else model_cache.load(self.model_path, self.model_sha256)
        )
        self.model = _limit_threads(model, 1 if self.n_jobs else None)
        self.lookup = self.encoding.lookup() if self.encoding is not None else None

    def __call__(self, windows, time_index):
        import threadpoolctl

        # n_jobs threads over the chunk's rows, each with one BLAS/OpenMP thread (k-NN distances, ...): n_jobs cores.
        with threadpoolctl.threadpool_limits(limits=1) if self.n_jobs else _nothing():
            classes, conf = predict_chunk(
                self.model,
                windows[0],
                self.lookup,
                self.encoding.dtype,
                self.encoding.fill,
                self.confidence,
                parts=self.n_jobs or 1,
            )
        return {"class": classes, "confidence": conf} if self.confidence else {"class": classes}


def ClassifyChunks(
    embeddings: str,
    model_path: str,
    model_sha256: str,
    encoding: ClassEncoding,
    year_to_time: dict,
    confidence: bool = False,
    n_jobs: int | None = None,
    years: list[int] | None = None,
    offset: tuple[int, int] = (0, 0),
) -> MapChunks:
    """ChunkSpecs -> (xbeam.Key, Dataset of `class` [and `confidence`]) for one model: a MapChunks.

    The model is read from `model_path` once per worker process (in setup(), shared across
    threads) and only if its sha256 is `model_sha256`, the hash the driver checked.
    `year_to_time`: year -> store time index; output time index i is `years[i]` (default: its order).
    """
    years = list(year_to_time) if years is None else years
    return MapChunks(
        embeddings=embeddings,
        compute=ClassifyFunction(model_path, model_sha256, encoding, confidence, n_jobs),
        inputs={i: (year_to_time[y],) for i, y in enumerate(years)},
        variables=tuple(class_variables(encoding, confidence=confidence)),
        offset=offset,
    )


def regress_chunk(model, values: np.ndarray, parts: int = 1) -> np.ndarray:
    """(rows, cols, bands) float32, NaN = no data -> model.predict as float32 (rows, cols), NaN = no data."""
    rows, cols, bands = values.shape
    flat = values.reshape(rows * cols, bands)
    valid = valid_mask(flat)
    out = np.full(rows * cols, np.nan, dtype=np.float32)
    n_valid = int(np.count_nonzero(valid))
    if n_valid:
        out[valid] = np.asarray(
            in_parts(model.predict, flat if n_valid == flat.shape[0] else flat[valid], parts),
            dtype=np.float64,
        ).reshape(n_valid, -1)[:, 0]
    return out.reshape(rows, cols)


def regression_variable(sidecar: dict) -> Variable:
    """`prediction`, with the target's name and units from the model sidecar (when it names them)."""
    target = sidecar.get("target") or sidecar.get("target_column") or "prediction"
    attrs = {"long_name": f"predicted {target}", "target": target, "fill_value": "NaN"}
    units = sidecar.get("units") or sidecar.get("target_units")
    if units:
        attrs["units"] = units
    return Variable("prediction", "float32", float("nan"), attrs)


class RegressFunction(ClassifyFunction):
    """A regressor's per-chunk computation: one year's window -> `prediction` float32 (NaN = no data)."""

    counter = "pixels_predicted"

    def __init__(self, model_path: str, model_sha256: str, n_jobs: int | None, model=None):
        super().__init__(model_path, model_sha256, None, False, n_jobs, model)

    def __call__(self, windows, time_index):
        import threadpoolctl

        with threadpoolctl.threadpool_limits(limits=1) if self.n_jobs else _nothing():
            return {"prediction": regress_chunk(self.model, windows[0], parts=self.n_jobs or 1)}
