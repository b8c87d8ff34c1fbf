"""The Earth Engine emulator, driven by the real earthengine-api client and xee over HTTP."""

from __future__ import annotations

import concurrent.futures
import time

import ee
import google.oauth2.credentials
import numpy as np
import pyproj
import pytest
import rasterio
import requests
import xarray as xr
from numpy.lib import recfunctions as rfn
from rasterio.io import MemoryFile

from emulators.earthengine import EarthEngineEmulator, EarthEngineEmulatorProcess
from emulators.earthengine.synthetic import (
    BAND_NAMES,
    COLLECTION_ID,
    make_embedding_collection,
    quantize,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Use `@` matmul:PendingDeprecationWarning"
)  # from xee

X0, Y0 = 720_000.0, 5_000_000.0  # top-left corner of tile 31N_a (see synthetic.default_tiles)


@pytest.fixture(scope="module")
def images():
    return make_embedding_collection(years=(2021, 2022), cross_zone=True, seed=3)


@pytest.fixture(scope="module")
def emulator(images):
    emu = EarthEngineEmulator()
    emu.add_images(images)
    with pytest.MonkeyPatch.context() as mp, emu:
        mp.setattr(
            ee.deprecation, "_FetchDataCatalogStac", lambda: {}
        )  # no internet: skip the catalog
        yield emu
    ee.Reset()


def _initialize(url: str) -> None:
    ee.Initialize(
        credentials=google.oauth2.credentials.Credentials("fake-token"),
        project="test-project",
        url=url,
    )


@pytest.fixture(autouse=True)
def on_emulator(emulator):
    _initialize(emulator.url)
    emulator.reset_stats()
    yield emulator
    emulator.configure(
        latency_s=0.0,
        latency_per_mb_s=0.0,
        error_rates={"429": 0, "500": 0, "503": 0},
        truncate_rate=0.0,
        max_in_flight=40,
        max_request_bytes=48 * 2**20,
        fault_kinds=("computePixels",),
    )
    ee.data.setMaxRetries(5)


def by_id(images, name):
    return next(i for i in images if i["image_id"].endswith("/" + name))


def grid(x0, y0, width, height, crs="EPSG:32631", scale=10.0):
    return {
        "dimensions": {"width": width, "height": height},
        "crsCode": crs,
        "affineTransform": {
            "scaleX": scale,
            "shearX": 0,
            "translateX": x0,
            "shearY": 0,
            "scaleY": -scale,
            "translateY": y0,
        },
    }


def year_image(year):
    col = ee.ImageCollection(COLLECTION_ID).filterDate(f"{year}-01-01", f"{year + 1}-01-01")
    return col.mosaic().select(BAND_NAMES)


def float_expr(img):
    return img.toFloat().unmask(-9999, False)


def int8_expr(img):
    return (
        img.abs().sqrt().multiply(127.5).round().multiply(img.signum()).toInt8().unmask(-128, False)
    )


def fetch(expression, request_grid):
    """(H, W, bands) array and its dtype through ee.data.computePixels (NUMPY_NDARRAY)."""
    raw = ee.data.computePixels(
        {"expression": expression, "fileFormat": "NUMPY_NDARRAY", "grid": request_grid}
    )
    assert raw.dtype.names == tuple(BAND_NAMES)
    return rfn.structured_to_unstructured(raw)


def test_initialize_fetches_discovery_and_algorithms(emulator):
    ee.Reset()  # a second Initialize would reuse the algorithms already loaded
    _initialize(emulator.url)
    assert (
        emulator.count("discovery") == 2 and emulator.count("algorithms") == 1
    )  # raw + json resources
    assert emulator.requests[0].path == "/$discovery/rest"
    assert hasattr(ee.Image, "toInt8")


def test_get_asset_known_and_unknown(emulator):
    collection = ee.data.getAsset(COLLECTION_ID)
    assert collection["type"] == "IMAGE_COLLECTION" and collection["id"] == COLLECTION_ID
    image = ee.data.getAsset(f"{COLLECTION_ID}/31N_a_2021")
    assert image["type"] == "IMAGE" and image["properties"]["UTM_ZONE"] == "31N"
    assert image["bands"][0]["grid"]["crsCode"] == "EPSG:32631"
    assert image["startTime"] == "2021-01-01T00:00:00Z"
    with pytest.raises(ee.EEException, match="not found"):
        ee.data.getAsset("GOOGLE/NO_SUCH_COLLECTION")
    assert emulator.count("getAsset", 404) == 1
    assert ee.data.getInfo("GOOGLE/NO_SUCH_COLLECTION") is None
    emulator.add_collection_alias("projects/test-project/assets/embeddings", COLLECTION_ID)
    assert ee.ImageCollection("projects/test-project/assets/embeddings").size().getInfo() == 6


