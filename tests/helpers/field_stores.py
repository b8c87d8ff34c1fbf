"""Stores in the field's layouts, written here as their own tools write them (docs/field-stores.md).

`aef_mosaic` follows geospatial-jeff/aef-mosaic's `src/io/zarr_writer.rs` (the public AEF
mosaic on Source Cooperative): Zarr 3, root attrs proj:/spatial:/geoemb:, array `embeddings`
int8 (time, band, y, x), fill -128, 4096^2 shards of 256^2 inner chunks, zstd level 3, coords
x/y float64 centres, time int32 years, band strings. `tessera` follows geotessera's
`zarr.py`: geoemb: on the root, one group per UTM zone with `embeddings` int8 (time, band, y, x)
and `scales` float32 (time, y, x), de-quantised as codes * scale (+inf / NaN scale = no data).
Both are written with zarr-python directly: nothing of efm's writer is used.
"""

from __future__ import annotations

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

AEF_MODEL = "https://developers.google.com/earth-engine/datasets/catalog/GOOGLE_SATELLITE_EMBEDDING_V1_ANNUAL"
PROJ = {
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "name": "proj:",
    "description": "Coordinate reference system information for geospatial data",
    "spec_url": "https://github.com/zarr-experimental/geo-proj/blob/v1/README.md",
    "schema_url": "https://raw.githubusercontent.com/zarr-experimental/geo-proj/refs/tags/v1/schema.json",
}
SPATIAL = {
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "name": "spatial:",
    "description": "Spatial coordinate information",
    "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
}
GEOEMB = {
    "uuid": "61c12cc5-0e28-4056-999a-480cf3fb7e4c",
    "name": "geoemb:",
    "description": "Geo-embeddings metadata for machine learning embeddings stored in Zarr",
    "spec_url": "https://github.com/geo-embeddings/embeddings-zarr-convention/tree/add-convention",
}
AEF_QUANTIZATION = {
    "method": "signed_square",
    "original_dtype": "float32",
    "quantized_dtype": "int8",
    "formula": "(x / 127.5) ** 2 * sign(x)",
    "valid_range": [-127, 127],
    "nodata": -128,
}


def _spatial(crs: str, west: float, north: float, res: float, height: int, width: int) -> dict:
    return {
        "proj:code": crs,
        "spatial:dimensions": ["y", "x"],
        "spatial:transform": [res, 0.0, west, 0.0, -res, north],
        "spatial:transform_type": "affine",
        "spatial:bbox": [west, north - height * res, west + width * res, north],
        "spatial:shape": [height, width],
        "spatial:registration": "pixel",
    }


def _coords(group, west, north, res, height, width, years, bands):
    x = group.create_array(
        "x", shape=(width,), chunks=(width,), dtype="float64", fill_value=0.0, dimension_names=["x"]
    )
    x[:] = west + (np.arange(width) + 0.5) * res
    y = group.create_array(
        "y",
        shape=(height,),
        chunks=(height,),
        dtype="float64",
        fill_value=0.0,
        dimension_names=["y"],
    )
    y[:] = north - (np.arange(height) + 0.5) * res
    t = group.create_array(
        "time",
        shape=(len(years),),
        chunks=(len(years),),
        dtype="int32",
        fill_value=0,
        dimension_names=["time"],
    )
    t[:] = np.asarray(years, dtype=np.int32)
    if bands is not None:
        b = group.create_array(
            "band",
            shape=(len(bands),),
            chunks=(len(bands),),
            dtype=bands.dtype,
            fill_value=bands.dtype.type(0) if bands.dtype.kind in "iu" else "",
            dimension_names=["band"],
        )
        b[:] = bands


