"""Maps of a collection in a notebook: `efm.predict` / `similarity` / `change` of an
`EmbeddingCollection` give a `MapCollection` (cell -> that member's lazy map), and `efm.to_cog`
writes it as a COG per zone plus `map.vrt` (efm/collection.py holds the collection itself)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import xarray as xr

from efm.collection import EmbeddingCollection, as_collection
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.core.zones import Cell
from transforms.products import zone_mosaic as zm
from transforms.storage import collection as collectionlib

# ---------------------------------------------------------------- maps over a collection


class MapCollection(Mapping):
    """Cell name -> the lazy map (DataArray, or Dataset) made from that member's store.

    ``maps["31N"]`` one zone's map; ``maps["changed"]`` (a variable of Dataset maps) or
    ``maps.sel(time="2022")`` the same for every zone; ``efm.to_cog(maps, folder)`` one COG per
    zone plus ``map.vrt`` over all of them in EPSG:4326."""

    def __init__(self, maps: dict, index: collectionlib.Collection):
        self._maps = dict(maps)
        self.index = index

    def __getitem__(self, key):
        if key in self._maps:
            return self._maps[key]
        if isinstance(key, str) and key.upper() in self._maps:
            return self._maps[key.upper()]
        if all(isinstance(m, xr.Dataset) and key in m for m in self._maps.values()):
            return MapCollection({c: m[key] for c, m in self._maps.items()}, self.index)
        raise KeyError(key)

    def __iter__(self):
        return iter(self._maps)

    def __len__(self):
        return len(self._maps)

    def sel(self, *args, **kwargs) -> MapCollection:
        return MapCollection({c: m.sel(*args, **kwargs) for c, m in self._maps.items()}, self.index)

    def isel(self, *args, **kwargs) -> MapCollection:
        return MapCollection(
            {c: m.isel(*args, **kwargs) for c, m in self._maps.items()}, self.index
        )

    def compute(self) -> MapCollection:
        return MapCollection({c: m.compute() for c, m in self._maps.items()}, self.index)

    def __repr__(self) -> str:
        lines = [f"<efm.MapCollection of {len(self)} UTM zones from {self.index.root}>"]
        for c, m in self._maps.items():
            kind = type(m).__name__
            name = m.name if isinstance(m, xr.DataArray) else ", ".join(map(str, m.data_vars))
            dims = ", ".join(f"{d}: {n}" for d, n in m.sizes.items())
            lines.append(f"  {c:>4}  {kind} {name} ({dims})")
        return "\n".join(lines)


def predict(ds, model, **kwargs):
    """`efm.predict` on a store / Dataset, or per member on a collection (-> MapCollection)."""
    from efm import maps

    coll = as_collection(ds)
    if coll is None:
        return maps.predict(ds, model, **kwargs)
    if not kwargs.get("model_sha256") and isinstance(model, (str, os.PathLike)):
        loaded = maps._loaded(model, None, kwargs.get("trust_pickle", False))
        model = loaded  # loaded (and checked) once, not once per zone
    return MapCollection(
        {c: maps.predict(m, model, **kwargs) for c, m in coll.members.items()}, coll.index
    )


def change(ds, from_year: int, to_year: int, **kwargs):
    """`efm.change` on a store / Dataset, or per member on a collection (-> MapCollection)."""
    from efm import maps

    coll = as_collection(ds)
    if coll is None:
        return maps.change(ds, from_year, to_year, **kwargs)
    return MapCollection(
        {c: maps.change(m, from_year, to_year, **kwargs) for c, m in coll.members.items()},
        coll.index,
    )


def similarity(ds, points, **kwargs):
    """`efm.similarity` on a store / Dataset; on a collection one reference for the whole
    collection (each point read in the store of the cell holding it), applied per member."""
    from efm import maps

    coll = as_collection(ds)
    if coll is None:
        return maps.similarity(ds, points, **kwargs)
    return _collection_similarity(coll, points, **kwargs)


def _collection_similarity(
    coll: EmbeddingCollection,
    points,
    *,
    label_column=None,
    label=None,
    years=None,
    reference_year=None,
    threshold=None,
    points_crs=None,
):
    from efm import maps
    from transforms.products import similarity as similarity_refs

    maps._check_threshold(threshold)
    years = coll._years(years)
    pts = similarity_refs.reference_points(points, label_column, label, points_crs, api=True)
    if reference_year is not None:
        reference_year = gridlib.one_year(reference_year, "reference_year")
        coll._years([reference_year])
    ref_years = [reference_year] if reference_year is not None else years
    members = [(cell, cell, coll._info[cell]) for cell in coll.members]
    refs = similarity_refs.collection_references(
        members,
        pts,
        ref_years,
        "the points",
        coll.path,
        read=lambda part, t: maps._values_at(coll.members[part.name])(part.rows, part.cols, t),
        flag="points",
    )
    by_output = {
        t: refs[reference_year if reference_year is not None else y] for t, y in enumerate(years)
    }
    note = (
        "plain mean of the points' embeddings over the whole collection "
        "(each point read in the store of the cell holding it), not re-normalised"
    )
    out = {}
    for cell, ds in coll.members.items():
        out[cell] = maps.similarity_map(ds, coll._info[cell], by_output, years, threshold, note)
    return MapCollection(out, coll.index)


# ---------------------------------------------------------------- export


def to_cog(maps, path, *, year: int | None = None, overwrite: bool = False, **kwargs):
    """`efm.to_cog` of one map, or of a MapCollection: a folder with one COG per zone
    (``utm-31n.tif``, in its zone's CRS), each zone's warped VRT and ``map.vrt`` (EPSG:4326, the
    whole area; seams by the collection's rule, docs/collections.md). Returns the VRT's path."""
    from efm import export as efm_export

    if not isinstance(maps, MapCollection):
        return efm_export.to_cog(maps, path, year=year, overwrite=overwrite, **kwargs)
    from transforms.products import export, zone_export
    from transforms.storage import outputs

    path = os.fspath(path)
    if path.lower().endswith((".tif", ".tiff", ".vrt")):
        raise InputError(
            "path",
            f"{path}: a collection's maps go to a folder (one COG per zone and map.vrt), e.g. classes_2022",
        )
    float_nodata = kwargs.get("float_nodata", export.DEFAULT_FLOAT_NODATA)
    cells_layers = []
    for cell, da in maps.items():
        if isinstance(da, xr.Dataset):
            raise InputError(
                "maps",
                f"the maps are Datasets ({', '.join(map(str, da.data_vars))}); pick one variable, e.g. maps['{next(iter(da.data_vars))}']",
            )
        cells_layers.append(
            (Cell.from_name(cell), efm_export.layer(da, year=year, float_nodata=float_nodata))
        )
    zone_export.check_alike(cells_layers, "maps", maps.index.root)
    found = outputs.check_output(path, zone_export.KIND, overwrite=overwrite, flag="path")
    if not found.empty:
        outputs.remove(path, zone_export.KIND, flag="path", found=found)
    zone_export.mark(path)
    scale = abs(cells_layers[0][1].transform[0])
    area = maps.index.area_lonlat or zm.area_of(m.bounds_lonlat for m in maps.index.members)
    target = zone_export.grid_for(area, scale)
    stems, vrt = zone_export.names([c for c, _ in cells_layers], None, False)
    first = cells_layers[0][1]
    written = zone_export.write_zones(
        path, cells_layers, None, stems, vrt, target, export.layer_colors(first)
    )
    return written[-1]
