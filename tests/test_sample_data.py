"""The sample-data generator: the mirror's layout and index, and data that behaves like the real thing."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
from scipy import ndimage

from pipelines import make_sample_data
from sample_data import (
    embedding as sample_embedding,
)
from sample_data import (
    generate as sample_data,
)
from sample_data import (
    world as sample_world,
)
from transforms.core import quantize
from transforms.sources import cog_index, cog_paths

SPEC = sample_data.SampleSpec(**sample_data.SMALL)
PUBLIC_INDEX_COLUMNS = {
    "fid",
    "path",
    "year",
    "crs",
    "utm_zone",
    "utm_west",
    "utm_south",
    "utm_east",
    "utm_north",
    "wgs84_west",
    "wgs84_south",
    "wgs84_east",
    "wgs84_north",
    "geometry",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return sample_data.generate(str(tmp_path_factory.mktemp("sample")), SPEC)


@pytest.fixture(scope="module")
def truth(data):
    with rasterio.open(data.ground_truth) as ds:
        return ds.read(1), ds.transform, ds.crs, json.loads(ds.tags()["classes"])


def native_codes(data, year):
    """The year's zone-A codes on the reference grid (tiles are aligned with it)."""
    with rasterio.open(data.ground_truth) as ds:
        height, width, transform = ds.height, ds.width, ds.transform
    codes = np.full((height, width, 64), -128, dtype=np.int8)
    for path in glob.glob(os.path.join(data.mirror, str(year), SPEC.zone_a, "*.tiff")):
        with rasterio.open(path) as ds:
            t, block = ds.transform, np.moveaxis(ds.read(), 0, -1)
            top = (
                t.f + ds.height * t.e if t.e > 0 else t.f
            )  # bottom-up files: row 0 is the southernmost
            if t.e > 0:
                block = block[::-1]
            row = round((transform.f - top) / 10.0)
            col = round((t.c - transform.c) / 10.0)
            h, w = min(block.shape[0], height - row), min(block.shape[1], width - col)
            codes[row : row + h, col : col + w] = block[:h, :w]
    return codes


def _first_ifd_offset(path: str) -> int:
    import struct

    with open(path, "rb") as f:
        head = f.read(16)
    return (
        struct.unpack("<I", head[4:8])[0] if head[2] == 42 else struct.unpack("<Q", head[8:16])[0]
    )


def test_layout_is_the_mirrors(data):
    files = sorted(
        os.path.relpath(p, data.mirror)
        for p in glob.glob(os.path.join(data.mirror, "*", "*", "*.tiff"))
    )
    assert files == sorted(os.path.relpath(p, data.mirror) for p in data.files)
    years = {f.split("/")[0] for f in files}
    zones = {f.split("/")[1] for f in files}
    assert years == {"2022", "2023"} and zones == {"10N", "11N"}
    for name in cog_index.INDEX_NAMES:
        assert os.path.exists(os.path.join(data.mirror, name))
    for path in data.files:
        with rasterio.open(path) as ds:
            assert (ds.count, ds.width, ds.height) == (64, SPEC.tile_size, SPEC.tile_size)
            assert ds.dtypes[0] == "int8" and ds.nodata == -128
            assert ds.descriptions == sample_embedding.BANDS
            # Cloud-optimised byte order: the image's directory first, then the blocks (GDAL 3.10's COG driver
            # cannot write planar-separate bands, so no LAYOUT=COG tag); bands planar-separate like the public files.
            assert (
                _first_ifd_offset(path)
                < 1024
                <= int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
            )
            assert ds.tags(ns="IMAGE_STRUCTURE").get("INTERLEAVE") == "BAND" and ds.transform.e > 0
            assert ds.crs.to_epsg() == int(cog_paths.zone_crs(path.split("/")[-2]).split(":")[1])
            assert ds.transform.a == 10.0 and abs(ds.transform.e) == 10.0


