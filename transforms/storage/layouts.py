"""Which layout an embedding store is in, and how to see it as efm's canonical view.

Two layouts are read (docs/field-stores.md has what each writer records, read from its code):

- **efm v2**: Zarr 2, variable `embedding (time, y, x, band)`, CF `spatial_ref`, int8 codes
  with `quantization` = `transforms.core.quantize.FORMULA` (efm's stores before issue 17).
- **the convention** (geoembeddings.org best practices, 2026): Zarr 3, an array `embedding` or
  `embeddings` with `dimension_names` `(time, band, y, x)`, the grid in `spatial:transform` +
  `spatial:shape`, the CRS in `proj:code` / `proj:wkt2` / `proj:projjson`, the quantisation in
  `geoemb:quantization` (on the group or its parent: TESSERA keeps `geoemb:` on the root and
  one group per UTM zone). The public AEF mosaic and TESSERA's store are in it.

Whatever the layout, `describe` gives one `Layout`, and the canonical view every product reads
is `embedding (time, y, x, band)`, years as `time`, CRS and transform as rioxarray reads them.
An int8 store is read only with a quantisation its metadata names and efm knows; any other is
refused, never guessed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np

from transforms.core import quantize
from transforms.core.errors import InputError, first_line
from transforms.sources.remote_fs import storage_options

CANONICAL = ("time", "y", "x", "band")
CONVENTION = ("time", "band", "y", "x")
ARRAY_NAMES = ("embedding", "embeddings")

# Quantisations efm can undo. `signed_square` is the AEF one (value = (code / 127.5)^2 * sign(code),
# -128 = no data): efm's own int8 codes are the same, so they are read as efm's codes.
SIGNED_SQUARE = "signed_square"
PER_PIXEL_SCALE = "per_pixel_scale"
WORK_UNIT = 1024  # px: the side of a unit of work on a store whose chunks are smaller
_AEF_FORMULA = re.compile(r"^\(?\s*x\s*/\s*127\.5\s*\)?\s*\*\*\s*2\s*\*\s*sign\(\s*x\s*\)$")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a store keeps its embeddings and how to read them (small: pickled to workers)."""

    path: str
    array: str  # the array's path inside the store's group
    dims: tuple[str, ...]  # the array's dimension order
    zarr_format: int
    quantization: str  # "none" (floats), SIGNED_SQUARE (int8 codes), PER_PIXEL_SCALE
    scale_array: str | None  # PER_PIXEL_SCALE: the (time, y, x) float array to multiply by
    crs: str  # WKT2, or an authority code
    transform: tuple[float, ...]  # affine a, b, c, d, e, f of pixel corners
    height: int
    width: int
    years: tuple[int, ...]
    bands: tuple[str, ...]
    chunk_rows: int  # the read unit: the inner chunk of a sharded array
    chunk_cols: int
    shard_rows: int  # the write unit: a shard (= the chunk when not sharded)
    shard_cols: int
    dtype: str

    @property
    def band_axis(self) -> int:
        return self.dims.index("band")

    @property
    def is_efm_v2(self) -> bool:
        """efm's own layout before issue 17 (read by the stores' own fast path)."""
        return self.zarr_format == 2 and self.dims == CANONICAL and self.array == "embedding"

    @property
    def work_unit(self) -> tuple[int, int]:
        """Rows, cols of one unit of work (a Beam element, a dask chunk): whole inner chunks, about
        1024 px a side (as efm's own chunks), never more than a shard (one object to read)."""

        def side(inner: int, shard: int) -> int:
            return min(shard, inner * max(1, WORK_UNIT // inner))

        return side(self.chunk_rows, self.shard_rows), side(self.chunk_cols, self.shard_cols)


# ---------------------------------------------------------------- opening any root


def open_group(path: str, flag: str):
    """The store's root group, read-only, any Zarr format; one line for what cannot be opened."""
    import zarr

    from transforms.storage import reach

    try:
        with reach.quiet_libraries():
            return zarr.open_group(path, mode="r", storage_options=storage_options(path) or None)
    except FileNotFoundError:
        raise InputError(
            flag, f"cannot open {path}: it does not exist (or is not a Zarr store)"
        ) from None
    except PermissionError as exc:
        raise InputError(
            flag, f"access to {path} was denied ({first_line(exc)}); {reach.denied_hint(path)}"
        ) from None
    except Exception as exc:  # botocore, aiohttp and zarr raise many types: one line each
        status = getattr(exc, "status", None) or getattr(exc, "code", None)
        if status in (401, 403) or first_line(exc).startswith("Forbidden"):  # aiohttp, gcsfs
            raise InputError(
                flag, f"access to {path} was denied ({first_line(exc)}); {reach.denied_hint(path)}"
            ) from None
        raise InputError(flag, f"cannot open {path} as a Zarr store: {first_line(exc)}") from None


def _parent_attrs(path: str) -> dict:
    """The attributes of the Zarr group one level up, or {}: TESSERA keeps `geoemb:` on its root
    and a user may name a zone group (`tessera.zarr/utm31`) as the store."""
    import zarr

    trimmed = path.rstrip("/")
    if "/" not in trimmed.split("://", 1)[-1]:
        return {}
    parent = trimmed.rsplit("/", 1)[0]
    try:
        return dict(
            zarr.open_group(parent, mode="r", storage_options=storage_options(parent) or None).attrs
        )
    except Exception:  # no group there: the store is not a group inside another
        return {}


# ---------------------------------------------------------------- what the metadata says


def _dims(array) -> tuple[str, ...]:
    names = getattr(array.metadata, "dimension_names", None)
    if names:
        return tuple(str(n) for n in names)
    return tuple(array.attrs.get("_ARRAY_DIMENSIONS", ()))  # Zarr 2 (xarray's convention)


def _find_array(group, path: str, flag: str):
    found = [name for name in ARRAY_NAMES if name in group]
    if not found:
        names = sorted(group.array_keys()) if hasattr(group, "array_keys") else []
        raise InputError(
            flag,
            f"{path} is a Zarr store but not an embedding store: it has no 'embedding' or "
            f"'embeddings' array (it holds {', '.join(names[:6]) or 'no arrays'})",
        )
    array = group[found[0]]
    dims = _dims(array)
    if sorted(dims) != sorted(CANONICAL):
        raise InputError(
            flag,
            f"{path}: array {found[0]!r} has dimensions {list(dims) or 'without names'}; an embedding "
            f"store's are (time, band, y, x) or efm's (time, y, x, band)",
        )
    return found[0], array, dims


def quantization(attrs: dict, array_attrs: dict, dtype, path: str, flag: str):
    """(method, scale array) for the store's values; refuses an int8 store it cannot undo."""
    if np.dtype(dtype).kind == "f":
        return "none", None
    if np.dtype(dtype) != np.int8:
        raise InputError(
            flag, f"{path}: embeddings of dtype {dtype} are neither floats nor int8 codes"
        )
    if (
        array_attrs.get("quantization") == quantize.FORMULA
        or attrs.get("quantization") == quantize.FORMULA
    ):
        return SIGNED_SQUARE, None  # efm's own stores
    spec = attrs.get("geoemb:quantization") or array_attrs.get("geoemb:quantization")
    if not isinstance(spec, dict):
        raise InputError(
            flag,
            f"{path} holds int8 embeddings but names no quantisation (geoemb:quantization); efm "
            "does not guess how to de-quantise them",
        )
    method = spec.get("method")
    if method == SIGNED_SQUARE:
        formula = str(spec.get("formula", "(x / 127.5) ** 2 * sign(x)")).strip()
        nodata = spec.get("nodata", quantize.NODATA_CODE)
        if not _AEF_FORMULA.match(formula) or nodata != quantize.NODATA_CODE:
            raise InputError(
                flag,
                f"{path}: signed_square quantisation with formula {formula!r} and nodata {nodata!r}; "
                "efm knows it only as (x / 127.5) ** 2 * sign(x) with nodata -128",
            )
        return SIGNED_SQUARE, None
    if method == PER_PIXEL_SCALE:
        scale = spec.get("scale") or {}
        name = scale.get("array_name") if isinstance(scale, dict) else None
        if not name:
            raise InputError(flag, f"{path}: per_pixel_scale quantisation names no scale array")
        return PER_PIXEL_SCALE, str(name)
    raise InputError(
        flag,
        f"{path}: int8 embeddings quantised by {method!r}, which efm does not know; it reads "
        f"{SIGNED_SQUARE} (AEF) and {PER_PIXEL_SCALE} (TESSERA)",
    )


def _crs(attrs: dict, path: str, flag: str) -> str:
    """The CRS the store names, as WKT2; every key that names one must name the same CRS."""
    import pyproj

    found = []
    for key in ("proj:wkt2", "proj:code", "proj:projjson"):
        value = attrs.get(key)
        if value:
            try:
                text = json.dumps(value) if isinstance(value, dict) else str(value)
                found.append((key, pyproj.CRS.from_user_input(text)))
            except pyproj.exceptions.CRSError as exc:
                raise InputError(
                    flag, f"{path}: {key} {str(value)[:60]!r} is not a CRS: {first_line(exc)}"
                ) from None
    if not found:
        raise InputError(
            flag, f"{path} names no CRS (proj:code, proj:wkt2 or proj:projjson); efm needs one"
        )
    (key, crs), others = found[0], found[1:]
    for other_key, other in others:
        codes = crs.to_epsg(min_confidence=70), other.to_epsg(min_confidence=70)
        same = (
            codes[0] == codes[1] if None not in codes else crs.equals(other, ignore_axis_order=True)
        )
        if not same:
            raise InputError(
                flag,
                f"{path}: {key} ({crs.name}) and {other_key} ({other.name}) name different CRSs; "
                "the store's metadata contradicts itself: fix the one that is wrong",
            )
    return crs.to_wkt()


def _transform(attrs: dict, group, height: int, width: int, path: str, flag: str):
    values = attrs.get("spatial:transform")
    if not (
        isinstance(values, list)
        and len(values) >= 6
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values[:6])
    ):
        raise InputError(
            flag, f"{path} has no usable spatial:transform (six finite numbers); efm needs one"
        )
    a, b, c, d, e, f = (float(v) for v in values[:6])
    if b or d or not a or not e:
        raise InputError(
            flag,
            f"{path}: spatial:transform {values[:6]} is rotated or degenerate; efm reads north-up grids",
        )
    kind = attrs.get("spatial:transform_type", "affine")
    if kind != "affine":
        raise InputError(
            flag, f"{path}: spatial:transform_type {kind!r}; efm reads affine grids only"
        )
    registration = attrs.get("spatial:registration", "pixel")
    if registration == "node":  # the transform places the border cells' centres: to corners
        c, f = c - a / 2, f - e / 2
    elif registration != "pixel":
        raise InputError(
            flag,
            f"{path}: spatial:registration {registration!r} is neither 'pixel' nor 'node' (the "
            "spatial convention's two values)",
        )
    shape = attrs.get("spatial:shape")
    if shape is not None and list(shape) != [height, width]:
        raise InputError(
            flag,
            f"{path}: spatial:shape {list(shape)} disagrees with the array's y, x size "
            f"[{height}, {width}]",
        )
    # Coordinates, when stored, must be the centres the transform gives.
    for name, n, origin, step in (("x", width, c, a), ("y", height, f, e)):
        if name in group:
            coords = np.asarray(group[name][:], dtype=np.float64)
            want = origin + (np.arange(n) + 0.5) * step
            if coords.shape != want.shape or not np.allclose(
                coords, want, rtol=0, atol=abs(step) * 1e-3
            ):
                raise InputError(
                    flag,
                    f"{path}: the {name} coordinates are not the pixel centres spatial:transform "
                    "gives; the store's grid is inconsistent",
                )
    bbox = attrs.get("spatial:bbox")
    if bbox is not None:  # [xmin, ymin, xmax, ymax] of the cells' edges (of the centres: node)
        inset = (abs(a) / 2, abs(e) / 2) if registration == "node" else (0.0, 0.0)
        xs, ys = (c, c + width * a), (f, f + height * e)
        want = [
            min(xs) + inset[0],
            min(ys) + inset[1],
            max(xs) - inset[0],
            max(ys) - inset[1],
        ]
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) for v in bbox)
            and all(
                abs(v - w) <= tol  # a pixel of slack: a writer may round its bbox
                for v, w, tol in zip(bbox, want, (abs(a), abs(e), abs(a), abs(e)))
            )
        ):
            raise InputError(
                flag,
                f"{path}: spatial:bbox {bbox} disagrees with spatial:transform and the array's "
                f"size (which give {[round(v, 9) for v in want]}); the store's grid is inconsistent",
            )
    return (a, b, c, d, e, f)


