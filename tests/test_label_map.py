"""The labelling page's map (issue 19) without a browser: the new flags' bad input, polygons sampled
into the points `efm sample` reads (a self-intersecting one fixed), the uncertainty, the
suggestions and the spatial block CV, each against an independent computation (numpy, shapely,
scikit-learn's GroupKFold on blocks computed here). The page itself: tests/test_label_browser.py."""

from __future__ import annotations

import numpy as np
import pytest

from label_page import guide, polygons, tiles
from label_page.view import StoreView
from pipelines import label
from tests.helpers import store_factory
from tests.helpers.label import lonlat_of, one_error_line
from transforms.storage import readers

YEAR = 2021


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return store_factory.make_store(
        str(tmp_path_factory.mktemp("label-map") / "emb.zarr"), years=(YEAR,)
    )


def write_rgb(path, crs, bounds, size=(40, 50)):
    import rasterio
    from rasterio.transform import from_bounds

    h, w = size
    kwargs = {"crs": crs} if crs else {}
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8",
        transform=from_bounds(*bounds, w, h), **kwargs,
    ) as dst:  # fmt: skip
        dst.write(np.full((3, h, w), 100, dtype=np.uint8))
    return str(path)


@pytest.mark.parametrize(
    "case",
    ["basemap-no-xyz", "basemap-not-http", "basemap-s-in-path-host", "image-no-crs",
     "image-elsewhere", "image-not-raster", "points-per-polygon"],
)  # fmt: skip
def test_bad_map_input_is_one_line_exit_2_and_nothing_written(synthetic, tmp_path, capsys, case):
    out = tmp_path / "p.geojson"
    args = [
        "--embeddings",
        synthetic.path,
        "--output",
        str(out),
        "--classes",
        "a,b",
        "--tuning",
        "port=0",
    ]
    lon, lat = lonlat_of(synthetic, 150, 130)
    extra, flag = {
        "basemap-no-xyz": (["--basemap", "https://tiles.example/{z}/{x}.png"], "--basemap"),
        "basemap-not-http": (["--basemap", "file:///tmp/{z}/{x}/{y}.png"], "--basemap"),
        "basemap-s-in-path-host": (["--basemap", "https://a{s}b.example/{z}/{x}/{y}"], "--basemap"),
        "image-no-crs": (
            ["--image", write_rgb(tmp_path / "i.tif", None, (lon - 0.1, lat - 0.1, lon, lat))],
            "--image",
        ),
        "image-elsewhere": (
            ["--image", write_rgb(tmp_path / "i.tif", "EPSG:4326", (100, -10, 101, -9))],
            "--image",
        ),
        "image-not-raster": (["--image", str(tmp_path / "missing.tif")], "--image"),
        "points-per-polygon": (
            ["--tuning", "points_per_polygon=-1"],
            "--tuning: points_per_polygon",
        ),
    }[case]
    assert label.run(args + extra) == 2
    line = one_error_line(capsys, flag)
    if case == "basemap-no-xyz":
        assert "{y}" in line
    if case == "image-elsewhere":
        assert "does not overlap" in line
    assert not out.exists()


def test_a_basemap_template_gives_the_one_origin_the_page_may_load_images_from():
    from label_page.imagery import basemap_origin

    assert (
        basemap_origin("https://t.example.org/a/{z}/{x}/{y}.png?key=1") == "https://t.example.org"
    )
    assert basemap_origin("http://{s}.tile.example:8080/{z}/{x}/{y}.png") == (
        "http://*.tile.example:8080"
    )


