"""efm: the Python API of efm-pipelines, for notebooks, on Dask.

The same steps as the command line, over the same code (the per-pixel functions in
`transforms/`), with lazy results that run on whatever Dask scheduler is active: the default
threads, a `dask.distributed.LocalCluster`, or a cluster on Kubernetes (docs/python-api.md)::

    import efm

    ds = efm.open_embeddings("geneva.zarr")                     # lazy xarray.Dataset, float32, ds.rio.crs
    table = efm.sample(ds, "points.geojson", label_column="landcover")
    fields = efm.zonal(ds, "fields.gpkg", stats=["mean"])        # one row per polygon and year
    model, report = efm.train(table, classifier="knn")          # print(report): the metrics `efm train` prints
    classes = efm.predict(ds, model)                            # lazy DataArray `class` (time, y, x)
    efm.plot(classes.sel(time="2022"))                          # with the legend
    efm.to_cog(classes.sel(time="2022"), "classes_2022.tif")    # the writer of `efm export`
    lab = efm.label(ds, classes=["water", "forest"])            # efm label's map in the notebook
    table = efm.sample(ds, lab.points, label_column="label")    # the points set on it so far

    coll = efm.open_embeddings("europe")                         # a collection: one store per UTM zone
    ds = coll.sel(bbox=(5.9, 45.0, 6.1, 45.1))                   # one lazy Dataset, zones hidden
    maps = efm.predict(coll, model)                              # MapCollection: cell -> lazy map
    efm.to_cog(maps.sel(time="2022"), "classes_2022")            # a COG per zone + map.vrt (EPSG:4326)

Bad input raises `transforms.core.errors.InputError` (a `ValueError`) with one line that names the
parameter at fault and the fix, before anything is computed or written.
"""

from __future__ import annotations

from efm.collection import EmbeddingCollection
from efm.collection_maps import MapCollection, change, predict, similarity, to_cog
from efm.embeddings import open_embeddings, sample
from efm.export import plot
from efm.label import Labeller, label
from efm.learning import Report, save_model, train
from efm.zonal import zonal
from transforms.core.errors import InputError

__all__ = [
    "open_embeddings",
    "sample",
    "zonal",
    "train",
    "Report",
    "save_model",
    "predict",
    "similarity",
    "change",
    "to_cog",
    "plot",
    "label",
    "Labeller",
    "InputError",
    "EmbeddingCollection",
    "MapCollection",
]
