"""Source images, pixel types and lazy bands for the Earth Engine emulator.

An image is a list of lazy bands; a band renders itself onto a request grid as a
pair ``(values, mask)`` of (H, W) arrays. Nothing is computed before
``computePixels`` names a grid, like the real service.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from emulators.earthengine.grids import RenderContext, transformer

WGS84_DEGREES = ("EPSG:4326", (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64]


def to_millis(value: Any) -> int:
    """Milliseconds since the epoch (UTC) of an ISO string, a date/datetime or a number."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return int(value)
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    elif isinstance(value, datetime.date):
        moment = datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.UTC)
    elif isinstance(value, str):
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
    else:
        raise ValueError(f"cannot interpret {value!r} as a date")
    return int(round((moment - _EPOCH).total_seconds() * 1000))


def millis_to_iso(ms: int) -> str:
    moment = _EPOCH + datetime.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + "Z"


@dataclasses.dataclass(frozen=True)
class PixelType:
    """An EE PixelType: precision 'int' (with a value range), 'float' or 'double'."""

    precision: str
    min: float | None = None
    max: float | None = None

    @classmethod
    def for_dtype(cls, dtype: Any) -> PixelType:
        dtype = np.dtype(dtype)
        if dtype.kind in "iub":
            info = np.iinfo(np.uint8 if dtype.kind == "b" else dtype)
            return cls("int", int(info.min), int(info.max))
        if dtype.kind == "f":
            return cls("float") if dtype.itemsize <= 4 else cls("double")
        raise ValueError(f"unsupported pixel dtype {dtype}")

    @classmethod
    def of_int(cls, dtype: Any) -> PixelType:
        info = np.iinfo(dtype)
        return cls("int", int(info.min), int(info.max))

    @property
    def numpy_dtype(self) -> np.dtype:
        if self.precision == "float":
            return np.dtype(np.float32)
        if self.precision == "double":
            return np.dtype(np.float64)
        for candidate in _INT_DTYPES:
            info = np.iinfo(candidate)
            if info.min <= self.min and self.max <= info.max:
                return np.dtype(candidate)
        return np.dtype(np.float64)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "PixelType", "precision": self.precision}
        if self.precision == "int":
            out.update(min=int(self.min), max=int(self.max))
        return out

    def union(self, other: PixelType) -> PixelType:
        if self.precision == other.precision == "int":
            return PixelType("int", min(self.min, other.min), max(self.max, other.max))
        if "double" in (self.precision, other.precision):
            return PixelType("double")
        if "int" in (self.precision, other.precision):
            ints = self if self.precision == "int" else other
            fits = ints.numpy_dtype.itemsize <= 2  # float32 holds int16 exactly
            return PixelType("float") if fits else PixelType("double")
        return PixelType("float")

    def with_value(self, value: float) -> PixelType:
        """The type that holds this type's values and ``value`` (used by unmask)."""
        if self.precision == "int" and float(value).is_integer():
            return PixelType("int", min(self.min, value), max(self.max, value))
        if self.precision == "float" and float(np.float32(value)) == float(value):
            return self
        if self.precision == "int":
            return PixelType("double")
        return PixelType("double") if self.precision == "float" else self


def cast_values(values: np.ndarray, ptype: PixelType) -> np.ndarray:
    """EE casts: float to int truncates toward zero and saturates at the type's range."""
    dtype = ptype.numpy_dtype
    if dtype.kind == "f" or values.dtype == dtype:
        return values.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    lo, hi = max(ptype.min, info.min), min(ptype.max, info.max)
    if values.dtype.kind == "f":
        values = np.nan_to_num(values, nan=0.0)  # a fresh copy, so the next steps work in place
        np.trunc(values, out=values)
        np.clip(values, lo, hi, out=values)
        return values.astype(dtype)
    return np.clip(values, lo, hi).astype(dtype)


@dataclasses.dataclass(eq=False)
class SourceImage:
    """One stored image: data is (bands, H, W); float NaN (or ``nodata``) is masked."""

    image_id: str
    collection: str | None
    data: np.ndarray
    band_names: list[str]
    crs: str
    transform: tuple[float, float, float, float, float, float]
    start_ms: int | None
    end_ms: int | None
    properties: dict[str, Any]
    pixel_type: PixelType
    nodata: float | None = None

    @property
    def height(self) -> int:
        return self.data.shape[1]

    @property
    def width(self) -> int:
        return self.data.shape[2]

    def all_properties(self) -> dict[str, Any]:
        props = dict(self.properties)
        props["system:id"] = self.image_id
        props["system:index"] = self.image_id.rsplit("/", 1)[-1]
        if self.start_ms is not None:
            props["system:time_start"] = self.start_ms
        if self.end_ms is not None:
            props["system:time_end"] = self.end_ms
        return props

    @functools.cached_property
    def footprint_lonlat(self) -> list[list[float]]:
        """Closed ring of the image's corners (and edge midpoints) in lon/lat."""
        a, b, c, d, e, f = self.transform
        w, h = self.width, self.height
        pixels = [(0, 0), (w / 2, 0), (w, 0), (w, h / 2), (w, h), (w / 2, h), (0, h), (0, h / 2)]
        xs = [a * px + b * py + c for px, py in pixels]
        ys = [d * px + e * py + f for px, py in pixels]
        lon, lat = transformer(self.crs, "EPSG:4326").transform(xs, ys)
        ring = [[float(x), float(y)] for x, y in zip(lon, lat)]
        return ring + [ring[0]]