def test_list_images_and_filter_by_time():
    assert len(ee.data.listImages(COLLECTION_ID)["images"]) == 6
    listed = ee.data.listImages({"parent": COLLECTION_ID, "startTime": "2022-01-01T00:00:00Z"})[
        "images"
    ]
    assert [i["id"].rsplit("/", 1)[1] for i in listed] == ["31N_a_2022", "31N_b_2022", "32N_a_2022"]


def test_size_of_filtered_collection():
    col = ee.ImageCollection(COLLECTION_ID)
    assert col.filterDate("2021-01-01", "2022-01-01").size().getInfo() == 3
    assert col.filterDate("2019-01-01", "2020-01-01").size().getInfo() == 0
    assert col.filter(ee.Filter.eq("UTM_ZONE", "32N")).size().getInfo() == 2


def test_get_info_of_images_dates_lists():
    info = ee.Image(f"{COLLECTION_ID}/31N_a_2021").getInfo()
    band = info["bands"][0]
    assert info["id"] == f"{COLLECTION_ID}/31N_a_2021"
    assert band["id"] == "A00" and band["data_type"]["precision"] == "double"
    assert band["crs"] == "EPSG:32631" and band["crs_transform"] == [10, 0, X0, 0, -10, Y0]
    assert band["dimensions"] == [300, 400]
    assert info["properties"]["system:time_start"] == 1609459200000
    first = ee.ImageCollection(COLLECTION_ID).filterDate("2022-01-01", "2023-01-01").first()
    assert first.date().getInfo() == {"type": "Date", "value": 1640995200000}
    assert first.projection().getInfo()["crs"] == "EPSG:32631"
    mosaic = year_image(2021).toFloat().getInfo()
    assert mosaic["bands"][0]["data_type"] == {"type": "PixelType", "precision": "float"}
    assert ee.List([1, 2.5, "a", {"k": [1]}]).getInfo() == [1, 2.5, "a", {"k": [1]}]


def test_unimplemented_or_unsupported_is_a_clear_400():
    img = year_image(2021)
    with pytest.raises(ee.EEException, match="does not implement the algorithm 'Image.focalMax'"):
        img.focalMax(1).getInfo()
    with pytest.raises(ee.EEException, match="sameFootprint"):
        fetch(img.unmask(0), grid(X0, Y0, 4, 4))


def test_float_path_of_an_aligned_window_is_exact(images):
    source = by_id(images, "31N_a_2021")["data"][:, 51:141, 37:157]
    out = fetch(float_expr(year_image(2021)), grid(X0 + 370, Y0 - 510, 120, 90))
    assert out.dtype == np.float32
    assert np.isnan(source).any()  # the window has no-data holes, which unmask fills
    expected = np.where(np.isnan(source), np.float32(-9999), source).transpose(1, 2, 0)
    np.testing.assert_array_equal(out, expected)


def test_int8_path_gives_the_codes(images):
    source = by_id(images, "31N_a_2022")["data"][:, 51:141, 37:157]
    out = fetch(int8_expr(year_image(2022)), grid(X0 + 370, Y0 - 510, 120, 90))
    assert out.dtype == np.int8
    codes = np.where(np.isnan(source), np.int8(-128), quantize(np.nan_to_num(source)))
    np.testing.assert_array_equal(out, codes.transpose(1, 2, 0))


def test_bands_without_cast_are_double_and_masked_pixels_are_zero(images):
    source = by_id(images, "31N_a_2021")["data"][:, 51:141, 37:157]
    raw = ee.data.computePixels(
        {
            "expression": year_image(2021),
            "fileFormat": "NUMPY_NDARRAY",
            "grid": grid(X0 + 370, Y0 - 510, 120, 90),
            "bandIds": ["A05", "A63"],
        }
    )
    assert raw.dtype.names == ("A05", "A63") and raw.dtype["A05"] == np.float64
    np.testing.assert_array_equal(raw["A05"], np.nan_to_num(source[5], nan=0.0).astype(np.float64))


