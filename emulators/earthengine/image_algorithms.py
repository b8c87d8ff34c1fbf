"""Image algorithms of the emulator: loading, band selection, casts, pixel maths, masks.

Pixel maths runs in float64 (EE promotes to double); casts happen only at the
explicit ``to*`` algorithms; a pixel is valid only where all its inputs are.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from emulators.earthengine import images as im
from emulators.earthengine.evaluator import (
    Date,
    EvaluationError,
    Evaluator,
    ImageCollection,
    Projection,
    algorithm,
    as_image,
    properties_of,
)
from emulators.earthengine.grids import RenderContext, crs_of
from emulators.earthengine.images import Band, Image, PixelType

DOUBLE = PixelType("double")


@algorithm("Image.load")
def _image_load(ev: Evaluator, id: str, version: Any = None) -> Image:
    try:
        return Image.from_source(ev.catalog.image(id))
    except KeyError:
        raise EvaluationError(
            f"Image.load: Image asset '{id}' not found (does not exist or caller does not have access)."
        ) from None


@algorithm("Projection")
def _projection(
    ev: Evaluator, crs: str, transform: list | None = None, transformWkt: Any = None
) -> Projection:
    if transformWkt is not None:
        raise EvaluationError("Projection: transformWkt is not implemented by the emulator.")
    return Projection(str(crs), tuple(float(v) for v in (transform or (1, 0, 0, 0, 1, 0))))


@algorithm("Projection.nominalScale")
def _nominal_scale(ev: Evaluator, proj: Projection) -> float:
    a, b, _, d, e, _ = proj.transform
    scale = float(np.sqrt(abs(a * e - b * d)))
    if crs_of(proj.crs).is_geographic:
        return scale * 111319.49079327357  # metres per degree on the WGS84 equator
    return scale


@algorithm("Projection.crs")
def _projection_crs(ev: Evaluator, projection: Projection) -> str:
    return projection.crs


@algorithm("Image.constant")
def _constant(ev: Evaluator, value: Any) -> Image:
    if isinstance(value, list):
        return Image([im.constant_band(v, f"constant_{i}") for i, v in enumerate(value)])
    return as_image(value)


@algorithm("Image.bandNames")
def _band_names(ev: Evaluator, image: Image) -> list:
    return as_image(image).band_names


@algorithm("Image.bandTypes")
def _band_types(ev: Evaluator, image: Image) -> dict:
    return {b.name: b.ptype.info() for b in as_image(image).bands}


@algorithm("Image.projection")
def _image_projection(ev: Evaluator, image: Image) -> Projection:
    projections = {b.projection for b in as_image(image).bands}
    if len(projections) > 1:
        raise EvaluationError(
            "Image.projection: The bands of the specified image contains different "
            "projections. Use Image.select to pick a single band."
        )
    crs, transform = projections.pop() if projections else im.WGS84_DEGREES
    return Projection(crs, transform)


@algorithm("Image.date")
def _image_date(ev: Evaluator, image: Image) -> Date:
    t = as_image(image).properties.get("system:time_start")
    if t is None:
        raise EvaluationError("Image.date: Image has no 'system:time_start' property.")
    return Date(int(t))


@algorithm("Image.id")
def _image_id(ev: Evaluator, element: Any) -> Any:
    return properties_of(element).get("system:id")


@algorithm("ImageCollection.mosaic")
def _mosaic(ev: Evaluator, collection: ImageCollection) -> Image:
    by_name: dict[str, list[Band]] = {}
    for image in collection.images:  # collection order: later images end up on top
        for band in image.bands:
            by_name.setdefault(band.name, []).append(band)
    return Image([im.mosaic_band(bands) for bands in by_name.values()])


def select_bands(image: Image, selectors: list) -> list[Band]:
    chosen: list[Band] = []
    by_name = {b.name: b for b in image.bands}
    for selector in selectors:
        if isinstance(selector, (int, float)) and not isinstance(selector, bool):
            if not 0 <= int(selector) < len(image.bands):
                raise EvaluationError(f"Image.select: Band index {int(selector)} out of range.")
            chosen.append(image.bands[int(selector)])
            continue
        if (
            selector in by_name and re.escape(selector) == selector
        ):  # a plain name: skip 64 regex matches
            chosen.append(by_name[selector])
            continue
        try:
            matches = [b for b in image.bands if re.fullmatch(selector, b.name)]
        except re.error:
            matches = [b for b in image.bands if b.name == selector]
        if not matches:
            raise EvaluationError(f"Image.select: Pattern '{selector}' did not match any bands.")
        chosen.extend(matches)
    return chosen


@algorithm("Image.select")
def _select(
    ev: Evaluator, input: Image, bandSelectors: list, newNames: list | None = None
) -> Image:
    image = as_image(input)
    bands = select_bands(image, bandSelectors)
    if newNames is not None:
        if len(newNames) != len(bands):
            raise EvaluationError(
                f"Image.select: {len(bands)} bands selected but {len(newNames)} new names."
            )
        bands = [b.renamed(n) for b, n in zip(bands, newNames)]
    return Image(bands, image.properties)


@algorithm("Image.rename")
def _rename(ev: Evaluator, input: Image, names: list) -> Image:
    image = as_image(input)
    if len(names) != len(image.bands):
        raise EvaluationError(
            f"Image.rename: image has {len(image.bands)} bands but {len(names)} names given."
        )
    return Image([b.renamed(n) for b, n in zip(image.bands, names)], image.properties)


@algorithm("Image.addBands")
def _add_bands(
    ev: Evaluator, dstImg: Image, srcImg: Image, names: list | None = None, overwrite: bool = False
) -> Image:
    dst, src = as_image(dstImg), as_image(srcImg)
    out = list(dst.bands)
    for band in select_bands(src, names) if names is not None else src.bands:
        taken = [b.name for b in out]
        if band.name in taken and overwrite:
            out[taken.index(band.name)] = band
            continue
        if band.name in taken:  # EE renames clashes: foo -> foo_1, foo_2, ...
            k = 1
            while f"{band.name}_{k}" in taken:
                k += 1
            band = band.renamed(f"{band.name}_{k}")
        out.append(band)
    return Image(out, dst.properties)


# ---- casts ---------------------------------------------------------------------------

_CASTS = {
    ("toFloat", "float"): PixelType("float"),
    ("toDouble", "double"): DOUBLE,
    ("toInt8", "int8"): PixelType.of_int(np.int8),
    ("toUint8", "uint8", "toByte", "byte"): PixelType.of_int(np.uint8),
    ("toInt16", "int16", "toShort", "short"): PixelType.of_int(np.int16),
    ("toUint16", "uint16"): PixelType.of_int(np.uint16),
    ("toInt32", "int32", "toInt", "int"): PixelType.of_int(np.int32),
    ("toUint32", "uint32"): PixelType.of_int(np.uint32),
    ("toInt64", "int64", "toLong", "long"): PixelType.of_int(np.int64),
}


def _cast_band(band: Band, ptype: PixelType) -> Band:
    def render(ctx: RenderContext):
        values, mask = band.render(ctx)
        return im.cast_values(np.asarray(values), ptype), mask

    return band.derive(render, ptype)


def _make_cast(ptype: PixelType) -> Callable:
    def cast(ev: Evaluator, value: Any) -> Image:
        image = as_image(value)
        return Image([_cast_band(b, ptype) for b in image.bands], image.properties)

    return cast


for _names, _ptype in _CASTS.items():
    algorithm(*(f"Image.{n}" for n in _names))(_make_cast(_ptype))


# ---- pixel maths ------------------------------------------------------------------------


def _round_half_away(x: np.ndarray) -> np.ndarray:
    out = np.abs(x)  # in-place steps: this runs on every pixel of every band of the int8 path
    out += 0.5
    np.floor(out, out=out)
    return np.copysign(out, x, out=out)


_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "round": _round_half_away,
    "floor": np.floor,
    "ceil": np.ceil,
    "signum": np.sign,
    "exp": np.exp,
    "log": np.log,
    "log10": np.log10,
}


def _unary_band(band: Band, fn: Callable[[np.ndarray], np.ndarray]) -> Band:
    def render(ctx: RenderContext):
        values, mask = band.render(ctx)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = fn(np.asarray(values, np.float64))
        return out, mask

    return band.derive(render, DOUBLE)


def _make_unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable:
    def unary(ev: Evaluator, value: Any) -> Image:
        image = as_image(value)
        return Image([_unary_band(b, fn) for b in image.bands], image.properties)

    return unary


for _name, _fn in _UNARY.items():
    algorithm(f"Image.{_name}")(_make_unary(_fn))


def _pair_bands(first: Image, second: Image) -> list[tuple[Band, Band, str]]:
    """EE band matching: equal counts pair up; a 1-band image applies to every band of the other."""
    n1, n2 = len(first.bands), len(second.bands)
    if n1 == n2:
        return [(a, b, a.name) for a, b in zip(first.bands, second.bands)]
    if n1 == 1:
        return [(first.bands[0], b, b.name) for b in second.bands]
    if n2 == 1:
        return [(a, second.bands[0], a.name) for a in first.bands]
    raise EvaluationError(
        f"Images must contain the same number of bands or only 1 band. Got {n1} and {n2}."
    )


_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": np.divide,
    "pow": np.power,
    "max": np.maximum,
    "min": np.minimum,
}


def _binary_band(a: Band, b: Band, name: str, op: str) -> Band:
    fn = _BINARY[op]

    def render(ctx: RenderContext):
        va, ma = a.render(ctx)
        vb, mb = b.render(ctx)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = fn(np.asarray(va, np.float64), np.asarray(vb, np.float64))
        mask = ma & mb
        if op == "divide":  # EE masks division by zero
            mask = mask & (np.asarray(vb) != 0)
        return out, mask

    return a.derive(render, DOUBLE, name)


def _make_binary(op: str) -> Callable:
    def binary(ev: Evaluator, image1: Any, image2: Any) -> Image:
        first, second = as_image(image1), as_image(image2)
        return Image(
            [_binary_band(a, b, n, op) for a, b, n in _pair_bands(first, second)], first.properties
        )

    return binary


for _name in _BINARY:
    algorithm(f"Image.{_name}")(_make_binary(_name))


# ---- masks -------------------------------------------------------------------------------


def _masked_band(band: Band, by: Band) -> Band:
    def render(ctx: RenderContext):
        values, mask = band.render(ctx)
        mvalues, mmask = by.render(ctx)
        return values, mask & mmask & (np.asarray(mvalues) != 0)

    return band.derive(render)


@algorithm("Image.updateMask")
def _update_mask(ev: Evaluator, image: Any, mask: Any) -> Image:
    img, by = as_image(image), as_image(mask)
    if len(by.bands) not in (1, len(img.bands)):
        raise EvaluationError(
            f"Image.updateMask: mask has {len(by.bands)} bands, image has {len(img.bands)}."
        )
    return Image([_masked_band(a, b) for a, b, _ in _pair_bands(img, by)], img.properties)


@algorithm("Image.mask")
def _mask(ev: Evaluator, image: Any, mask: Any = None) -> Image:
    img = as_image(image)
    if mask is not None:
        return _update_mask(ev, img, mask)

    def mask_of(band: Band) -> Band:
        def render(ctx: RenderContext):
            _, m = band.render(ctx)
            return np.asarray(m, np.float32), ctx.everywhere()

        return band.derive(render, PixelType("float"))

    return Image([mask_of(b) for b in img.bands], img.properties)


@algorithm("Image.selfMask")
def _self_mask(ev: Evaluator, image: Any) -> Image:
    img = as_image(image)
    return Image([_masked_band(b, b) for b in img.bands], img.properties)


def _unmasked_band(band: Band, fill: Band) -> Band:
    if fill.ptype.min is not None and fill.ptype.min == fill.ptype.max:
        ptype = band.ptype.with_value(fill.ptype.min)  # a constant fill
    else:
        ptype = band.ptype.union(fill.ptype)
    dtype = ptype.numpy_dtype

    def render(ctx: RenderContext):
        values, mask = band.render(ctx)
        fvalues, fmask = fill.render(ctx)
        mask = np.asarray(mask)
        if mask.all():
            return np.asarray(values, dtype), np.asarray(fmask) | mask
        out = np.array(values, dtype)  # a copy, then the fill where masked: cheaper than np.where
        np.copyto(out, np.asarray(fvalues, dtype), where=~mask)
        return out, mask | fmask

    return band.derive(render, ptype)


@algorithm("Image.unmask")
def _unmask(ev: Evaluator, input: Any, value: Any = None, sameFootprint: bool = True) -> Image:
    if sameFootprint:
        raise EvaluationError(
            "Image.unmask: the emulator only implements sameFootprint=false "
            "(call unmask(value, False))."
        )
    img = as_image(input)
    fill = as_image(0 if value is None else value)
    if len(fill.bands) not in (1, len(img.bands)):
        raise EvaluationError(
            f"Image.unmask: value has {len(fill.bands)} bands, input has {len(img.bands)}."
        )
    return Image([_unmasked_band(a, b) for a, b, _ in _pair_bands(img, fill)], img.properties)