Renderer = Callable[[RenderContext], tuple[np.ndarray, np.ndarray]]


class Band:
    """A lazy band: name, pixel type, default projection and a renderer."""

    __slots__ = ("name", "ptype", "projection", "dimensions", "renderer", "source")

    def __init__(
        self,
        name: str,
        ptype: PixelType,
        renderer: Renderer,
        projection: tuple[str, tuple] = WGS84_DEGREES,
        dimensions: tuple[int, int] | None = None,
        source: SourceImage | None = None,
    ):
        self.name, self.ptype, self.renderer = name, ptype, renderer
        self.projection, self.dimensions, self.source = projection, dimensions, source

    def render(self, ctx: RenderContext) -> tuple[np.ndarray, np.ndarray]:
        key = id(self)
        if key not in ctx.cache:
            ctx.cache[key] = self.renderer(ctx)
        return ctx.cache[key]

    def derive(
        self, renderer: Renderer, ptype: PixelType | None = None, name: str | None = None
    ) -> Band:
        """A band computed from this one: keeps the projection, drops the native dimensions."""
        return Band(name or self.name, ptype or self.ptype, renderer, self.projection)

    def renamed(self, name: str) -> Band:
        return Band(name, self.ptype, self.render, self.projection, self.dimensions, self.source)

    def info(self) -> dict[str, Any]:
        out = {
            "id": self.name,
            "data_type": self.ptype.info(),
            "crs": self.projection[0],
            "crs_transform": list(self.projection[1]),
        }
        if self.dimensions is not None:
            out["dimensions"] = list(self.dimensions)
        return out


def source_band(src: SourceImage, index: int) -> Band:
    def render(ctx: RenderContext) -> tuple[np.ndarray, np.ndarray]:
        plan = ctx.plan(src)
        if plan.empty:
            return ctx.nothing(src.data.dtype)
        values, valid = plan.take(src.data[index])
        if values.dtype.kind == "f":
            ok = ~np.isnan(values)
        elif src.nodata is not None:
            ok = values != src.nodata
        else:
            ok = None
        if ok is None:
            mask = valid if valid is not None else ctx.everywhere()
        else:
            mask = ok if valid is None else (ok & valid)
        return values, mask

    return Band(
        src.band_names[index],
        src.pixel_type,
        render,
        (src.crs, tuple(src.transform)),
        (src.width, src.height),
        src,
    )


def constant_band(value: float, name: str = "constant") -> Band:
    is_int = (
        isinstance(value, (bool, int, np.integer))
        or float(value).is_integer()
        and abs(value) < 2**53
    )
    ptype = PixelType("int", value, value) if is_int else PixelType("double", value, value)
    dtype = ptype.numpy_dtype

    def render(ctx: RenderContext) -> tuple[np.ndarray, np.ndarray]:
        return np.broadcast_to(np.asarray(value, dtype), ctx.shape), ctx.everywhere()

    return Band(name, ptype, render)


def mosaic_band(bands: list[Band]) -> Band:
    """Later bands are drawn on top of earlier ones where they are valid (EE mosaic)."""
    ptype = bands[0].ptype
    for band in bands[1:]:
        ptype = ptype.union(band.ptype)

    def render(ctx: RenderContext) -> tuple[np.ndarray, np.ndarray]:
        layers = []
        for band in bands:
            if band.source is not None and ctx.plan(band.source).empty:
                continue
            layers.append(band.render(ctx))
        if not layers:
            return ctx.nothing(ptype.numpy_dtype)
        if len(layers) == 1:
            return layers[0]
        values = np.array(layers[0][0], dtype=np.result_type(*[v.dtype for v, _ in layers]))
        mask = np.array(layers[0][1], dtype=bool)
        for layer_values, layer_mask in layers[1:]:
            np.copyto(values, layer_values, where=layer_mask)
            mask |= layer_mask
        return values, mask

    return Band(bands[0].name, ptype, render)


@dataclasses.dataclass(eq=False)
class Image:
    bands: list[Band]
    properties: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_source(cls, src: SourceImage) -> Image:
        return cls([source_band(src, i) for i in range(len(src.band_names))], src.all_properties())

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "Image", "bands": [b.info() for b in self.bands]}
        props = {k: v for k, v in self.properties.items() if k != "system:id"}
        if "system:id" in self.properties:
            out["id"] = self.properties["system:id"]
            out["version"] = 1700000000000000
        if props:
            out["properties"] = props
        return out
