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
import os
import re
import sys
import threading

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
        self._direct = None  # ShardWindows, for the arrays it reads

    def __getstate__(self):
        return {"layout": self.layout}

    def __setstate__(self, state):
        self.__init__(state["layout"])

    def _open(self):
        if self._arrays is None:
            group = open_group(self.layout.path, "--embeddings")
            scale = group[self.layout.scale_array] if self.layout.scale_array else None
            array = group[self.layout.array]
            self._direct = ShardWindows.of(
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


# ---------------------------------------------------------------- sharded windows, read directly


ROWS_PER_PASS = 16  # rows moved band-last per pass: the pass's buffers stay in the CPU's caches
_EMPTY = np.uint64(2**64 - 1)  # a shard index's (offset, nbytes) of an inner chunk never written


def interleave(planar: np.ndarray, out: np.ndarray) -> None:
    """`planar` (bands, rows, cols) into `out` (rows, cols, bands); both may be views of larger
    arrays whose last axis is contiguous.

    numpy's transposition is slowest for small items (one byte per element). In two steps it
    is several times faster (transforms/sources/cog_blocks.py, benchmarks/store_formats.py):
    move 8-byte words (8 int8 or 2 float32 pixels of one band) into pixel order, then transpose
    each (pixels per word x bands) tile, a cache-local copy. The words are only reinterpreted,
    never computed with, so byte order does not matter."""
    bands, rows, cols = planar.shape
    size = planar.dtype.itemsize
    per_word = 8 // size if size in (1, 2, 4) else 0
    whole = cols - cols % per_word if per_word else 0
    if whole and planar.strides[2] == size and out.strides[2] == size:
        words = planar[:, :, :whole].view(np.uint64)  # (bands, rows, whole / per_word)
        n = whole // per_word
        target = np.lib.stride_tricks.as_strided(
            out,
            shape=(rows, n, per_word, bands),
            strides=(out.strides[0], per_word * out.strides[1], out.strides[1], out.strides[2]),
            writeable=True,
        )
        buffer = np.empty((ROWS_PER_PASS, n, bands), dtype=np.uint64)
        for r in range(0, rows, ROWS_PER_PASS):
            k = min(ROWS_PER_PASS, rows - r)
            np.copyto(buffer[:k], words[:, r : r + k, :].transpose(1, 2, 0))
            target[r : r + k] = (
                buffer[:k].view(planar.dtype).reshape(k, n, bands, per_word).transpose(0, 1, 3, 2)
            )
    if whole < cols:
        out[:, whole:, :] = planar[:, :, whole:].transpose(1, 2, 0)


class ShardWindows:
    """Windows of a sharded Zarr 3 array in the convention's order (time, band, y, x), as
    (rows, cols, bands), read shard by shard without zarr-python's per-chunk machinery.

    zarr-python reads such a window band-first and the caller then moves the bands last: a 1024 px
    int8 window cost 2.3x the CPU of a Zarr 2 band-last chunk (decode 0.17 s + transposition
    0.32 s against 0.07 s; benchmarks/store_formats.py). Here each shard is fetched in as few
    requests as it can be (the whole object when the window wants every inner chunk of it,
    else its index, then one ranged request per contiguous run of the inner chunks wanted; the
    shards of a window concurrently on a remote store), each inner chunk is decoded into one
    reused buffer and moved band-last straight into the result (`interleave`). The values are
    zarr's own (tests/test_layouts.py compares them with zarr-python's read of the same windows).

    `of` gives None for any array it does not know how to read so (other codecs, a transposed
    layout, bands split over chunks...): zarr reads those.
    """

    def __init__(self, array, path: str):
        meta = array.metadata
        (sharding,) = meta.codecs
        self.meta = meta
        self.path = path.rstrip("/")
        self.dtype = np.dtype(array.dtype)
        self.fill = array.fill_value
        self.bands = meta.shape[1]
        _, _, self.shard_rows, self.shard_cols = array.shards
        _, _, self.inner_rows, self.inner_cols = array.chunks
        self.grid = (self.shard_rows // self.inner_rows, self.shard_cols // self.inner_cols)
        self.height, self.width = meta.shape[2], meta.shape[3]
        self.index_bytes = 16 * self.grid[0] * self.grid[1] + (
            4 if len(sharding.index_codecs) == 2 else 0
        )
        self.index_at_end = str(getattr(sharding.index_location, "value", "end")) == "end"
        self.codec = _inner_decoder(sharding.codecs)
        self.local = "://" not in path or path.startswith("file://")
        if self.local:
            self.path = self.path.removeprefix("file://")
            self.fs = None
        else:
            import fsspec

            self.fs, self.path = fsspec.core.url_to_fs(path, **(storage_options(path) or {}))
            self.path = self.path.rstrip("/")

    @classmethod
    def of(cls, array, path: str) -> ShardWindows | None:
        """A reader for `array` (stored at `path`), or None if it is not one this class reads."""
        from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

        meta = array.metadata
        if getattr(meta, "zarr_format", None) != 3 or len(meta.codecs) != 1:
            return None
        sharding = meta.codecs[0]
        if not isinstance(sharding, ShardingCodec) or _dims(array) != CONVENTION:
            return None
        shards, inner = array.shards, array.chunks
        dtype = np.dtype(array.dtype)
        index = [type(c) for c in sharding.index_codecs]
        endian = getattr(sharding.codecs[0], "endian", None) if sharding.codecs else None
        endian = getattr(endian, "value", endian)
        if (
            shards is None
            or shards[0] != 1
            or inner[0] != 1
            or inner[1] != meta.shape[1]
            or shards[1] != meta.shape[1]
            or shards[2] % inner[2]
            or shards[3] % inner[3]
            or dtype.kind not in "fiu"
            or index not in ([BytesCodec, Crc32cCodec], [BytesCodec])
            or _inner_decoder(sharding.codecs) is None
            or (dtype.itemsize > 1 and endian != sys.byteorder)
        ):
            return None
        return cls(array, path)

    # ---- fetching

    def _key(self, time_index: int, i: int, j: int) -> str:
        return f"{self.path}/{self.meta.encode_chunk_key((time_index, 0, i, j))}"

    def _read_local(self, requests: list[tuple[str, int | None, int | None]]) -> list:
        out = []
        for name, start, stop in requests:
            try:
                with open(name, "rb") as f:
                    if start is None:
                        out.append(f.read())
                    elif start < 0:
                        f.seek(0, os.SEEK_END)
                        f.seek(max(0, f.tell() + start))
                        out.append(f.read())
                    else:
                        f.seek(start)
                        out.append(f.read(stop - start))
            except FileNotFoundError as exc:
                out.append(exc)
        return out

    def _fetch(self, requests: list[tuple[str, int | None, int | None]]) -> list:
        """bytes (or FileNotFoundError) per (object, start, stop); start None = the whole object,
        start < 0 = its last -start bytes. Remote requests go out together."""
        if not requests:
            return []
        if self.local:
            return self._read_local(requests)
        names = [r[0] for r in requests]
        starts = [r[1] for r in requests]
        stops = [r[2] for r in requests]
        got = self.fs.cat_ranges(names, starts, stops, on_error="return")
        for value in got:
            if isinstance(value, Exception) and not isinstance(value, FileNotFoundError):
                raise value
        return got

    def _parse_index(self, data: bytes) -> np.ndarray:
        index = data[-self.index_bytes :] if self.index_at_end else data[: self.index_bytes]
        entries = np.frombuffer(index, dtype="<u8", count=2 * self.grid[0] * self.grid[1])
        return entries.reshape(self.grid[0], self.grid[1], 2)

    # ---- reading

    def read(self, time_index: int, rows: slice, cols: slice) -> np.ndarray:
        """The window as stored, (rows, cols, bands)."""
        r0, r1 = max(rows.start or 0, 0), min(rows.stop, self.height)
        c0, c1 = max(cols.start or 0, 0), min(cols.stop, self.width)
        out = np.empty((r1 - r0, c1 - c0, self.bands), dtype=self.dtype)
        if out.size == 0:
            return out
        sy, sx, iy, ix = self.shard_rows, self.shard_cols, self.inner_rows, self.inner_cols
        shards = []  # (object, shard row, shard col, [(inner row, inner col)] wanted, whole)
        for i in range(r0 // sy, (r1 - 1) // sy + 1):
            for j in range(c0 // sx, (c1 - 1) // sx + 1):
                wanted = [
                    (a, b)
                    for a in range(
                        max(r0, i * sy) // iy - i * self.grid[0],
                        (min(r1, (i + 1) * sy) - 1) // iy + 1 - i * self.grid[0],
                    )
                    for b in range(
                        max(c0, j * sx) // ix - j * self.grid[1],
                        (min(c1, (j + 1) * sx) - 1) // ix + 1 - j * self.grid[1],
                    )
                ]
                present = (
                    (min(sy, self.height - i * sy) + iy - 1)
                    // iy
                    * ((min(sx, self.width - j * sx) + ix - 1) // ix)
                )
                shards.append((self._key(time_index, i, j), i, j, wanted, len(wanted) >= present))
        # whole objects, and the indexes of the others, in one round
        first = self._fetch(
            [
                (name, None, None) if whole else (name, -self.index_bytes, None)
                for name, *_, whole in shards
            ]
        )
        runs, parts = [], []  # ranged requests; (shard, inner chunk, run, offset in run, nbytes)
        for (name, i, j, wanted, whole), data in zip(shards, first):
            if isinstance(data, FileNotFoundError):
                for a, b in wanted:
                    self._place(out, None, i, j, a, b, r0, r1, c0, c1)
                continue
            index = self._parse_index(data)
            if whole:
                view = memoryview(data)  # inner chunks sliced without copies
                for a, b in wanted:
                    offset, nbytes = index[a, b]
                    chunk = None if offset == _EMPTY else view[int(offset) : int(offset + nbytes)]
                    self._place(out, chunk, i, j, a, b, r0, r1, c0, c1)
                continue
            spans = []
            for a, b in wanted:
                offset, nbytes = index[a, b]
                if offset == _EMPTY:
                    self._place(out, None, i, j, a, b, r0, r1, c0, c1)
                else:
                    spans.append((int(offset), int(nbytes), a, b))
            spans.sort()
            for offset, nbytes, a, b in spans:
                if runs and runs[-1][0] == name and runs[-1][2] == offset:
                    runs[-1][2] = offset + nbytes
                else:
                    runs.append([name, offset, offset + nbytes])
                parts.append((i, j, a, b, len(runs) - 1, offset - runs[-1][1], nbytes))
        fetched = self._fetch([tuple(r) for r in runs])
        for i, j, a, b, run, at, nbytes in parts:
            data = fetched[run]
            if isinstance(data, FileNotFoundError):  # gone since its index was read
                raise data
            self._place(out, memoryview(data)[at : at + nbytes], i, j, a, b, r0, r1, c0, c1)
        return out

    def _place(self, out, chunk, i, j, a, b, r0, r1, c0, c1) -> None:
        """Inner chunk (a, b) of shard (i, j), decoded, into its part of `out` (the window r0:r1, c0:c1)."""
        y0 = i * self.shard_rows + a * self.inner_rows
        x0 = j * self.shard_cols + b * self.inner_cols
        ys, ye = max(r0, y0), min(r1, y0 + self.inner_rows)
        xs, xe = max(c0, x0), min(c1, x0 + self.inner_cols)
        target = out[ys - r0 : ye - r0, xs - c0 : xe - c0]
        if chunk is None:
            target[...] = self.fill
            return
        buffer = self._buffer()
        self.codec(chunk, buffer)
        interleave(buffer[:, ys - y0 : ye - y0, xs - x0 : xe - x0], target)

    def _buffer(self) -> np.ndarray:
        local = _BUFFERS.__dict__
        key = (self.dtype.str, self.bands, self.inner_rows, self.inner_cols)
        if local.get("key") != key:
            local["key"] = key
            local["buffer"] = np.empty((self.bands, self.inner_rows, self.inner_cols), self.dtype)
        return local["buffer"]


_BUFFERS = threading.local()  # one decode buffer per thread


def _inner_decoder(codecs):
    """decode(encoded bytes, out array) for an inner chunk's codecs, or None if not known here."""
    from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

    if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
        return None
    if len(codecs) == 1:

        def raw(data, out):
            flat = out.reshape(-1).view(np.uint8)
            if len(data) != flat.size:
                raise ValueError(f"an inner chunk of {len(data)} bytes, not {flat.size}")
            flat[:] = np.frombuffer(data, dtype=np.uint8)

        return raw
    if isinstance(codecs[1], BloscCodec):
        import numcodecs

        blosc = numcodecs.Blosc()

        def blosc_decode(data, out):
            if len(data) < 16 or int.from_bytes(data[12:16], "little") > len(data):
                raise ValueError(f"{len(data)} bytes, fewer than the blosc header's")  # no crash
            blosc.decode(data, out=out)

        return blosc_decode
    if isinstance(codecs[1], ZstdCodec):
        import numcodecs

        zstd = numcodecs.Zstd()

        def zstd_decode(data, out):
            decoded = zstd.decode(data)
            flat = out.reshape(-1).view(np.uint8)
            if len(decoded) != flat.size:
                raise ValueError(f"an inner chunk decodes to {len(decoded)} bytes, not {flat.size}")
            flat[:] = np.frombuffer(decoded, dtype=np.uint8)

        return zstd_decode
    return None
