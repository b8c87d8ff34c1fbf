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
import re

import numpy as np

from transforms.core import quantize
from transforms.core.errors import InputError, first_line
from transforms.sources.remote_fs import storage_options
from transforms.storage import layout_grid

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


def open_root(path: str, flag: str):
    """`open_group` of a store to read, once its root is known reachable (`reach.check_root`: a
    remote root's failure said in bounded time)."""
    from transforms.storage import reach

    reach.check_root(path, flag)
    return open_group(path, flag)


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


def array_dims(array) -> tuple[str, ...]:
    names = getattr(array.metadata, "dimension_names", None)
    if names:
        return tuple(str(n) for n in names)
    return tuple(array.attrs.get("_ARRAY_DIMENSIONS", ()))  # Zarr 2 (xarray's convention)


COORDINATES = ("time", "band", "x", "y")


def _look_up(group) -> dict:
    """{name: (member or None, {(start, stop): its values})} of the embedding array's names and
    the coordinates, looked up together, each coordinate's values read with it (x and y: the
    parts `layout_grid.coordinate_parts` names). On a remote store each lookup and each read is
    a round trip: one after another, they made an open ~10 round trips long; together, 2."""
    import concurrent.futures

    def look(name):
        member = group.get(name)
        if name not in COORDINATES or len(getattr(member, "shape", ())) != 1:
            return member, {}
        n = member.shape[0]
        parts = layout_grid.coordinate_parts(member, n) if name in ("x", "y") else [slice(0, n)]
        return member, {(p.start, p.stop): np.asarray(member[p]) for p in parts}

    names = (*ARRAY_NAMES, *COORDINATES)
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        return dict(zip(names, pool.map(look, names)))


def _find_array(group, members: dict, path: str, flag: str):
    found = [(name, members[name][0]) for name in ARRAY_NAMES if members[name][0] is not None]
    if not found:
        names = sorted(group.array_keys()) if hasattr(group, "array_keys") else []
        raise InputError(
            flag,
            f"{path} is a Zarr store but not an embedding store: it has no 'embedding' or "
            f"'embeddings' array (it holds {', '.join(names[:6]) or 'no arrays'})",
        )
    name, array = found[0]
    dims = array_dims(array)
    if sorted(dims) != sorted(CANONICAL):
        raise InputError(
            flag,
            f"{path}: array {name!r} has dimensions {list(dims) or 'without names'}; an embedding "
            f"store's are (time, band, y, x) or efm's (time, y, x, band)",
        )
    return name, array, dims


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


def _years(looked_up: tuple, n: int, path: str, flag: str) -> tuple[int, ...]:
    time, read = looked_up
    if not read:
        raise InputError(flag, f"{path} has no time coordinate")
    (raw,) = read.values()
    attrs = dict(time.attrs)
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


def _bands(looked_up: tuple, n: int) -> tuple[str, ...]:
    _, read = looked_up
    if read:
        (stored,) = read.values()
        values = [v.decode() if isinstance(v, bytes) else v for v in stored.tolist()]
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


def describe(path: str, *, flag: str = "--embeddings", group=None) -> Layout:
    """Read a store's metadata (nothing else) and say how to read its embeddings; `group`: the
    store's root as `open_root` gave it (on a remote store each open costs metadata requests)."""
    group = open_root(path, flag) if group is None else group
    attrs = dict(group.attrs)
    members = _look_up(group)
    name, array, dims = _find_array(group, members, path, flag)
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
        crs = layout_grid.crs_of(attrs, path, flag)
        transform = layout_grid.transform_of(attrs, members, sizes["y"], sizes["x"], path, flag)
        layout_grid.check_extent(crs, transform, sizes["y"], sizes["x"], path, flag)
    elif (grid_mapping := group.get("spatial_ref")) is not None:  # efm v2 before proj:/spatial:
        ref = dict(grid_mapping.attrs)  # were written: CF's grid mapping
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
        years=_years(members["time"], sizes["time"], path, flag),
        bands=_bands(members["band"], sizes["band"]),
        chunk_rows=rows,
        chunk_cols=cols,
        shard_rows=shard_rows,
        shard_cols=shard_cols,
        dtype=str(array.dtype),
    )
