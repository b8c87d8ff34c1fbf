"""tests/helpers/conventions.py judges stores against the conventions' own schemas (tests/schemas/).

A store in the public AEF mosaic's layout (tests/helpers/field_stores.py) passes with exactly its
known deviations from geoemb v1 allowed; the same layout made v1-conformant passes outright; and
each mutation of that conformant copy fails with a message naming what is wrong.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import zarr

from tests.helpers import field_stores
from tests.helpers.conventions import (
    AEF_MOSAIC_DEVIATIONS,
    GEOEMB_V1,
    efm_v3_store,
    validate_store,
    violations,
)

V1_ATTRS = {
    "zarr_conventions": [field_stores.PROJ, field_stores.SPATIAL, GEOEMB_V1],
    "geoemb:source_data": ["https://source.coop/tge-labs/aef/v1/annual/"],
    "geoemb:quantization": {
        "method": "signed_square",
        "original_dtype": "float32",
        "quantized_dtype": "int8",
    },
}


@pytest.fixture
def conformant(tmp_path):
    path = tmp_path / "mosaic.zarr"
    field_stores.aef_mosaic(str(path), width=300, height=200, attrs=V1_ATTRS)
    return path


def test_the_public_mosaic_layout_passes_with_exactly_its_known_deviations(tmp_path):
    path = tmp_path / "aef.zarr"
    field_stores.aef_mosaic(str(path), width=300, height=200)
    validate_store(path, allow=AEF_MOSAIC_DEVIATIONS)
    found = violations(path)
    # one violation per listed deviation, and nothing else
    assert len(found) == len(AEF_MOSAIC_DEVIATIONS), found
    for pattern in AEF_MOSAIC_DEVIATIONS:
        assert sum(bool(re.search(pattern, v)) for v in found) == 1, (pattern, found)
    with pytest.raises(AssertionError, match="geoemb:source_data"):
        validate_store(path)


def test_the_mosaic_layout_made_v1_conformant_passes(conformant):
    assert violations(conformant) == []
    validate_store(conformant)


def test_an_allowance_that_matches_nothing_is_reported_stale(conformant):
    with pytest.raises(AssertionError, match="stale"):
        validate_store(conformant, allow=AEF_MOSAIC_DEVIATIONS)


def _del(key):
    def mutate(root):
        del root.attrs[key]

    return mutate


def _set(key, value):
    def mutate(root):
        root.attrs[key] = value

    return mutate


def _shift_x(root):
    root["x"][:] = root["x"][:] + 0.5 * 0.00009  # corners instead of centres


MUTATIONS = {
    "proj_code_removed": (
        _del("proj:code"),
        [r"proj: schema: attributes: .* not valid", r"no proj: CRS"],
    ),
    "proj_code_unknown": (_set("proj:code", "EPSG:999999"), [r"proj: the CRS does not parse"]),
    "spatial_shape_wrong": (
        _set("spatial:shape", [201, 300]),
        [r"spatial:shape \[201, 300\] but /embeddings is \[200, 300\]"],
    ),
    "spatial_transform_missing": (_del("spatial:transform"), [r"spatial:transform is missing"]),
    "spatial_bbox_wrong": (
        _set("spatial:bbox", [-122.5, 37.982, -122.47291, 38.0]),  # one pixel too wide
        [r"spatial:bbox .* is not the grid's extent"],
    ),
    "x_coords_not_centres": (_shift_x, [r"coordinate x does not hold the pixel centres"]),
    "geoemb_quantization_missing": (
        _del("geoemb:quantization"),
        [r"/embeddings is int8 but no geoemb:quantization"],
    ),
    "geoemb_quantization_extra_key": (
        _set("geoemb:quantization", {**V1_ATTRS["geoemb:quantization"], "formula": "x"}),
        [r"geoemb:quantization: Additional properties .*'formula'"],
    ),
    "geoemb_dimensions_wrong": (_set("geoemb:dimensions", 128), [r"geoemb:dimensions 128 but"]),
    "geoemb_data_type_wrong": (
        _set("geoemb:data_type", "float32"),
        [r"geoemb:data_type 'float32'"],
    ),
    "geoemb_source_data_a_string": (
        _set("geoemb:source_data", "https://example.org/"),
        [r"geoemb:source_data: .* is not of type 'array'"],
    ),
    "geoemb_model_missing": (_del("geoemb:model"), [r"'geoemb:model' is a required property"]),
    "zarr_conventions_missing": (
        _del("zarr_conventions"),
        [
            rf"/: {p} attributes .* zarr_conventions does not register"
            for p in ("proj:", "spatial:", "geoemb:")
        ],
    ),
    "geoemb_registration_draft": (
        _set("zarr_conventions", [field_stores.PROJ, field_stores.SPATIAL, field_stores.GEOEMB]),
        [r"geoemb: zarr_conventions entry description: "],
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_each_mutation_of_a_conformant_store_fails_naming_it(conformant, tmp_path, mutation):
    mutate, expected = MUTATIONS[mutation]
    copy = tmp_path / "mutated.zarr"
    shutil.copytree(conformant, copy)
    mutate(zarr.open_group(str(copy), mode="r+"))
    with pytest.raises(AssertionError) as raised:
        validate_store(copy)
    message = str(raised.value)
    for pattern in expected:
        assert re.search(pattern, message), (pattern, message)


def test_efms_v3_layout_passes_and_its_cf_grid_mapping_is_checked(tmp_path):
    path = tmp_path / "efm.zarr"
    codes = efm_v3_store(path, width=40, height=30, bands=8, shard=32, inner=16)
    assert codes.shape == (2, 8, 30, 40)
    validate_store(path)
    assert np.array_equal(zarr.open_group(str(path))["embedding"][:], codes)

    ref = zarr.open_group(str(path), mode="r+")["spatial_ref"]
    ref.attrs["GeoTransform"] = "500000.0 20.0 0.0 4200000.0 0.0 -20.0"
    with pytest.raises(AssertionError, match="GeoTransform .* is not spatial:transform"):
        validate_store(path)
    import pyproj

    ref.attrs["GeoTransform"] = "500000.0 10.0 0.0 4200000.0 0.0 -10.0"
    ref.attrs["crs_wkt"] = pyproj.CRS("EPSG:32611").to_wkt()
    with pytest.raises(AssertionError, match="crs_wkt is not the proj: CRS"):
        validate_store(path)


def test_a_product_without_geoemb_passes_and_an_undescribed_grid_fails(tmp_path):
    path = tmp_path / "product.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.update(
        {
            "proj:code": "EPSG:32610",
            "spatial:dimensions": ["y", "x"],
            "spatial:transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0],
            "spatial:shape": [30, 40],
            "zarr_conventions": [field_stores.PROJ, field_stores.SPATIAL],
        }
    )
    root.create_array("class", shape=(1, 30, 40), dtype="uint8", dimension_names=["time", "y", "x"])
    validate_store(path)
    other = zarr.open_group(str(tmp_path / "bare.zarr"), mode="w", zarr_format=3)
    other.create_array(
        "class", shape=(1, 30, 40), dtype="uint8", dimension_names=["time", "y", "x"]
    )
    with pytest.raises(AssertionError, match="described by no spatial:.*\n.*no proj: CRS"):
        validate_store(tmp_path / "bare.zarr")