def _check_extent(crs: str, transform, height: int, width: int, path: str, flag: str) -> None:
    """A grid in degrees must lie on the globe: a grid in metres labelled EPSG:4326 (or the
    reverse's CRS on a grid in degrees, seen as far off the globe) is refused here, not mapped."""
    import pyproj

    geographic = pyproj.CRS.from_user_input(crs)
    if not geographic.is_geographic:
        return
    a, _, c, _, e, f = transform
    xs, ys = sorted((c, c + width * a)), sorted((f, f + height * e))
    slack_x, slack_y = abs(a), abs(e)  # a node-registered global grid reaches half a cell beyond
    if (
        ys[0] < -90 - slack_y
        or ys[1] > 90 + slack_y
        or xs[0] < -180 - slack_x
        or xs[1] > 360 + slack_x
        or xs[1] - xs[0] > 360 + 2 * slack_x
    ):
        raise InputError(
            flag,
            f"{path}: its grid spans x {xs[0]:.6g}..{xs[1]:.6g}, y {ys[0]:.6g}..{ys[1]:.6g}, "
            f"which is not on the globe in {geographic.name} (degrees): the CRS "
            "(proj:code) and spatial:transform do not belong together",
        )


def _years(group, n: int, path: str, flag: str) -> tuple[int, ...]:
    if "time" not in group:
        raise InputError(flag, f"{path} has no time coordinate")
    raw = np.asarray(group["time"][:])
    attrs = dict(group["time"].attrs)
    units = str(attrs.get("units", ""))
    if raw.dtype.kind in "iu" and not units:  # integer years (the convention's choice)
        years = [int(v) for v in raw]
    elif raw.dtype.kind == "M":
        years = [int(str(v)[:4]) for v in raw.astype("datetime64[D]")]
    else:  # CF-encoded datetimes (efm v2 stores: days since ...)
        import xarray as xr

        decoded = xr.decode_cf(xr.Dataset({"time": ("time", raw, attrs)}))["time"].values
        years = [int(str(v)[:4]) for v in np.asarray(decoded).astype("datetime64[D]")]
    if len(years) != n or len(set(years)) != n:
        raise InputError(flag, f"{path}: time holds {years}, not one distinct year per step")
    return tuple(years)


