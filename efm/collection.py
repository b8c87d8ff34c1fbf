"""A collection (one embedding store per UTM zone) in a notebook, without knowing about zones.

    coll = efm.open_embeddings("europe")                        # a collection folder -> EmbeddingCollection
    coll                                                        # its cells, years, area
    ds = coll.sel(bbox=(5.9, 45.0, 6.1, 45.1), years=[2022])    # ONE lazy Dataset, as open_embeddings gives
    classes = efm.predict(coll, model)                          # MapCollection: cell -> lazy map
    efm.to_cog(classes.sel(time="2022"), "classes_2022")        # a COG per zone + map.vrt (EPSG:4326)

`sel` over a bbox inside one cell is that member's window (its own pixels, no resampling); over
several cells it is a grid in one CRS (default: the UTM zone of the bbox's centre) whose every
pixel takes the value of the pixel holding its centre in the store of the cell holding its centre
(transforms/products/zone_mosaic.py), computed block by block by dask (one block and one store
chunk's part at a time in memory).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import numpy as np
import xarray as xr

from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.core.grid import Window
from transforms.core.zones import Cell, cell_of, cells_for
from transforms.products import zone_mosaic as zm
from transforms.storage import collection as collectionlib
from transforms.storage import readers

BLOCK = 256  # pixels a side of one dask block of a resampled selection (x 64 bands x 4 B = 16 MB)


def _float_bbox(bbox) -> tuple[float, float, float, float]:
    try:
        west, south, east, north = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InputError(
            "bbox", f"expected (W, S, E, N) in degrees, e.g. (5.9, 45.0, 6.1, 45.1), got {bbox!r}"
        ) from None
    if not (west < east and south < north and -180 <= west and east <= 180):
        raise InputError(
            "bbox", f"expected W < E and S < N in degrees (lon -180..180), got {bbox!r}"
        )
    return west, south, east, north


@functools.lru_cache(maxsize=32)
def _reader(path: str) -> readers.StoreReader:
    """One reader per store and process (it opens the store on first use)."""
    return readers.StoreReader(path)


def _resampled_block(
    target: zm.Target,
    sources: tuple,
    paths: tuple,
    time_indices: tuple,
    bands: int,
    block_info=None,
):
    (t0, _), (r0, r1), (c0, c1), _ = block_info[None]["array-location"]
    w = Window(r0, c0, r1 - r0, c1 - c0)

    def read(i, win):
        return _reader(paths[i]).read(time_indices[t0][i], win)

    values = zm.window_values(target, w, list(sources), read, np.nan, np.float32, bands)
    return values[None]


class EmbeddingCollection:
    """An embedding collection opened lazily: `.members` (cell name -> the lazy Dataset
    `efm.open_embeddings` gives for that store), `.cells`, `.years`, `.crs_of(cell)`,
    `.sel(bbox=...)` -> one lazy Dataset over any area of it."""

    def __init__(self, path: str | os.PathLike):
        from efm.embeddings import grid, open_embeddings

        self.path = os.fspath(path)
        self.index = collectionlib.read(self.path, flag="path")
        if self.index.kind != "embeddings":
            raise InputError(
                "path",
                f"{self.path} is a collection of {self.index.kind} stores, not of embeddings; "
                "export it with efm export",
            )
        self.members: dict[str, xr.Dataset] = {}
        self._info = {}
        for m in self.index.members:
            ds = open_embeddings(self.index.path_of(m))
            info = grid(ds)
            missing = [y for y in self.index.years if y not in info.years]
            if missing:
                raise InputError(
                    "path",
                    f"the collection at {self.path}: its index lists year {missing[0]} but "
                    f"{m.path} has {', '.join(map(str, info.years))}: its index and stores disagree",
                )
            self.members[m.cell] = ds
            self._info[m.cell] = info
        bands = {c: i.bands for c, i in self._info.items()}
        if len(set(bands.values())) > 1:
            raise InputError(
                "path",
                f"the collection at {self.path}: its stores have different bands: its stores are not one collection",
            )

    @property
    def cells(self) -> list[str]:
        return list(self.members)

    @property
    def years(self) -> tuple[int, ...]:
        first = next(iter(self._info.values()))
        return self.index.years or first.years

    @property
    def area(self) -> tuple[float, float, float, float]:
        """(W, S, E, N) in degrees."""
        return self.index.area_lonlat or zm.area_of(m.bounds_lonlat for m in self.index.members)

    def crs_of(self, cell: str) -> str:
        return self._member(cell).crs

    def _member(self, cell: str):
        found = next((m for m in self.index.members if m.cell == str(cell).upper()), None)
        if found is None:
            raise InputError(
                "cell", f"no cell {cell!r} in this collection ({', '.join(self.cells)})"
            )
        return found

    def __repr__(self) -> str:
        w, s, e, n = self.area
        lines = [
            f"<efm.EmbeddingCollection {self.path}: {len(self.members)} UTM zones, "
            f"years {', '.join(map(str, self.years))}, area W {w:g} S {s:g} E {e:g} N {n:g}>"
        ]
        for m in self.index.members:
            info = self._info[m.cell]
            lines.append(f"  {m.cell:>4}  {m.crs}  {info.width} x {info.height} px  {m.path}")
        lines.append("  .sel(bbox=(W, S, E, N), years=...) -> one lazy Dataset; .members[cell]")
        return "\n".join(lines)

    def _years(self, years) -> list[int]:
        wanted = gridlib.years_value(years, "years")
        if wanted is None:
            return list(self.years)
        missing = [y for y in wanted if y not in self.years]
        if missing:
            raise InputError(
                "years",
                f"the collection has no year {missing[0]}; it has {', '.join(map(str, self.years))}",
            )
        return wanted

    def sel(self, bbox, years=None, crs: str | None = None, scale: float = 10) -> xr.Dataset:
        """The embeddings over a lon/lat box, as one lazy Dataset (`embedding (time, y, x, band)`
        float32, NaN = no data, ``ds.rio.crs`` set).

        Inside one cell (and no other ``crs``/``scale``): that member's window, its own pixels.
        Across cells: a ``scale`` m grid in ``crs`` (default: the UTM zone of the box's centre),
        each pixel the value of the pixel holding its centre in the store of the cell holding its
        centre. Refused (one line) when the box misses the collection."""
        west, south, east, north = _float_bbox(bbox)
        years = self._years(years)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise InputError("scale", f"expected a pixel size in metres > 0, got {scale!r}")
        box = zm.shapely.box(west, south, east, north)
        area = zm.shapely.box(*self.area)
        cells = [c.name for c in cells_for(box) if c.name in self.members]
        if not cells or not box.intersects(area) or box.intersection(area).area == 0:
            w, s, e, n = self.area
            raise InputError(
                "bbox",
                f"({west:g}, {south:g}, {east:g}, {north:g}) lies outside the collection "
                f"(its area is W {w:g} S {s:g} E {e:g} N {n:g}, zones {', '.join(self.cells)})",
            )
        if crs is not None:
            crs = gridlib.normalise_crs(crs)
        if len(cells) == 1 and crs in (None, self.crs_of(cells[0])):
            info = self._info[cells[0]]
            if float(scale) == abs(info.transform[0]):
                return self._window(cells[0], (west, south, east, north), years)
        return self._resampled((west, south, east, north), years, crs, float(scale))

    def _window(self, cell: str, bbox, years) -> xr.Dataset:
        from affine import Affine

        ds, info = self.members[cell], self._info[cell]
        a, _, c, _, e, f = info.transform
        minx, miny, maxx, maxy = zm.projected_bounds(bbox, info.crs)
        c0 = max(0, int(np.floor((minx - c) / a)))
        c1 = min(info.width, int(np.ceil((maxx - c) / a)))
        r0 = max(0, int(np.floor((maxy - f) / e)))
        r1 = min(info.height, int(np.ceil((miny - f) / e)))
        if c1 <= c0 or r1 <= r0:
            raise InputError(
                "bbox", f"{tuple(bbox)} holds no pixel of the collection's {cell} store"
            )
        out = ds.isel(time=[info.time_index(y) for y in years], y=slice(r0, r1), x=slice(c0, c1))
        out = out.rio.write_transform(Affine(a, 0.0, c + c0 * a, 0.0, e, f + r0 * e))
        out.attrs["efm_collection"] = self.path
        out.attrs["efm_cell"] = cell
        return out

    def _resampled(self, bbox, years, crs, scale) -> xr.Dataset:
        import dask.array as da
        import rioxarray  # noqa: F401
        from affine import Affine

        w, s, e, n = bbox
        crs = crs or cell_of((w + e) / 2.0, (s + n) / 2.0).crs
        target = zm.snapped_target(bbox, crs, scale)
        cells = list(self.members)
        infos = [self._info[c] for c in cells]
        sources = tuple(
            zm.Source(
                Cell.from_name(c),
                i.crs,
                tuple(i.transform),
                i.width,
                i.height,
                i.chunk_rows,
                i.chunk_cols,
            )
            for c, i in zip(cells, infos)
        )
        paths = tuple(self.index.path_of(self._member(c)) for c in cells)
        time_indices = tuple(tuple(i.time_index(y) for i in infos) for y in years)
        bands = infos[0].bands
        chunks = (
            (1,) * len(years),
            _chunks(target.height, BLOCK),
            _chunks(target.width, BLOCK),
            (len(bands),),
        )
        data = da.map_blocks(
            _resampled_block,
            target=target,
            sources=sources,
            paths=paths,
            time_indices=time_indices,
            bands=len(bands),
            chunks=chunks,
            dtype=np.float32,
            meta=np.empty((0, 0, 0, 0), np.float32),
            name=f"efm-sel-{_token(self.path, bbox, years, crs, scale)}",
        )
        first = self.members[cells[0]]
        time = first["time"].isel(time=[infos[0].time_index(y) for y in years]).values
        ds = xr.Dataset(
            {"embedding": (("time", "y", "x", "band"), data)},
            coords={
                "time": time,
                "y": target.y0 - (np.arange(target.height) + 0.5) * scale,
                "x": target.x0 + (np.arange(target.width) + 0.5) * scale,
                "band": list(bands),
            },
            attrs={
                "source": first.attrs.get("source", ""),
                "crs": crs,
                "scale": scale,
                "years": list(years),
                "efm_collection": self.path,
                "efm_rule": "each pixel: the pixel holding its centre, in the store of the "
                "UTM cell holding its centre (nearest, not resampled)",
                "license": first.attrs.get("license", ""),
                "attribution": first.attrs.get("attribution", ""),
            },
        )
        ds = ds.rio.write_crs(crs).rio.write_transform(Affine(*target.transform))
        return ds


def _chunks(n: int, size: int) -> tuple[int, ...]:
    return (size,) * (n // size) + ((n % size,) if n % size else ())


def _token(*parts) -> str:
    import dask.base

    return dask.base.tokenize(*parts)


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


def as_collection(obj) -> EmbeddingCollection | None:
    """An EmbeddingCollection for a collection (or its path); None for anything else."""
    if isinstance(obj, EmbeddingCollection):
        return obj
    if isinstance(obj, (str, os.PathLike)) and collectionlib.is_collection(os.fspath(obj)):
        return EmbeddingCollection(obj)
    return None


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
    import pyproj

    from efm import maps
    from efm.embeddings import points_of
    from transforms.learning import sampling
    from transforms.products import similarity as similarity_refs
    from transforms.products.change import SimilarityFunction, mask_variable, similarity_variable

    maps._check_threshold(threshold)
    years = coll._years(years)
    if (label is None) != (label_column is None):
        raise InputError(
            "label" if label_column is not None else "label_column",
            "give both label_column and label, or neither",
        )
    if isinstance(points, (str, os.PathLike)):
        pts = similarity_refs.read_reference_points(
            os.fspath(points), label_column, label, points_crs
        )
    else:
        pts = points_of(points, label_column, points_crs, keep_columns=[])
        if label_column is not None:
            keep = np.array([str(v) == str(label) for v in pts.labels], dtype=bool)
            if not keep.any():
                raise InputError("label", f"no point has {label_column} = {label!r}")
            pts = type(pts)(pts.labels[keep], pts.x[keep], pts.y[keep], pts.crs)
    if reference_year is not None:
        reference_year = gridlib.one_year(reference_year, "reference_year")
        coll._years([reference_year])
    ref_years = [reference_year] if reference_year is not None else years
    lon, lat = pyproj.Transformer.from_crs(pts.crs, "EPSG:4326", always_xy=True).transform(
        np.asarray(pts.x, float), np.asarray(pts.y, float)
    )
    sums = {y: 0.0 for y in ref_years}
    counts = {y: 0 for y in ref_years}
    for cell, ds in coll.members.items():
        info = coll._info[cell]
        own = np.array(
            [cell_of(a, b).name == cell for a, b in zip(lon, lat)], dtype=bool
        )  # each point read once, in its own cell's store
        if not own.any():
            continue
        part = type(pts)(pts.labels[own], pts.x[own], pts.y[own], pts.crs)
        rows, cols = sampling.to_pixels(info, part)
        inside = rows >= 0
        if not inside.any():
            continue
        read = maps._values_at(ds)
        for y in ref_years:
            values = read(rows[inside], cols[inside], info.time_index(y)).astype(np.float64)
            valid = ~np.isnan(values).any(axis=1)
            sums[y] = sums[y] + values[valid].sum(axis=0)
            counts[y] += int(valid.sum())
    for y in ref_years:
        if counts[y] == 0:
            raise InputError(
                "points",
                f"none of the {len(lon)} reference points falls on a pixel with data in {y} "
                "in the collection; check the area and the points' CRS",
            )
    refs = {
        y: similarity_refs.Reference((sums[y] / counts[y]).astype(np.float32), counts[y])
        for y in ref_years
    }
    by_output = {
        t: refs[reference_year if reference_year is not None else y] for t, y in enumerate(years)
    }
    variables = [similarity_variable("dot product with the mean embedding at the reference points")]
    if threshold is not None:
        variables.append(mask_variable("similar", f"similarity at least {threshold}", threshold))
    out = {}
    for cell, ds in coll.members.items():
        info = coll._info[cell]
        attrs = {
            "source": info.path,
            "crs": info.crs,
            "reference_points": [by_output[t].points for t in range(len(years))],
            "reference_vectors": [
                [float(v) for v in by_output[t].vector] for t in range(len(years))
            ],
            "reference_mean": "plain mean of the points' embeddings over the whole collection "
            "(each point read in the store of the cell holding it), not re-normalised",
        }
        fn = SimilarityFunction({t: r.vector for t, r in by_output.items()}, threshold)
        dsm = maps.lazy_map(
            ds,
            info,
            fn,
            {t: (info.time_index(y),) for t, y in enumerate(years)},
            variables,
            years,
            product="similarity",
            attrs=attrs,
        )
        out[cell] = dsm if threshold is not None else dsm["similarity"]
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