def test_window_spanning_two_adjacent_tiles_is_their_concatenation(images):
    a, b = by_id(images, "31N_a_2021")["data"], by_id(images, "31N_b_2021")["data"]
    out = fetch(float_expr(year_image(2021)), grid(X0 + 2500, Y0 - 100, 100, 50))
    expected = np.concatenate([a[:, 10:60, 250:300], b[:, 10:60, 0:50]], axis=2)
    expected = np.where(np.isnan(expected), np.float32(-9999), expected).transpose(1, 2, 0)
    np.testing.assert_array_equal(out, expected)


def nearest_neighbour_mosaic(sources, request_grid):
    """Independent reference: sample each image at every pixel centre; later images win."""
    aff = request_grid["affineTransform"]
    width, height = request_grid["dimensions"]["width"], request_grid["dimensions"]["height"]
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x = aff["translateX"] + aff["scaleX"] * cols
    y = aff["translateY"] + aff["scaleY"] * rows
    out = np.full((height, width, len(BAND_NAMES)), np.nan, np.float32)
    for source in sources:
        sx, sy = pyproj.Transformer.from_crs(
            request_grid["crsCode"], source["crs"], always_xy=True
        ).transform(x, y)
        a, _, c, _, e, f = source["transform"]
        col, row = np.floor((sx - c) / a).astype(int), np.floor((sy - f) / e).astype(int)
        data = source["data"]
        inside = (col >= 0) & (col < data.shape[2]) & (row >= 0) & (row < data.shape[1])
        values = data[:, row.clip(0, data.shape[1] - 1), col.clip(0, data.shape[2] - 1)].transpose(
            1, 2, 0
        )
        take = inside[..., None] & ~np.isnan(values)
        out[take] = values[take]
    return np.where(np.isnan(out), np.float32(-9999), out)


@pytest.mark.parametrize("crs", ["EPSG:32631", "EPSG:32632"])
def test_cross_zone_request_equals_nearest_neighbour_reference(images, crs):
    sources = [i for i in images if i["start"] == "2021-01-01"]
    east = by_id(images, "32N_a_2021")
    if crs == "EPSG:32631":
        request_grid = grid(725_000, Y0 + 500, 300, 400)
    else:
        request_grid = grid(
            east["transform"][2] - 1000, east["transform"][5] + 500, 300, 400, crs="EPSG:32632"
        )
    out = fetch(float_expr(year_image(2021)), request_grid)
    expected = nearest_neighbour_mosaic(sources, request_grid)
    np.testing.assert_array_equal(out, expected)
    # both zones contribute, so the reprojection and the aligned read were both exercised
    from_b = nearest_neighbour_mosaic(sources[1:2], request_grid)
    from_east = nearest_neighbour_mosaic(sources[2:3], request_grid)
    assert (from_b[..., 0] != -9999).sum() > 1000 and (from_east[..., 0] != -9999).sum() > 1000


def test_request_over_the_size_limit_is_400(emulator):
    with pytest.raises(
        ee.EEException,
        match=r"Total request size \(67239936 bytes\) must be less than or "
        r"equal to 50331648 bytes",
    ):
        fetch(year_image(2021), grid(X0, Y0, 512, 256))  # 512*256*(64*8 + 1) bytes of double
    assert emulator.count("computePixels", 400) == 1
    assert fetch(float_expr(year_image(2021)), grid(X0, Y0, 256, 256)).shape == (
        256,
        256,
        64,
    )  # 16.8 MB
    with pytest.raises(ee.EEException, match="32768"):
        fetch(float_expr(year_image(2021)), grid(X0, Y0, 40_000, 1))


def test_more_concurrent_requests_than_allowed_get_429(emulator):
    emulator.configure(max_in_flight=2, latency_s=0.4)
    ee.data.setMaxRetries(0)  # see the 429 instead of the client's retries
    expr = float_expr(year_image(2021))

    def one(_):
        try:
            fetch(expr, grid(X0, Y0, 8, 8))
            return "ok"
        except ee.EEException as exc:
            return str(exc)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))
    assert results.count("ok") == 2, results
    assert all(r == "Too many concurrent requests." for r in results if r != "ok")
    assert emulator.max_in_flight_seen == 2
    assert emulator.count("computePixels", 429) == 4