def _bands(group, n: int) -> tuple[str, ...]:
    if "band" in group:
        values = [v.decode() if isinstance(v, bytes) else v for v in group["band"][:].tolist()]
        if len(values) == n:
            return tuple(
                f"A{int(v):02d}" if isinstance(v, (int, np.integer)) else str(v) for v in values
            )
    return tuple(f"A{i:02d}" for i in range(n))


def _chunking(array, dims) -> tuple[int, int, int, int]:
    """(inner rows, inner cols, shard rows, shard cols) along y and x."""
    inner = array.chunks
    shards = getattr(array, "shards", None) or inner
    y, x = dims.index("y"), dims.index("x")
    return int(inner[y]), int(inner[x]), int(shards[y]), int(shards[x])


def describe(path: str, *, flag: str = "--embeddings") -> Layout:
    """Read a store's metadata (nothing else) and say how to read its embeddings."""
    from transforms.storage import reach

    reach.check_root(path, flag)  # a remote root: reachable and readable, said in bounded time
    group = open_group(path, flag)
    attrs = dict(group.attrs)
    name, array, dims = _find_array(group, path, flag)
    if (
        array.dtype == np.int8
        and "geoemb:quantization" not in attrs
        and quantize.FORMULA not in (attrs.get("quantization"), array.attrs.get("quantization"))
    ):  # TESSERA names its quantisation on the root, above the zone group named here
        attrs = {**_parent_attrs(path), **attrs}
    sizes = dict(zip(dims, array.shape))
    method, scale = quantization(attrs, dict(array.attrs), array.dtype, path, flag)
    if method == PER_PIXEL_SCALE and scale not in group:
        raise InputError(
            flag, f"{path}: the scale array {scale!r} its quantisation names is missing"
        )
    if "spatial:transform" in attrs:
        crs = _crs(attrs, path, flag)
        transform = _transform(attrs, group, sizes["y"], sizes["x"], path, flag)
        _check_extent(crs, transform, sizes["y"], sizes["x"], path, flag)
    elif "spatial_ref" in group:  # efm v2 before proj:/spatial: were written: CF's grid mapping
        ref = dict(group["spatial_ref"].attrs)
        crs, geo = ref.get("crs_wkt") or ref.get("spatial_ref"), ref.get("GeoTransform")
        if not crs or not geo:
            raise InputError(flag, f"{path} has no readable CRS/transform (spatial_ref)")
        g = [float(v) for v in str(geo).split()]
        transform = (g[1], g[2], g[0], g[4], g[5], g[3])
    else:
        raise InputError(
            flag, f"{path} names no grid (spatial:transform, or CF spatial_ref); efm needs one"
        )
    rows, cols, shard_rows, shard_cols = _chunking(array, dims)
    return Layout(
        path=path,
        array=name,
        dims=dims,
        zarr_format=int(array.metadata.zarr_format),
        quantization=method,
        scale_array=scale,
        crs=crs,
        transform=transform,
        height=sizes["y"],
        width=sizes["x"],
        years=_years(group, sizes["time"], path, flag),
        bands=_bands(group, sizes["band"]),
        chunk_rows=rows,
        chunk_cols=cols,
        shard_rows=shard_rows,
        shard_cols=shard_cols,
        dtype=str(array.dtype),
    )