def test_index_has_the_public_columns_and_true_footprints(data):
    import geopandas

    frame = geopandas.read_parquet(data.index["parquet"])
    assert PUBLIC_INDEX_COLUMNS <= set(frame.columns)
    assert frame.crs.to_epsg() == 4326
    csv = pd.read_csv(data.index["csv"])
    assert PUBLIC_INDEX_COLUMNS <= set(csv.columns) and len(csv) == len(frame)
    gpkg = geopandas.read_file(data.index["gpkg"])
    assert len(gpkg) == len(frame)
    for row in frame.itertuples():
        with rasterio.open(row.path) as ds:
            b = ds.bounds
            south, north = sorted(
                (b.bottom, b.top)
            )  # rasterio's bounds of a bottom-up file have bottom > top
            assert (row.utm_west, row.utm_south, row.utm_east, row.utm_north) == pytest.approx(
                (b.left, south, b.right, north)
            )
            assert row.crs == f"EPSG:{ds.crs.to_epsg()}" and row.utm_zone == row.path.split("/")[-2]
        assert str(row.year) == row.path.split("/")[-3]
        west, south, east, north = row.geometry.bounds
        assert row.wgs84_west <= west + 1e-9 and row.wgs84_east >= east - 1e-9
        assert row.wgs84_south <= south + 1e-9 and row.wgs84_north >= north - 1e-9


def test_two_zones_cover_the_area_on_both_sides_of_the_boundary(data, truth):
    classes, transform, crs, _ = truth
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    rows, cols = np.mgrid[0 : classes.shape[0], 0 : classes.shape[1]]
    lon, _ = to_lonlat.transform(*sample_world.apply(transform, cols + 0.5, rows + 0.5))
    codes = native_codes(data, 2022)
    east = lon >= SPEC.boundary_lon
    assert 0.2 < east.mean() < 0.6
    assert (codes[east][:, 0] == -128).all()  # zone A's files stop at the boundary
    assert (codes[~east][:, 0] != -128).mean() > 0.9
    zone_b = [p for p in data.files if "/11N/" in p]
    assert zone_b


def test_vectors_are_unit_length_before_quantisation(data):
    codes = native_codes(data, 2022)
    valid = codes[..., 0] != -128
    vectors = quantize.dequantize(codes[valid]).astype(np.float64)
    norms = np.linalg.norm(vectors, axis=-1)
    assert np.abs(norms - 1.0).max() < 0.02  # only the quantisation error
    assert ((codes[valid] == -128).sum()) == 0  # no-data is all bands or none


def test_land_cover_is_irregular_patches_at_several_scales(truth):
    classes, _, _, names = truth
    n = len(names)
    assert n >= 6 and set(np.unique(classes)) == set(range(n))
    shares = np.bincount(classes.ravel(), minlength=n) / classes.size
    assert shares.min() > 0.005
    # bigger areas for the same generator: the default size, where the larger scales show
    world = sample_world.make_world(sample_data.SampleSpec())
    big = world.classes
    assert (np.bincount(big.ravel(), minlength=n) / big.size).min() > 0.03
    sizes, rectangular = [], 0
    for k in range(n):
        labels, count = ndimage.label(big == k)
        assert count >= 3, f"class {names[k]} forms {count} patches"
        patch_sizes = np.bincount(labels.ravel())[1:]
        sizes.extend(patch_sizes)
        for i, sl in enumerate(ndimage.find_objects(labels)):
            if patch_sizes[i] >= 400:
                box = (sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start)
                rectangular += patch_sizes[i] / box > 0.9
    sizes = np.array(sizes)
    assert sizes.max() > 100 * np.median(sizes)  # from a few pixels to many thousands
    assert (sizes >= 10_000).sum() >= 3 and ((sizes >= 100) & (sizes < 2_000)).sum() >= 20
    assert rectangular == 0  # no squares
    # not stripes: class boundaries run in every direction
    vertical = (big[:, 1:] != big[:, :-1]).sum()
    horizontal = (big[1:, :] != big[:-1, :]).sum()
    assert 0.7 < vertical / horizontal < 1.4


def test_classes_are_distinct_directions_with_noise_and_a_small_drift(data, truth):
    classes, _, _, names = truth
    codes = {year: native_codes(data, year) for year in (2022, 2023)}
    both = (codes[2022][..., 0] != -128) & (
        codes[2023][..., 0] != -128
    )  # the same pixels in both years
    labels = classes[both]
    present = [
        k for k in range(len(names)) if (labels == k).sum() >= 200
    ]  # enough pixels for a mean
    assert len(present) >= 5
    keep = np.isin(labels, present)
    both[both] = keep
    labels = np.searchsorted(present, labels[keep])
    names = [names[k] for k in present]
    means = {}
    for year in (2022, 2023):
        vectors = quantize.dequantize(codes[year][both]).astype(np.float64)
        centres = np.stack([vectors[labels == k].mean(axis=0) for k in range(len(names))])
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        means[year] = centres
        cosines = centres @ centres.T
        assert (cosines[~np.eye(len(names), dtype=bool)] < 0.8).all()  # distinct
        own = (vectors * centres[labels]).sum(axis=1)
        assert 0.6 < np.median(own) < 0.95  # per-pixel noise: not a single point per class
        nearest = np.argmax(vectors @ centres.T, axis=1)
        assert (nearest == labels).mean() > 0.85  # but the class is still what decides
    drift = (means[2022] * means[2023]).sum(axis=1)
    assert (drift > 0.97).all() and (drift < 0.9999).all()  # small, but there
    same_pixel = (
        quantize.dequantize(codes[2022][both]).astype(np.float64)
        * quantize.dequantize(codes[2023][both])
    ).sum(axis=1)
    assert 0.7 < np.median(same_pixel) < 0.97  # a pixel keeps its character, up to noise and drift