def aef_mosaic(
    path: str,
    *,
    width: int,
    height: int,
    years=(2024,),
    west: float = -122.5,
    north: float = 38.0,
    res: float = 0.00009,
    crs: str = "EPSG:4326",
    bands: int = 64,
    shard: int = 4096,
    inner: int = 256,
    attrs: dict | None = None,
    dtype: str = "int8",
):
    """An empty store in the public mosaic's layout; returns the `embeddings` array to fill.

    `dtype="float32"`: the same layout holding float embeddings (NaN = no data, no quantisation)."""
    floats = np.dtype(dtype).kind == "f"
    root = zarr.open_group(path, mode="w-", zarr_format=3)
    root.attrs.update(
        {
            **_spatial(crs, west, north, res, height, width),
            "geoemb:type": "pixel",
            "geoemb:dimensions": bands,
            "geoemb:model": AEF_MODEL,
            "geoemb:source_data": "https://source.coop/tge-labs/aef/v1/annual/",
            "geoemb:data_type": str(np.dtype(dtype)),
            "geoemb:gsd": res,
            **({} if floats else {"geoemb:quantization": dict(AEF_QUANTIZATION)}),
            "zarr_conventions": [PROJ, SPATIAL, GEOEMB],
            **(attrs or {}),
        }
    )
    array = root.create_array(
        "embeddings",
        shape=(len(years), bands, height, width),
        shards=(1, bands, shard, shard),
        chunks=(1, bands, inner, inner),
        dtype=dtype,
        fill_value=np.nan if floats else -128,
        compressors=ZstdCodec(level=3),
        dimension_names=["time", "band", "y", "x"],
    )
    _coords(
        root,
        west,
        north,
        res,
        height,
        width,
        years,
        np.array([f"A{i:02d}" for i in range(bands)], dtype=np.dtypes.StringDType()),
    )
    return array


def tessera(
    path: str,
    zone: int,
    *,
    width: int,
    height: int,
    years=(2024,),
    west: float = 500000.0,
    north: float = 4200000.0,
    res: float = 10.0,
    bands: int = 128,
    dtype: str = "int8",
):
    """A TESSERA-style store with one zone group; returns (embeddings, scales) arrays to fill.

    dtype="float32": the same layout holding float embeddings (NaN = no data, no quantisation,
    no scales array; scales is None)."""
    root = zarr.open_group(path, mode="a", zarr_format=3)
    floats = dtype == "float32"
    root.attrs.update(
        {
            "zarr_conventions": [GEOEMB],
            "geoemb:type": "pixel",
            "geoemb:dimensions": bands,
            "geoemb:model": "https://geotessera.org/model/v1",
            "geoemb:data_type": dtype,
            "geoemb:gsd": 10.0,
            "geoemb:spatial_layout": "utm_zones",
            **(
                {}
                if floats
                else {
                    "geoemb:quantization": {
                        "method": "per_pixel_scale",
                        "original_dtype": "float32",
                        "quantized_dtype": "int8",
                        "scale": {"type": "array", "array_name": "scales", "nodata": "+inf"},
                    }
                }
            ),
        }
    )
    group = root.create_group(f"utm{zone:02d}")
    group.attrs.update(
        {
            **_spatial(f"EPSG:326{zone:02d}", west, north, res, height, width),
            "zarr_conventions": [PROJ, SPATIAL],
        }
    )
    embeddings = group.create_array(
        "embeddings",
        shape=(len(years), bands, height, width),
        shards=(1, bands, 256, 256),
        chunks=(1, bands, 32, 32),
        dtype=dtype,
        fill_value=np.nan if floats else 0,
        compressors=ZstdCodec(level=3),
        dimension_names=["time", "band", "y", "x"],
    )
    _coords(group, west, north, res, height, width, years, np.arange(bands, dtype=np.int32))
    if floats:
        return embeddings, None
    scales = group.create_array(
        "scales",
        shape=(len(years), height, width),
        chunks=(1, 256, 256),
        dtype="float32",
        fill_value=np.inf,
        dimension_names=["time", "y", "x"],
    )
    return embeddings, scales
