"""Per-pixel maps as lazy dask arrays: `efm.predict`, `efm.similarity`, `efm.change`.

Each map is the `ChunkFunction` its command runs on Beam (transforms/products/classify.py,
transforms/products/change.py), applied by `dask.array.map_blocks` to the store's chunks: one task per
(year, chunk) reads the chunk's window(s), calls the function once and returns every output
variable packed in one float64 block (exact for uint8 / int16 codes and float32), which the
variables then slice. The function (with its model or reference vectors, a copy set up with one
thread: Dask parallelises over chunks) travels pickled inside each task and is unpickled and set up
once per worker process; past SHIP_ONCE_BYTES it is one key of the graph instead, sent once to each
worker (why not always: docs/python-api.md). Nothing is computed until the result is (`.compute()`,
`.plot()`, `efm.to_cog`), on the active scheduler.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import os
import threading

import numpy as np
import xarray as xr

from efm.embeddings import dataset, grid
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.learning import model_inputs, models
from transforms.products import similarity as similarity_refs
from transforms.products.change import (
    ChangeFunction,
    SimilarityFunction,
    mask_variable,
    similarity_variable,
)
from transforms.products.chunk_map import ChunkFunction, Variable, output_template
from transforms.products.classify import (
    ClassifyFunction,
    RegressFunction,
    class_encoding,
    class_variables,
    regression_variable,
)
from transforms.storage import readers, store
from transforms.storage.readers import StoreInfo

SHIP_ONCE_BYTES = (
    8 * 2**20
)  # a function (with its model) bigger than this travels as one graph key, not in each task


_READY: collections.OrderedDict[str, ChunkFunction] = (
    collections.OrderedDict()
)  # per process: payload hash -> set-up function
_READY_LOCK = threading.Lock()
KEEP_READY = 4  # functions (models) kept set up per process


class _SetUpOnce:
    """A ChunkFunction pickled once in the driver, unpickled and set up once per worker process (as Beam's
    DoFn.setup() with a Shared model): each task carries the bytes; the first task of a process to see them
    loads them, later tasks find the function ready (a forest is not unpickled again for every chunk)."""

    def __init__(self, fn: ChunkFunction):
        import cloudpickle

        self.payload = cloudpickle.dumps(fn)
        self.token = hashlib.sha256(self.payload).hexdigest()

    def function(self) -> ChunkFunction:
        with _READY_LOCK:  # the threads of one worker share it
            fn = _READY.get(self.token)
            if fn is None:
                import cloudpickle

                fn = cloudpickle.loads(self.payload)
                fn.setup()
                _READY[self.token] = fn
                while len(_READY) > KEEP_READY:
                    _READY.popitem(last=False)
            _READY.move_to_end(self.token)
        return fn

    def __call__(self, windows, time_index):
        return self.function()(windows, time_index)


def _block(*windows, task, time_index: int, names: tuple[str, ...]) -> np.ndarray:
    out = task(list(windows), time_index)
    packed = np.empty(windows[0].shape[:2] + (len(names),), dtype=np.float64)
    for i, name in enumerate(names):
        packed[..., i] = out[name]
    return packed


def lazy_map(
    ds: xr.Dataset,
    info: StoreInfo,
    fn: ChunkFunction,
    inputs: dict[int, tuple[int, ...]],
    variables: list[Variable],
    years: list[int] | None,
    *,
    product: str,
    attrs: dict,
) -> xr.Dataset:
    """The Dataset of `variables` on ds's grid: output time t = fn(windows of the store time steps inputs[t]).

    years None: one (y, x) map (inputs has the single key 0), as `efm change` writes."""
    import dask
    import dask.array as da

    emb = ds["embedding"].data
    if not isinstance(emb, da.Array):
        emb = da.from_array(emb, chunks=(1, info.chunk_rows, info.chunk_cols, -1))
    emb = emb.rechunk({3: -1})  # a pixel's bands in one block (a no-op for a store's own chunks)
    task = _SetUpOnce(fn)
    if len(task.payload) > SHIP_ONCE_BYTES:
        # a big model: one key of the graph, sent once to each worker rather than inside every task (which, small,
        # is better: a task waiting for that key lets its worker read further chunks meanwhile; see docs/python-api.md)
        task = dask.delayed(task, pure=False)
    names = tuple(v.name for v in variables)
    layers: dict[str, list] = {name: [] for name in names}
    for t in sorted(inputs):
        windows = [emb[i] for i in inputs[t]]
        packed = da.map_blocks(
            _block,
            *windows,
            task=task,
            time_index=t,
            names=names,
            dtype=np.float64,
            chunks=(windows[0].chunks[0], windows[0].chunks[1], (len(names),)),
            meta=np.empty((0, 0, 0)),
        )
        for i, v in enumerate(variables):
            layers[v.name].append(packed[:, :, i].astype(v.dtype))
    out = output_template(
        ds,
        variables,
        years,
        chunk_rows=info.chunk_rows,
        chunk_cols=info.chunk_cols,
        product=product,
        attrs=attrs,
    )
    for v in variables:
        out[v.name] = out[v.name].copy(
            data=da.stack(layers[v.name]) if years is not None else layers[v.name][0]
        )
    out.attrs.pop(store.STATUS_ATTR, None)  # in memory: nothing is complete or incomplete
    return out.rio.write_transform(
        info.affine
    )  # a subset's own grid (spatial_ref's GeoTransform comes from the store)


def _loaded(model, model_sha256: str | None, trust_pickle: bool) -> models.LoadedModel:
    if isinstance(model, models.LoadedModel):
        return model
    if isinstance(
        model, (str, os.PathLike)
    ):  # a model file: loaded and checked as `efm classify --model` loads it
        return models.load_model(
            os.fspath(model), sha256=model_sha256, trust_pickle=trust_pickle, flag="model"
        )
    if not hasattr(model, "predict"):
        raise InputError(
            "model",
            f"expected a fitted scikit-learn model or a model file, got {type(model).__name__}",
        )
    return models.LoadedModel(model, {}, "", "the model")


def _years(info: StoreInfo, years) -> list[int]:
    """`years` as the commands' --years takes it (an int, a list, or text like "2021,2022")."""
    return readers.select_years(info, gridlib.years_value(years, "years"), flag="years")


