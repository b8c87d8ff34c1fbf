"""The conventions every efm store speaks, besides CF's `spatial_ref` (docs/data-contract.md).

The v1 texts the field's writers register (the public AEF mosaic; GDAL 3.13's
GEOREFERENCING_CONVENTION=SPATIAL_PROJ), each registered in the node's `zarr_conventions` list:
- `proj:`    github.com/zarr-experimental/geo-proj v1: exactly ONE of proj:code / proj:wkt2 (the
             schema's `oneOf`): the authority code when one names exactly the CRS, else WKT2;
- `spatial:` github.com/zarr-conventions/spatial v1: dimensions, transform, shape, bbox, pixel
             registration;
- `geoemb:`  github.com/geo-embeddings/embeddings-zarr-convention v1, on embedding stores' group.
proj:/spatial: go on the group and on every data variable with y/x dims, registered there too:
GDAL 3.13 reads them only from the array itself. Coordinate arrays get none. x/y also get their CF
axis attributes (`standard_name` projection_x_coordinate / longitude, ...), and data variables
GDAL's own `_CRS` attribute (the only CRS GDAL 3.6 reads, in the Zarr 2 stores efm wrote before).
tests/test_geozarr.py validates every kind of store against the vendored v1 schemas
(tests/helpers/conventions.py) and opens it with GDAL 3.13 and rioxarray.
"""

from __future__ import annotations

import affine
import numpy as np
import pyproj
import xarray as xr

# The v1 registrations, as the field's writers record them (the public AEF mosaic, GDAL 3.13's
# GEOREFERENCING_CONVENTION=SPATIAL_PROJ) and their schemas accept (tests/schemas/README.md).
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
    "schema_url": "https://raw.githubusercontent.com/geo-embeddings/embeddings-zarr-convention/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/geo-embeddings/embeddings-zarr-convention/blob/v1/README.md",
    "uuid": "61c12cc5-0e28-4056-999a-480cf3fb7e4c",
    "name": "geoemb:",
    "description": "Geoembeddings convention for geospatial embedding arrays with model provenance",
}
AEF_MODEL = "https://developers.google.com/earth-engine/datasets/catalog/GOOGLE_SATELLITE_EMBEDDING_V1_ANNUAL"
# The AEF quantisation as geoemb v1 names it (v1 closes the object: the formula and the no-data
# code are the method's, written out in the embedding array's `quantization` attribute).
SIGNED_SQUARE = {"method": "signed_square", "original_dtype": "float32", "quantized_dtype": "int8"}
DIMENSIONS = ["y", "x"]  # spatial:dimensions: the Y axis's dimension first, then X's


def convention_attrs(crs, transform: affine.Affine, height: int, width: int) -> dict:
    """The `zarr_conventions` registration and the proj:/spatial: properties of a north-up grid.

    `transform` maps (col, row) of pixel corners to (x, y), as rasterio's: its first six
    coefficients [a, b, c, d, e, f] are `spatial:transform` as the spec orders them.
    """
    crs = pyproj.CRS.from_user_input(crs)
    attrs = {"zarr_conventions": [dict(PROJ), dict(SPATIAL)]}
    # geo-proj v1 takes exactly one CRS field (its schema's `oneOf`): the authority code where one
    # names exactly this CRS (what the public AEF mosaic writes), else the self-contained WKT2.
    authority = crs.to_authority(min_confidence=100)
    if authority is not None:
        attrs["proj:code"] = f"{authority[0]}:{authority[1]}"
    else:
        attrs["proj:wkt2"] = crs.to_wkt("WKT2_2019")
    corners_x, corners_y = zip(*(transform @ (c, r) for c in (0, width) for r in (0, height)))
    attrs.update(
        {
            "spatial:dimensions": list(DIMENSIONS),
            "spatial:transform_type": "affine",
            "spatial:transform": [float(v) for v in list(transform)[:6]],
            "spatial:shape": [int(height), int(width)],
            "spatial:bbox": [
                float(min(corners_x)),
                float(min(corners_y)),
                float(max(corners_x)),
                float(max(corners_y)),
            ],
            "spatial:registration": "pixel",  # values are cell areas; x/y coords are the cell centres
        }
    )
    return attrs


def embedding_attrs(bands: int, dtype: str, gsd: float, model: str = AEF_MODEL) -> dict:
    """The geo-embeddings convention's `geoemb:` properties of a store (registered with the others
    by `annotate`): what the public AEF mosaic writes, so readers built for it read efm's stores."""
    attrs = {
        "geoemb:type": "pixel",
        "geoemb:dimensions": int(bands),
        "geoemb:model": model,
        "geoemb:source_data": [model],  # v1: a list of URLs (the catalog entry of what was read)
        "geoemb:data_type": str(np.dtype(dtype)),
        "geoemb:gsd": float(gsd),
    }
    if np.dtype(dtype) == np.int8:
        attrs["geoemb:quantization"] = dict(SIGNED_SQUARE)
    return attrs


def grid_of(ds: xr.Dataset) -> tuple[pyproj.CRS, affine.Affine]:
    """CRS and transform from the dataset's CF `spatial_ref` (its GeoTransform; else from the x/y centres)."""
    ref = ds["spatial_ref"].attrs
    crs = pyproj.CRS.from_user_input(
        ref.get("crs_wkt") or ref.get("spatial_ref") or ds.attrs["crs"]
    )
    if ref.get("GeoTransform"):
        return crs, affine.Affine.from_gdal(*(float(v) for v in str(ref["GeoTransform"]).split()))
    x, y = (
        np.asarray(ds["x"].values, dtype=np.float64),
        np.asarray(ds["y"].values, dtype=np.float64),
    )
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    return crs, affine.Affine(dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2)


def axis_attrs(crs: pyproj.CRS) -> dict[str, dict]:
    """CF attributes of the x and y coordinates (standard_name, long_name, units, axis) for this CRS."""
    found = {}
    for axis in crs.cs_to_cf():
        name = {"X": "x", "Y": "y"}.get(axis.get("axis"))
        if name:
            found[name] = {
                k: axis[k] for k in ("standard_name", "long_name", "units", "axis") if k in axis
            }
    return found


def annotate(ds: xr.Dataset) -> xr.Dataset:
    """Write the conventions (in place, and returned) on a template that has y/x coords and `spatial_ref`."""
    crs, transform = grid_of(ds)
    attrs = convention_attrs(crs, transform, ds.sizes["y"], ds.sizes["x"])
    ds.attrs.update(attrs)
    if any(k.startswith("geoemb:") for k in ds.attrs):  # an embedding store: registered too
        ds.attrs["zarr_conventions"] = [*attrs["zarr_conventions"], dict(GEOEMB)]
    for name in ds.data_vars:
        if {"y", "x"} <= set(ds[name].dims):
            # on the array too: GDAL (3.13) reads proj:/spatial: only from the array itself
            ds[name].attrs.update(attrs)
            # GDAL's own CRS attribute: GDAL 3.6 (Debian 12's) reads neither CF's grid_mapping nor proj:, only this.
            ds[name].attrs["_CRS"] = {"wkt": crs.to_wkt("WKT2_2019")}
    for name, cf in axis_attrs(crs).items():
        ds[name].attrs.update(cf)
    return ds