def test_reset_stats_forgets_requests_still_in_flight(emulator):
    emulator.configure(latency_s=0.3)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(fetch, float_expr(year_image(2021)), grid(X0, Y0, 4, 4))
        while emulator.stats()["in_flight"] == 0:
            time.sleep(0.005)
        emulator.reset_stats()
        assert pending.result().shape == (4, 4, 64)
    assert emulator.count("computePixels") == 0 and emulator.stats()["in_flight"] == 0


def test_latency_has_a_base_and_a_per_megabyte_term(emulator):
    emulator.configure(latency_s=0.05, latency_per_mb_s=0.25)
    expr = float_expr(year_image(2021))
    start = time.perf_counter()
    fetch(expr, grid(X0, Y0, 8, 8))  # 16 kB
    fetch(expr, grid(X0, Y0, 128, 128))  # 4.2 MB: about 1 s more
    wall = time.perf_counter() - start
    small, big = [r for r in emulator.requests if r.kind == "computePixels"]
    assert small.bytes_out < 20_000 and big.bytes_out > 4_000_000
    for record in (small, big):
        assert record.delay_s == pytest.approx(0.05 + 0.25 * record.bytes_out / 1e6)
        assert record.finished - record.started >= record.delay_s  # the delay is really slept
    assert big.delay_s - small.delay_s > 1.0
    assert (
        wall >= small.delay_s + big.delay_s
    )  # a lower bound only: the machine may be slow, never fast
    stats = emulator.stats()
    assert (
        stats["delay_s"]
        == pytest.approx(small.delay_s + big.delay_s)
        == pytest.approx(stats["delay_s_by_kind"]["computePixels"])
    )
    assert stats["bytes_out_by_kind"]["computePixels"] == small.bytes_out + big.bytes_out
    # the size term is for pixels only: value:compute and errors pay the base latency
    emulator.reset_stats()
    ee.Number(1).getInfo()
    emulator.configure(error_rates={"503": 1.0})
    ee.data.setMaxRetries(0)
    with pytest.raises(ee.EEException, match="unavailable"):
        fetch(expr, grid(X0, Y0, 128, 128))
    assert [r.delay_s for r in emulator.requests if r.kind != "other"] == [0.05, 0.05]


def _raw_compute_pixels_body(expression, request_grid):
    return {
        "expression": ee.serializer.encode(expression),
        "fileFormat": "NPY",
        "grid": request_grid,
    }


def test_injected_error_rates_are_roughly_honoured(emulator):
    emulator.configure(error_rates={"429": 0.2, "500": 0.1, "503": 0.1}, seed=7)
    body = _raw_compute_pixels_body(float_expr(year_image(2021)), grid(X0, Y0, 2, 2))
    url = f"{emulator.url}/v1/projects/test-project/image:computePixels"
    with requests.Session() as session:
        statuses = [session.post(url, json=body).status_code for _ in range(400)]
    for status, rate in [(429, 0.2), (500, 0.1), (503, 0.1), (200, 0.6)]:
        assert abs(statuses.count(status) / 400 - rate) < 0.07, (status, statuses.count(status))
    assert (
        ee.ImageCollection(COLLECTION_ID).size().getInfo() == 6
    )  # value:compute is not faulted by default


def test_truncated_body_makes_the_client_raise(emulator):
    emulator.configure(truncate_rate=1.0)
    ee.data.setMaxRetries(0)
    with pytest.raises((ConnectionError, ee.EEException)):
        fetch(float_expr(year_image(2021)), grid(X0, Y0, 32, 32))
    record = emulator.requests[-1]
    assert record.status == 200 and record.bytes_out < 32 * 32 * 64 * 4