def predict(
    ds,
    model,
    *,
    years: list[int] | None = None,
    confidence: bool = False,
    model_sha256: str | None = None,
    trust_pickle: bool = False,
):
    """Apply a model to every pixel, chunk by chunk -> a lazy DataArray on the store's grid.

    A classifier or k-means gives ``class (time, y, x)``, the codes and attributes of the class-map
    store `efm classify` writes (uint8, int16 past 255 classes; fill in ``attrs["fill_value"]``;
    ``flag_values`` / ``flag_meanings`` / ``class_labels``); with ``confidence=True`` a Dataset with
    ``class`` and ``confidence``. A regressor gives ``prediction (time, y, x)`` float32, NaN = no data.
    ``model``: a fitted estimator (from `efm.train` or scikit-learn) or a model file (``.skops``;
    a pickle needs ``model_sha256`` or ``trust_pickle=True``, as with `efm classify`).

    Raises InputError (nothing computed) when the model was trained on other bands than the store's.

    >>> classes = efm.predict(ds, model)                         # doctest: +SKIP
    >>> classes.sel(time="2022").compute()                       # runs on the active Dask scheduler
    """
    ds = dataset(ds)
    info = grid(ds)
    years = _years(info, years)
    loaded = _loaded(model, model_sha256, trust_pickle)
    model_inputs.check_bands(loaded, list(info.bands), info.path or "the store", flag="model")
    # A copy: setup() limits its threads (n_jobs=1, Dask parallelises over chunks) without touching the caller's model.
    fitted = copy.deepcopy(loaded.model)
    attrs = {
        "source": info.path,
        "embeddings_source": info.source,
        "crs": info.crs,
        "scale": abs(info.transform[0]),
        "model": loaded.path,
        "model_sha256": loaded.sha256,
        "model_estimator": type(loaded.model).__name__,
        "license": store.LICENSE,
        "attribution": store.ATTRIBUTION,
    }
    if loaded.is_regressor:
        if confidence:
            raise InputError(
                "confidence",
                f"a regressor ({type(loaded.model).__name__}) gives no class probabilities; drop confidence=True",
            )
        variables = [
            regression_variable(
                loaded.sidecar or {"target": models.embedded_fields(loaded.model).get("target")}
            )
        ]
        fn, product = RegressFunction(loaded.path, loaded.sha256, 1, model=fitted), "prediction"
    else:
        if confidence and not model_inputs.has_proba(loaded.model):
            raise InputError(
                "confidence",
                f"a {type(loaded.model).__name__} gives no class probabilities; drop confidence=True",
            )
        encoding = class_encoding(
            loaded.classes, prefix="cluster" if loaded.kind == "clusterer" else "class"
        )
        variables = class_variables(encoding, confidence=confidence)
        fn, product = (
            ClassifyFunction(loaded.path, loaded.sha256, encoding, confidence, 1, model=fitted),
            "classes",
        )
    out = lazy_map(
        ds,
        info,
        fn,
        {t: (info.time_index(y),) for t, y in enumerate(years)},
        variables,
        years,
        product=product,
        attrs=attrs,
    )
    return out if confidence else out[variables[0].name]


def _check_threshold(threshold: float | None) -> None:
    from transforms.products.similarity import check_threshold

    try:
        check_threshold(threshold)
    except InputError as exc:
        raise InputError("threshold", str(exc).split(": ", 1)[1]) from None