def test_a_polygon_is_every_pixel_centre_inside_and_a_bow_tie_is_fixed(synthetic):
    import pyproj
    import shapely

    info = readers.store_info(synthetic.path)
    corners = [(40.3, 30.2), (40.7, 90.4), (100.2, 95.6), (95.4, 35.3)]  # off pixel centres
    ring = [list(lonlat_of(synthetic, r, c)) for r, c in corners]
    got = polygons.sample("p1", "a", ring, info)
    # shapely, here: the store pixel centres inside the ring (transformed with pyproj)
    to_store = pyproj.Transformer.from_crs("EPSG:4326", synthetic.grid.crs, always_xy=True)
    xy = np.array([to_store.transform(*p) for p in ring])
    rr, cc = np.mgrid[0 : info.height, 0 : info.width]
    inside = shapely.contains_xy(
        shapely.Polygon(xy), *store_factory.pixel_centre(synthetic, rr, cc)
    )
    assert not got.fixed and got.pixels == inside.sum() > 1000  # capped below at 1000
    assert len(got.rows) == polygons.MAX_PER_POLYGON
    assert inside[got.rows, got.cols].all() and len(set(zip(got.rows, got.cols))) == 1000
    again = polygons.sample("p1", "a", ring, info)
    assert np.array_equal(again.rows, got.rows)  # the same polygon, the same points
    few = polygons.sample("p1", "a", ring, info, per_polygon=7)
    assert len(few.rows) == 7 and inside[few.rows, few.cols].all()

    # a bow-tie (its ring crosses itself): fixed with make_valid into its two triangles
    bow = [corners[0], corners[2], corners[1], corners[3]]
    ring = [list(lonlat_of(synthetic, r, c)) for r, c in bow]
    xy = np.array([to_store.transform(*p) for p in ring])
    # the two triangles, built here: the crossing point is where the diagonals meet
    cross = shapely.intersection(
        shapely.LineString([xy[0], xy[1]]), shapely.LineString([xy[2], xy[3]])
    )
    halves = shapely.union(
        shapely.Polygon([xy[0], tuple(cross.coords[0]), xy[3]]),
        shapely.Polygon([xy[1], tuple(cross.coords[0]), xy[2]]),
    )
    inside = shapely.contains_xy(halves, *store_factory.pixel_centre(synthetic, rr, cc))
    fixed = polygons.sample("p2", "a", ring, info, per_polygon=1000)
    assert fixed.fixed and fixed.geometry["type"] == "MultiPolygon"
    on_edge = abs(fixed.pixels - inside.sum())  # centres exactly on an edge may go either way
    assert on_edge <= 2 and inside[fixed.rows, fixed.cols].mean() > 0.99

    with pytest.raises(polygons.PolygonError, match="no area"):
        polygons.sample("p3", "a", [ring[0], ring[0], ring[0]], info)


def test_uncertainty_is_the_nearest_over_the_nearest_other_class_distance():
    rng = np.random.default_rng(0)
    train, labels = rng.normal(size=(12, 8)), rng.integers(0, 3, 12)
    labels[:3] = [0, 1, 2]
    values = rng.normal(size=(200, 8)).astype(np.float32)
    got = guide.uncertainty(train, labels, values)
    d = np.linalg.norm(values[:, None, :] - train[None], axis=-1)  # (pixels, points), float64
    nearest = d.argmin(axis=1)
    d1 = d.min(axis=1)
    d2 = np.array([d[i, labels != labels[nearest[i]]].min() for i in range(len(values))])
    np.testing.assert_allclose(got, d1 / d2, rtol=1e-4)


def test_suggestions_are_the_most_uncertain_far_enough_from_points_and_each_other():
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, 500, 3000), rng.integers(0, 500, 3000)
    u = rng.random(3000)
    taken = [(250, 250)]
    picked = guide.suggest(rows, cols, u, 8, 40.0, taken)
    assert len(picked) == 8
    spots = [(rows[i], cols[i]) for i in picked]
    for a, (r, c) in enumerate(spots):
        others = spots[:a] + taken
        assert all(np.hypot(r - r2, c - c2) >= 40 for r2, c2 in others)
        # nothing more uncertain was passed over unless it was too close to an earlier choice
        better = np.flatnonzero(u > u[picked[a]])
        for i in better:
            if i in picked[:a]:
                continue
            assert any(np.hypot(rows[i] - r2, cols[i] - c2) < 40 for r2, c2 in spots[:a] + taken)


