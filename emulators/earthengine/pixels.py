"""``image:computePixels``: evaluate the expression, check the service limits, render, encode."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from emulators.earthengine import images as im
from emulators.earthengine.evaluator import EvaluationError, Evaluator
from emulators.earthengine.grids import Grid, RenderContext
from emulators.earthengine.images import Image

MAX_GRID_SIDE = 32768
MAX_BANDS = 1024
DEFAULT_MAX_REQUEST_BYTES = 48 * 2**20
CONTENT_TYPES = {"NPY": "application/octet-stream", "GEO_TIFF": "image/tiff"}


def request_bytes(width: int, height: int, itemsizes: list[int]) -> int:
    """The service's size accounting: every band's bytes plus one mask byte per pixel."""
    return width * height * sum(itemsizes) + width * height


def compute_pixels(
    catalog: Any, body: dict[str, Any], max_request_bytes: int
) -> tuple[bytes | bytearray, str]:
    """Returns (payload, content type); raises EvaluationError for anything the service answers 400."""
    if not isinstance(body, dict) or "expression" not in body:
        raise EvaluationError("computePixels: the request has no 'expression'.")
    file_format = body.get("fileFormat", "AUTO_JPEG_PNG")
    if file_format not in CONTENT_TYPES:
        raise EvaluationError(
            f"computePixels: the emulator does not implement fileFormat {file_format!r} "
            f"(supported: {', '.join(CONTENT_TYPES)})."
        )
    if body.get("visualizationOptions"):
        raise EvaluationError(
            "computePixels: visualizationOptions are not implemented by the emulator."
        )
    image = Evaluator(catalog).evaluate(body["expression"])
    if not isinstance(image, Image):
        raise EvaluationError(
            f"computePixels: the expression must be an Image, not {type(image).__name__}."
        )
    bands = image.bands
    if body.get("bandIds"):
        by_name = {b.name: b for b in bands}
        missing = [b for b in body["bandIds"] if b not in by_name]
        if missing:
            raise EvaluationError(
                f"computePixels: bandIds {missing} not in the image (bands: {list(by_name)})."
            )
        bands = [by_name[b] for b in body["bandIds"]]
    if not bands:
        raise EvaluationError("computePixels: the image has no bands.")
    grid = _grid(body.get("grid"), bands)
    if grid.width > MAX_GRID_SIDE or grid.height > MAX_GRID_SIDE:
        raise EvaluationError(
            f"Grid dimensions ({grid.width} x {grid.height}) must be less than or equal to "
            f"{MAX_GRID_SIDE} pixels on each side."
        )
    if len(bands) > MAX_BANDS:
        raise EvaluationError(
            f"Number of bands ({len(bands)}) must be less than or equal to {MAX_BANDS}."
        )
    dtypes = [b.ptype.numpy_dtype for b in bands]
    total = request_bytes(grid.width, grid.height, [d.itemsize for d in dtypes])
    if total > max_request_bytes:
        raise EvaluationError(
            f"Total request size ({total} bytes) must be less than or equal to "
            f"{max_request_bytes} bytes."
        )
    if file_format == "NPY":
        return _encode_npy(bands, dtypes, grid), CONTENT_TYPES["NPY"]
    return _encode_geotiff(bands, dtypes, grid), CONTENT_TYPES["GEO_TIFF"]


def _grid(request_grid: dict[str, Any] | None, bands: list) -> Grid:
    if request_grid:
        try:
            return Grid.from_request(request_grid)
        except ValueError as exc:
            raise EvaluationError(f"computePixels: {exc}") from None
    first = bands[0]
    if first.dimensions is None:  # composites have no native grid, like the real service
        raise EvaluationError(
            "computePixels: a grid is required for an image without a fixed projection."
        )
    width, height = first.dimensions
    return Grid(first.projection[0], tuple(first.projection[1]), width, height)


def _rendered(bands: list, dtypes: list[np.dtype], grid: Grid) -> list[np.ndarray]:
    """Each band as an (H, W) array of its output dtype, masked pixels set to 0."""
    ctx = RenderContext(grid)
    out = []
    for band, dtype in zip(bands, dtypes):
        ctx.cache.clear()  # keep only one output band's intermediates alive
        values, mask = band.render(ctx)
        values = np.asarray(values)
        if values.dtype != dtype:
            values = im.cast_values(values, band.ptype)
        mask = np.asarray(mask)
        if not mask.all():
            values = np.where(mask, values, np.zeros((), dtype))
        out.append(values)
    return out


def _npy_header(dtype: np.dtype, shape: tuple[int, int]) -> bytes:
    header = io.BytesIO()
    fields = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    try:
        np.lib.format.write_array_header_1_0(header, fields)
    except ValueError:  # header over 64 KiB (hundreds of bands)
        header = io.BytesIO()
        np.lib.format.write_array_header_2_0(header, fields)
    return header.getvalue()


def _encode_npy(bands: list, dtypes: list[np.dtype], grid: Grid) -> bytearray:
    """A .npy file of a structured (H, W) array, one field per band, built in its final buffer."""
    dtype = np.dtype([(b.name, d) for b, d in zip(bands, dtypes)])
    header = _npy_header(dtype, (grid.height, grid.width))
    payload = bytearray(len(header) + grid.height * grid.width * dtype.itemsize)
    payload[: len(header)] = header
    out = np.frombuffer(payload, dtype, count=grid.height * grid.width, offset=len(header))
    out = out.reshape(grid.height, grid.width)
    rendered = _rendered(bands, dtypes, grid)
    fields = [out[b.name] for b in bands]
    # Interleaving bands is a transpose; copying ~1 MiB row blocks keeps it in cache (4x faster).
    step = max(1, 2**20 // max(1, grid.width * dtype.itemsize))
    for row in range(0, grid.height, step):
        for field, values in zip(fields, rendered):
            field[row : row + step] = values[row : row + step]
    return payload


def _encode_geotiff(bands: list, dtypes: list[np.dtype], grid: Grid) -> bytes:
    import rasterio  # pylint: disable=import-outside-toplevel  (only GeoTIFF requests need GDAL)
    from rasterio.io import MemoryFile  # pylint: disable=import-outside-toplevel

    dtype = np.result_type(*dtypes)
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": len(bands),
        "dtype": dtype.name,
        "crs": grid.crs,
        "transform": rasterio.Affine(*grid.transform),
    }
    with MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            for index, (band, values) in enumerate(
                zip(bands, _rendered(bands, dtypes, grid)), start=1
            ):
                dst.write(values.astype(dtype, copy=False), index)
                dst.set_band_description(index, band.name)
        return memfile.read()