def _values_at(ds: xr.Dataset):
    """read(rows, cols, time_index) -> (n, bands) float32 from the Dataset (also a subset of a store)."""

    def read(rows, cols, time_index):
        return np.asarray(
            ds["embedding"].data[time_index].vindex[rows, cols].compute()
            if hasattr(ds["embedding"].data, "vindex")
            else ds["embedding"].values[time_index][rows, cols]
        )

    return read


def similarity(
    ds,
    points,
    *,
    label_column: str | None = None,
    label=None,
    years: list[int] | None = None,
    reference_year: int | None = None,
    threshold: float | None = None,
    points_crs: str | None = None,
):
    """Dot product of every pixel with the mean embedding at reference points -> lazy ``similarity (time, y, x)``.

    The reference of a year is the plain mean of that year's vectors at the points (`efm similarity`'s
    rule; ``reference_year`` takes one year's for all). ``points``: a file or a (Geo)DataFrame; with
    ``label_column`` and ``label`` only the points whose column equals the label. With ``threshold``
    a Dataset with ``similarity`` and ``similar`` (uint8: 1 = similarity >= threshold, 255 = no data).

    >>> sim = efm.similarity(ds, "forest.geojson")               # doctest: +SKIP
    """
    ds = dataset(ds)
    info = grid(ds)
    _check_threshold(threshold)
    years = _years(info, years)
    pts = similarity_refs.reference_points(points, label_column, label, points_crs, api=True)
    if reference_year is not None:
        reference_year = gridlib.one_year(reference_year, "reference_year")
        readers.select_years(info, [reference_year], flag="reference_year")
    refs = similarity_refs.references(
        info,
        pts,
        [reference_year] if reference_year is not None else years,
        "the points",
        read=_values_at(ds),
    )
    by_output = {
        t: refs[reference_year if reference_year is not None else y] for t, y in enumerate(years)
    }
    return similarity_map(
        ds,
        info,
        by_output,
        years,
        threshold,
        "plain mean of the points' embeddings, not re-normalised (as Earth Engine's tutorial)",
    )


def similarity_map(ds, info, by_output: dict, years: list[int], threshold, mean_note: str):
    """The lazy similarity map of one store to the reference vector of each output year
    (`by_output[t]`: similarity_refs' reference for output year t); efm.similarity's for a store
    and for each member of a collection. mean_note: how the reference mean was taken (an attr)."""
    variables = [similarity_variable("dot product with the mean embedding at the reference points")]
    if threshold is not None:
        variables.append(mask_variable("similar", f"similarity at least {threshold}", threshold))
    attrs = {
        "source": info.path,
        "crs": info.crs,
        "reference_points": [by_output[t].points for t in range(len(years))],
        "reference_vectors": [[float(v) for v in by_output[t].vector] for t in range(len(years))],
        "reference_mean": mean_note,
    }
    fn = SimilarityFunction({t: r.vector for t, r in by_output.items()}, threshold)
    out = lazy_map(
        ds,
        info,
        fn,
        {t: (info.time_index(y),) for t, y in enumerate(years)},
        variables,
        years,
        product="similarity",
        attrs=attrs,
    )
    return out if threshold is not None else out["similarity"]


def change(ds, from_year: int, to_year: int, *, threshold: float | None = None):
    """Per-pixel similarity of two years (1 = unchanged; NaN where either has no data) -> lazy ``similarity (y, x)``.

    With ``threshold`` a Dataset with ``similarity`` and ``changed`` (uint8: 1 = similarity < threshold,
    255 = no data), as `efm change --threshold` writes.

    >>> changed = efm.change(ds, 2022, 2023, threshold=0.8)["changed"]        # doctest: +SKIP
    """
    ds = dataset(ds)
    info = grid(ds)
    _check_threshold(threshold)
    from_year = gridlib.one_year(from_year, "from_year")
    to_year = gridlib.one_year(to_year, "to_year")
    if from_year == to_year:
        raise InputError(
            "to_year", f"from_year and to_year are both {to_year}; give two different years"
        )
    readers.select_years(info, [from_year], flag="from_year")
    readers.select_years(info, [to_year], flag="to_year")
    variables = [
        similarity_variable(
            f"similarity of the {from_year} and {to_year} embeddings (1 = unchanged)"
        )
    ]
    if threshold is not None:
        variables.append(mask_variable("changed", f"similarity below {threshold}", threshold))
    attrs = {
        "source": info.path,
        "crs": info.crs,
        "from_year": from_year,
        "to_year": to_year,
        "years": [from_year, to_year],
    }
    out = lazy_map(
        ds,
        info,
        ChangeFunction(threshold),
        {0: (info.time_index(from_year), info.time_index(to_year))},
        variables,
        None,
        product="change",
        attrs=attrs,
    )
    return out if threshold is not None else out["similarity"]
