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


def as_collection(obj) -> EmbeddingCollection | None:
    """An EmbeddingCollection for a collection (or its path); None for anything else."""
    if isinstance(obj, EmbeddingCollection):
        return obj
    if isinstance(obj, (str, os.PathLike)) and collectionlib.is_collection(os.fspath(obj)):
        return EmbeddingCollection(obj)
    return None