def test_nodata_areas_differ_by_year(data):
    missing = {}
    for year in (2022, 2023):
        codes = native_codes(data, year)[:, :150]  # west of the zone boundary
        missing[year] = codes[..., 0] == -128
        assert 0.003 < missing[year].mean() < 0.15
    assert (missing[2022] != missing[2023]).any()


def test_points_are_labelled_from_the_ground_truth_like_a_person_would(data, truth):
    classes, transform, crs, names = truth
    features = json.load(open(data.points))["features"]
    assert len(features) == data.n_points
    to_grid = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    per_class = {name: [] for name in names}
    world = sample_world.make_world(SPEC)
    nodata_any = world.nodata[2022] | world.nodata[2023]
    for feature in features:
        lon, lat = feature["geometry"]["coordinates"]
        x, y = to_grid.transform(lon, lat)
        col, row = (int(v) for v in sample_world.apply(~transform, x, y))
        label = feature["properties"]["label"]
        assert names[classes[row, col]] == label
        assert feature["properties"]["class_id"] == names.index(label)
        per_class[label].append((row, col))
        assert not nodata_any[row, col]
    for name, points in per_class.items():
        assert 20 <= len(points) <= 60, f"{name}: {len(points)} points"
        # clustered in a few patches, not spread uniformly: nearest neighbours are close
        pts = np.array(points, dtype=float)
        d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)) + np.eye(len(pts)) * 1e9
        assert np.median(d.min(axis=1)) < 10
    # away from class edges: the 3x3 neighbourhood of every point is one class
    for name, points in per_class.items():
        for row, col in points:
            assert (classes[row - 1 : row + 2, col - 1 : col + 2] == names.index(name)).all()


def test_generation_is_deterministic():
    a, b = sample_world.make_world(SPEC), sample_world.make_world(SPEC)
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_array_equal(a.nodata[2022], b.nodata[2022])
    other = sample_world.make_world(sample_data.SampleSpec(**sample_data.SMALL, seed=SPEC.seed + 1))
    assert (other.classes != a.classes).mean() > 0.5