def test_block_cv_is_groupkfold_on_blocks_and_below_random_kfold_on_clustered_points():
    from sklearn.model_selection import GroupKFold, KFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(2)
    # clusters of points, one per place; the class is a coin flip per cluster and the
    # embedding is the cluster's own centre + noise: neighbours in a cluster give its class away
    n, m = 40, 15  # 40 clusters of 15 points, each in a block of its own
    centres = rng.normal(size=(n, 16)) * 3
    cls = rng.integers(0, 2, n)
    spot = rng.choice(100, n, replace=False)
    where = np.column_stack([spot // 10, spot % 10]) * 50 + 10
    vectors = np.concatenate([centres[k] + rng.normal(size=(m, 16)) * 0.3 for k in range(n)])
    labels = np.repeat(cls, m)
    rows = np.concatenate([where[k, 0] + rng.integers(0, 20, m) for k in range(n)])
    cols = np.concatenate([where[k, 1] + rng.integers(0, 20, m) for k in range(n)])
    got = guide.block_cv(vectors, labels, rows, cols, block=50, width=520)
    groups = (rows // 50) * 11 + cols // 50  # computed here: 11 blocks across 520 px
    folds = min(5, len(np.unique(groups)))
    spatial = cross_val_predict(
        KNeighborsClassifier(5), vectors, labels, groups=groups, cv=GroupKFold(folds)
    )
    assert got["folds"] == folds and got["tested"] == len(labels)
    assert got["accuracy"] == pytest.approx((spatial == labels).mean())
    random_kfold = cross_val_predict(
        KNeighborsClassifier(5), vectors, labels, cv=KFold(5, shuffle=True, random_state=0)
    )
    assert (random_kfold == labels).mean() > 0.95 > got["accuracy"] + 0.2


def test_a_tile_shows_the_store_pixels_rasterio_reprojects_there_at_every_zoom(synthetic):
    import rasterio.warp
    from rasterio.transform import from_bounds

    view = StoreView(readers.store_info(synthetic.path), YEAR)
    source = tiles.TileSource(view)
    h, w = synthetic.grid.height, synthetic.grid.width
    numbers = np.arange(h * w, dtype=np.int32).reshape(h, w)
    for z in (12, 14, 16):
        wx, wy = tiles.tile_centres(z, 0, 0, 1)  # the tile under the store's centre
        import pyproj

        cx, cy = store_factory.pixel_centre(synthetic, h // 2, w // 2)
        mx, my = pyproj.Transformer.from_crs(synthetic.grid.crs, "EPSG:3857", always_xy=True).transform(cx, cy)  # fmt: skip
        span = 2 * tiles.HALF / 2**z
        x, y = int((mx + tiles.HALF) // span), int((tiles.HALF - my) // span)
        rows, cols, level = source.grid.pixels(z, x, y)
        ref = np.full((256, 256), -1, dtype=np.int32)
        rasterio.warp.reproject(
            numbers, ref, src_transform=synthetic.grid.transform, src_crs=synthetic.grid.crs,
            src_nodata=-1, dst_transform=from_bounds(*tiles.tile_bounds(z, x, y), 256, 256),
            dst_crs="EPSG:3857", dst_nodata=-1, resampling=rasterio.warp.Resampling.nearest,
        )  # fmt: skip
        rr, cr = np.divmod(ref, w)
        both = (ref >= 0) & (rows >= 0)
        assert both.sum() > 1000 and ((ref >= 0) == (rows >= 0)).mean() > 0.99
        if level == 1:
            assert (rows[both] == rr[both]).mean() > 0.995 and (
                cols[both] == cr[both]
            ).mean() > 0.995
        else:  # zoomed out: the first pixel of the level x level block the exact pixel is in
            assert (rows[both] % level == 0).all() and (cols[both] % level == 0).all()
            assert (rows[both] == rr[both] // level * level).mean() > 0.99
        # and the tile's values are those pixels' (the overview or the chunks under the tile)
        got = source.values(z, x, y)
        flat = synthetic.values[0].reshape(-1, synthetic.values.shape[-1])
        np.testing.assert_array_equal(got.values[got.index], flat[(rows * w + cols)[got.mask]])
        assert len(got.values) == len(np.unique((rows * w + cols)[got.mask]))


def test_a_tiles_approximate_transform_stays_within_gdals_threshold_of_the_exact_one(synthetic):
    """The lattice + bilinear transform (what GDAL's warper does by default) against pyproj on
    every pixel: within 0.125 store px wherever it is used; and it is used (no silent fallback)."""
    import pyproj

    view = StoreView(readers.store_info(synthetic.path), YEAR)
    grid = tiles.TileSource(view).grid
    h, w = synthetic.grid.height, synthetic.grid.width
    cx, cy = store_factory.pixel_centre(synthetic, h // 2, w // 2)
    to_web = pyproj.Transformer.from_crs(synthetic.grid.crs, "EPSG:3857", always_xy=True)
    mx, my = to_web.transform(cx, cy)
    exact = pyproj.Transformer.from_crs("EPSG:3857", synthetic.grid.crs, always_xy=True)
    inverse = ~synthetic.grid.transform
    for z in (10, 13, 16):
        span = 2 * tiles.HALF / 2**z
        x, y = int((mx + tiles.HALF) // span), int((tiles.HALF - my) // span)
        row, col = grid.fractional(z, x, y)
        sx, sy = exact.transform(*tiles.tile_centres(z, x, y))
        ref_col, ref_row = inverse * (sx, sy)
        assert np.abs(row - ref_row).max() <= tiles.MAX_ERROR
        assert np.abs(col - ref_col).max() <= tiles.MAX_ERROR
    # a plane is reproduced exactly by the bilinear step (so the lattice is what is used)
    lattice = np.linspace(0, 255, tiles.GRID)
    plane = 3.0 * lattice[:, None] - 2.0 * lattice[None, :] + 7.0
    at = np.arange(256.0)
    np.testing.assert_allclose(
        tiles._bilinear(plane, lattice, 256),
        3.0 * at[:, None] - 2.0 * at[None, :] + 7.0,
        atol=1e-9,
    )