def test_geotiff_has_the_grid_crs_and_transform(images):
    payload = ee.data.computePixels(
        {
            "expression": float_expr(year_image(2021)),
            "fileFormat": "GEO_TIFF",
            "grid": grid(X0 + 370, Y0 - 510, 120, 90),
        }
    )
    with MemoryFile(payload) as memfile, memfile.open() as dataset:
        assert dataset.crs.to_epsg() == 32631
        assert dataset.transform == rasterio.Affine(10, 0, X0 + 370, 0, -10, Y0 - 510)
        assert dataset.count == 64 and dataset.descriptions[0] == "A00"
        source = by_id(images, "31N_a_2021")["data"][3, 51:141, 37:157]
        np.testing.assert_array_equal(
            dataset.read(4), np.where(np.isnan(source), np.float32(-9999), source)
        )


def test_xee_open_dataset_loads_the_source(emulator, images):
    col = (
        ee.ImageCollection(COLLECTION_ID)
        .filterDate("2021-01-01", "2022-01-01")
        .filter(ee.Filter.eq("UTM_ZONE", "31N"))
    )
    ds = xr.open_dataset(
        col,
        engine="ee",
        crs="EPSG:32631",
        crs_transform=(10, 0, X0, 0, -10, Y0),
        shape_2d=(600, 400),
    ).load()
    assert ds.sizes == {"time": 2, "y": 400, "x": 600}
    assert ds["A00"].dtype == np.float32  # xee casts EE's double to float32 and masks with NaN
    assert ds.x.values[0] == X0 + 5 and ds.y.values[0] == Y0 - 5
    loaded = ds[BAND_NAMES].to_array("band").transpose("time", "band", "y", "x").values
    expected = np.full((2, 64, 400, 600), np.nan, np.float32)
    expected[0, :, :, :300] = by_id(images, "31N_a_2021")["data"]
    expected[1, :, :, 300:] = by_id(images, "31N_b_2021")["data"]
    np.testing.assert_array_equal(loaded, expected)
    # one computePixels per band per 256x256 chunk (both images in each request): 64 * 3 * 2
    assert emulator.count("computePixels", 200) == 64 * 3 * 2
    assert emulator.count("compute") == 1


def test_xee_on_yearly_mosaics_gets_time_from_the_set_property(emulator, images):
    years = (2021, 2022)
    yearly = ee.ImageCollection(
        [year_image(y).set("system:time_start", ee.Date(f"{y}-01-01").millis()) for y in years]
    )
    ds = xr.open_dataset(
        yearly,
        engine="ee",
        crs="EPSG:32631",
        crs_transform=(10, 0, X0, 0, -10, Y0),
        shape_2d=(600, 400),
        io_chunks={"time": 48, "width": 600, "height": 400},
    )
    assert [str(t)[:10] for t in ds.time.values] == ["2021-01-01", "2022-01-01"]
    emulator.reset_stats()
    band = ds["A07"].load().values
    assert emulator.count("computePixels") == 1  # one request per band per chunk
    a, b = by_id(images, "31N_a_2022")["data"][7], by_id(images, "31N_b_2022")["data"][7]
    # columns 500+ are where the 32N tile lies on top of tile b in the mosaic
    np.testing.assert_array_equal(band[1][:, :500], np.concatenate([a, b[:, :200]], axis=1))


def test_subprocess_mode_with_control_endpoints(images):
    two = [by_id(images, "31N_a_2021"), by_id(images, "31N_b_2021")]
    with EarthEngineEmulatorProcess(two, max_in_flight=10, latency_per_mb_s=0.01) as proc:
        _initialize(proc.url)
        out = fetch(float_expr(year_image(2021)), grid(X0 + 370, Y0 - 510, 120, 90))
        source = two[0]["data"][:, 51:141, 37:157]
        np.testing.assert_array_equal(
            out, np.where(np.isnan(source), np.float32(-9999), source).transpose(1, 2, 0)
        )
        stats = proc.stats()
        assert stats["counts"]["computePixels"] == {"200": 1} and stats["max_in_flight_seen"] == 1
        assert stats["delay_s"] == pytest.approx(
            0.01 * 120 * 90 * 64 * 4 / 1e6, rel=1e-3
        )  # --latency-per-mb, no base
        proc.configure(error_rates={"503": 1.0})
        ee.data.setMaxRetries(0)
        with pytest.raises(ee.EEException, match="unavailable"):
            fetch(float_expr(year_image(2021)), grid(X0, Y0, 4, 4))
        assert proc.count("computePixels", 503) == 1
        proc.reset_stats()
        assert proc.stats()["requests"] == 0