def test_command_line(tmp_path, capsys):
    output = tmp_path / "out"
    assert (
        make_sample_data.run(
            [
                "--output",
                str(output),
                "--size",
                "128x160",
                "--tuning",
                "tile_size=64",
                "--years",
                "2021",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert str(output / "mirror") in out and "bbox" in out
    assert {p.split("/")[-3] for p in glob.glob(str(output / "mirror" / "*" / "*" / "*.tiff"))} == {
        "2021"
    }
    assert make_sample_data.run(["--output", str(output), "--size", "small"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert make_sample_data.run(["--output", str(tmp_path / "x"), "--size", "huge"]) == 2
    assert "--size" in capsys.readouterr().err


def test_biomass_follows_the_land_cover_with_smooth_noise(data, truth):
    from sample_data import fields as sample_fields

    classes, _, _, names = truth
    with rasterio.open(os.path.join(data.output, "biomass.tif")) as ds:
        field = ds.read(1)
        assert (
            ds.dtypes[0] == "float32"
            and ds.tags()["units"] == "Mg/ha"
            and field.shape == classes.shape
        )
    assert (field >= 0).all() and np.isfinite(field).all()
    interior = {k: ndimage.binary_erosion(classes == k, iterations=3) for k in range(len(names))}
    means = {names[k]: float(field[m].mean()) for k, m in interior.items() if m.sum() > 200}
    assert (
        means["forest"] > 150 > 40 > means["cropland"] and means["water"] < 1
    )  # the class decides the level
    forest = field[interior[1]]
    assert 0.1 < forest.std() / forest.mean() < 0.5  # and varies within a class
    world = sample_world.make_world(SPEC)
    np.testing.assert_array_equal(
        sample_fields.biomass_field(world), field
    )  # deterministic from the seed


def test_gedi_points_carry_the_field_at_their_pixel(data, truth):
    classes, transform, crs, names = truth
    with rasterio.open(os.path.join(data.output, "biomass.tif")) as ds:
        field = ds.read(1)
    features = json.load(open(os.path.join(data.output, "gedi.geojson")))["features"]
    assert len(features) == SPEC.gedi_points
    to_grid = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    agbd, at_pixel = [], []
    for feature in features:
        x, y = to_grid.transform(*feature["geometry"]["coordinates"])
        col, row = (int(v) for v in sample_world.apply(~transform, x, y))
        agbd.append(feature["properties"]["agbd"])
        at_pixel.append(field[row, col])
    np.testing.assert_allclose(agbd, at_pixel, atol=0.006)
    assert len(set(agbd)) > 100  # spread over the area, not clustered in one patch
    refs = json.load(open(os.path.join(data.output, "refs.geojson")))["features"]
    assert len(refs) == SPEC.points_per_class and {f["properties"]["label"] for f in refs} == {
        "forest"
    }


def test_the_last_year_has_a_known_change(data, truth):
    classes, _, _, names = truth
    with rasterio.open(os.path.join(data.output, "change_truth.tif")) as ds:
        change = ds.read(1)
    changed = change == 1
    assert 0.01 < changed.mean() < 0.08
    # the changed pixels' embeddings moved: the same pixel's two years agree much less there
    a, b = native_codes(data, 2022), native_codes(data, 2023)
    both = (a[..., 0] != -128) & (b[..., 0] != -128) & (change != 255)
    dot = (quantize.dequantize(a[both]).astype(np.float64) * quantize.dequantize(b[both])).sum(
        axis=1
    )
    flags = changed[both]
    assert np.median(dot[flags]) < 0.7 < 0.8 < np.median(dot[~flags])
    world = sample_world.make_world(SPEC)
    np.testing.assert_array_equal(
        world.later_classes != world.classes,
        changed | ((change == 255) & (world.later_classes != world.classes)),
    )
    assert set(np.unique(world.later_classes[changed])) <= {
        names.index("bare"),
        names.index("grassland"),
    }


def test_codes_made_a_band_of_rows_at_a_time_are_the_whole_tiles(monkeypatch):
    """embedding_codes works on bands of rows (speed); the codes must be those of the whole-tile formula, bit for bit."""
    import math

    rng = np.random.default_rng(3)
    rows, cols, n_classes = (
        203,
        512,
        8,
    )  # bands of 5 rows, the last one short; big enough for BLAS to block the product
    classes = rng.integers(0, n_classes, (rows, cols)).astype(np.uint8)
    weights = sample_embedding.mixing_weights(classes, n_classes, 0.8)
    texture = rng.standard_normal((3, rows, cols)).astype(np.float32)
    valid = rng.random((rows, cols)) > 0.1
    directions = sample_embedding.class_directions(n_classes, rng, 0.65)
    texture_dirs = rng.standard_normal((3, n_classes, 64)) * 0.05

    def whole_tile(seed, persistent_seed):
        r, p = np.random.default_rng(seed), np.random.default_rng(persistent_seed)
        c = np.where(valid, classes, 0).astype(np.intp)
        vectors = np.tensordot(
            np.moveaxis(weights, 0, -1), directions.astype(np.float32), axes=1
        ).astype(np.float32)
        for t in range(3):
            vectors += texture[t][..., np.newaxis] * texture_dirs[t].astype(np.float32)[c]
        vectors += p.standard_normal(vectors.shape, dtype=np.float32) * np.float32(
            0.15 * math.sqrt(0.8)
        )
        vectors += r.standard_normal(vectors.shape, dtype=np.float32) * np.float32(
            0.15 * math.sqrt(0.2)
        )
        vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
        codes = quantize.quantize(vectors)
        codes[~valid] = quantize.NODATA_CODE
        return codes

    monkeypatch.setattr(sample_embedding, "_CHUNK_VALUES", 5 * cols * 64)
    codes = sample_embedding.embedding_codes(
        classes,
        weights,
        texture,
        valid,
        directions,
        texture_dirs,
        0.15,
        np.random.default_rng(1),
        np.random.default_rng(2),
        0.8,
    )
    assert codes.shape == (rows, cols, 64) and codes.dtype == np.int8
    np.testing.assert_array_equal(codes, whole_tile(1, 2))