# ---------------------------------------------------------------- reading windows


class LayoutReader:
    """Windows of any layout as efm's (rows, cols, bands), opened on first use per process.

    `read_codes` gives what efm's products take as stored values: int8 codes for the
    signed-square quantisation (efm's own), float32 otherwise (a per-pixel scale is applied
    here, NaN where the scale says no data); `read` always gives float32, NaN = no data.
    """

    def __init__(self, layout: Layout):
        self.layout = layout
        self._arrays = None

    def __getstate__(self):
        return {"layout": self.layout}

    def __setstate__(self, state):
        self.__init__(state["layout"])

    def _open(self):
        if self._arrays is None:
            group = open_group(self.layout.path, "--embeddings")
            scale = group[self.layout.scale_array] if self.layout.scale_array else None
            self._arrays = (group[self.layout.array], scale)
        return self._arrays

    def read_codes(self, time_index: int, rows: slice, cols: slice) -> np.ndarray:
        array, scale = self._open()
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


# ---------------------------------------------------------------- the canonical view


def open_dataset(layout: Layout, *, flag: str = "--embeddings"):
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
    group = open_group(layout.path, flag)
    rows, cols = layout.work_unit
    sizes = {"time": 1, "band": len(layout.bands), "y": rows, "x": cols}
    data = da.from_zarr(group[layout.array], chunks=tuple(sizes[d] for d in layout.dims))
    data = data.transpose([layout.dims.index(d) for d in CANONICAL])
    if layout.quantization == PER_PIXEL_SCALE:  # a (time, y, x) scale over every band
        scale = group[layout.scale_array]
        if _dims(scale) and _dims(scale) != ("time", "y", "x"):
            raise InputError(
                flag, f"{layout.path}: the scale array's dimensions are {list(_dims(scale))}"
            )
        factors = da.from_zarr(scale, chunks=(1, rows, cols))[..., np.newaxis]
        data = da.where(da.isfinite(factors), data.astype(np.float32) * factors, np.float32(np.nan))
    a, b, c, d, e, f = layout.transform
    ds = xr.Dataset(
        {"embedding": (CANONICAL, data)},
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
    ds["embedding"].encoding.update(chunks=chunks, preferred_chunks=dict(zip(CANONICAL, chunks)))
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
