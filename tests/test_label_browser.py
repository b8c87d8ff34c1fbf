"""`efm label` in a real browser: Debian's headless Chromium driven by Selenium clicks points of two
classes at known store pixels, and the page's k-NN preview must equal scikit-learn's
KNeighborsClassifier trained on exactly those pixels' embeddings (read from the store's values,
not from the server); the saved GeoJSON must hold the clicked pixels' centres (transformed to
EPSG:4326 with pyproj here) and be what `efm sample` reads.

No browser is a failure, not a skip (CI must run this): `scripts/browser_env.sh` installs it;
EFM_SKIP_BROWSER=1 skips on purpose. EFM_LABEL_SCREENSHOT=path keeps a screenshot of the page.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from tests.helpers import store_factory
from tests.helpers.label_browser import (
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    browser_or_fail,
    click_lonlat,
    pick_class,
    start_label,
    wait_for,
)
from tests.helpers.local_servers import OneBodyServer, serve_in_background

YEAR = 2021
CLASSES = ("water", "forest")
EVIL_HOST = "evil.example"


@pytest.fixture
def synthetic(tmp_path):
    return store_factory.make_store(str(tmp_path / "emb.zarr"), years=(YEAR, 2022))


@pytest.fixture
def browser(tmp_path):
    browser_or_fail()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # evil.example resolves to this machine: a DNS-rebinding attacker's name (the test below)
    options.add_argument(f"--host-resolver-rules=MAP {EVIL_HOST} 127.0.0.1")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to see CSP violations
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def pick_pixels(s, t: int, truth: int, n: int, rng, margin: int = 1) -> list[tuple[int, int]]:
    """n pixels of the synthetic class `truth`, `margin` pixels inside its block, with data."""
    labels = s.labels[t]
    inner = labels == truth
    for dr in range(-margin, margin + 1):
        for dc in range(-margin, margin + 1):
            inner &= np.roll(np.roll(labels, dr, 0), dc, 1) == truth
    inner &= ~np.isnan(s.values[t]).any(axis=-1)
    inner[:margin], inner[-margin:], inner[:, :margin], inner[:, -margin:] = (
        False,
        False,
        False,
        False,
    )
    rows, cols = np.nonzero(inner)
    pick = rng.choice(len(rows), n, replace=False)
    return [(int(rows[i]), int(cols[i])) for i in pick]


def tile_server() -> OneBodyServer:
    """A basemap on this machine: any /{z}/{x}/{y}.png is a grey PNG; every request is logged."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (120, 130, 120)).save(buffer, "PNG")
    return OneBodyServer(buffer.getvalue(), "image/png")


def rgb_cog(path, s) -> str:
    """An RGB COG in EPSG:4326 over the store (and around it): a gradient."""
    import pyproj
    import rasterio
    from rasterio.transform import from_bounds

    to_lonlat = pyproj.Transformer.from_crs(s.grid.crs, "EPSG:4326", always_xy=True)
    xs, ys = store_factory.pixel_centre(
        s, np.array([0, s.grid.height]), np.array([0, s.grid.width])
    )
    lon, lat = to_lonlat.transform(xs, ys)
    west, east, south, north = min(lon) - 0.01, max(lon) + 0.01, min(lat) - 0.01, max(lat) + 0.01
    h, w = 400, 500
    data = np.stack(
        [
            np.tile(np.linspace(0, 255, w), (h, 1)),
            np.tile(np.linspace(0, 255, h)[:, None], (1, w)),
            np.full((h, w), 90.0),
        ]
    ).astype(np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=w,
        height=h,
        count=3,
        dtype="uint8",
        crs="EPSG:4326",
        transform=from_bounds(west, south, east, north, w, h),
    ) as dst:
        dst.write(data)
    return str(path)


def reference_pixels(s, z: int, x: int, y: int) -> np.ndarray:
    """Which store pixel each pixel of tile z/x/y shows, by rasterio.warp.reproject (nearest) of a
    raster of pixel numbers: (256, 256), -1 off the store."""
    import rasterio.warp
    from rasterio.transform import from_bounds

    half = np.pi * 6378137.0
    span = 2 * half / 2**z
    left, top = -half + x * span, half - y * span
    numbers = np.arange(s.grid.height * s.grid.width, dtype=np.int32).reshape(
        s.grid.height, s.grid.width
    )
    out = np.full((256, 256), -1, dtype=np.int32)
    rasterio.warp.reproject(
        numbers,
        out,
        src_transform=s.grid.transform,
        src_crs=s.grid.crs,
        src_nodata=-1,
        dst_transform=from_bounds(left, top - span, left + span, top, 256, 256),
        dst_crs="EPSG:3857",
        dst_nodata=-1,
        resampling=rasterio.warp.Resampling.nearest,
    )
    return out


def get_tile(url: str, token: str, path: str):
    """(status, RGBA array or None) of one of the page's tiles, fetched as the page does."""
    import io
    import urllib.request

    from PIL import Image

    request = urllib.request.Request(url.rstrip("/") + path, headers={"X-EFM-Token": token})
    with urllib.request.urlopen(request, timeout=30) as res:
        body = res.read()
        return res.status, (
            np.array(Image.open(io.BytesIO(body)).convert("RGBA")) if body else None
        )


def test_points_a_polygon_and_suggestions_over_imagery_give_the_knn_and_save_what_sample_reads(
    synthetic, browser, tmp_path
):
    import pyproj
    import shapely
    from sklearn.neighbors import KNeighborsClassifier

    from transforms.learning import labelled_points, sampling
    from transforms.storage import readers

    s, t = synthetic, 0
    output = tmp_path / "points.geojson"
    tiles_server = tile_server()
    cog = rgb_cog(tmp_path / "rgb.tif", s)
    basemap = tiles_server.origin + "/{z}/{x}/{y}.png"
    proc, url, lines = start_label(
        "--embeddings",
        s.path,
        "--output",
        str(output),
        "--classes",
        ",".join(CLASSES),
        "--year",
        str(YEAR),
        "--basemap",
        basemap,
        "--image",
        cog,
    )
    to_lonlat = pyproj.Transformer.from_crs(s.grid.crs, "EPSG:4326", always_xy=True)

    def lonlat(row, col):  # the centre of store pixel (row, col), from the store's grid (pyproj)
        return to_lonlat.transform(*store_factory.pixel_centre(s, row, col))

    try:
        browser.get(url)
        token = browser.execute_script(
            "return document.querySelector('meta[name=efm-token]').content"
        )
        clon, clat = lonlat(s.grid.height // 2, s.grid.width // 2)
        browser.execute_script(
            "efmLabel.map.setView([arguments[1], arguments[0]], 14.5, {animate: false});",
            clon,
            clat,
        )
        wait_for(browser, "efmLabel.idle() && efmLabel.map.getZoom() === 14.5")
        shown = browser.execute_script(
            "return Array.from(document.querySelectorAll('.layer-row')).filter(r => r.querySelector('input').checked).map(r => r.dataset.layer)"
        )
        assert shown == [
            "basemap",
            "image",
            "preview",
        ]  # over imagery: the false colour starts hidden
        rng = np.random.default_rng(1)
        clicked = [(r, c, 0) for r, c in pick_pixels(s, t, 0, 3, rng)] + [
            (r, c, 1) for r, c in pick_pixels(s, t, 1, 3, rng)
        ]
        for i, (row, col, k) in enumerate(clicked):
            if i == 3:  # the image alone under the clicks from here on
                browser.find_element("id", "layer-basemap").click()
            pick_class(browser, CLASSES[k])
            click_lonlat(browser, *lonlat(row, col))
            wait_for(browser, f"efmLabel.idle() && efmLabel.state.points.length === {i + 1}")
        wait_for(
            browser,
            "efmLabel.idle() && efmLabel.state.k !== null && efmLabel.state.timings.length > 0",
        )
        state = browser.execute_script(
            "return {points: efmLabel.state.points, rev: efmLabel.state.rev}"
        )
        # the page painted the preview's tiles (not only fetched them)
        painted = browser.execute_script(
            "let n = 0; document.querySelectorAll('.leaflet-layer').forEach((l) => {"
            " if (l.style.zIndex !== '4') return; l.querySelectorAll('canvas').forEach((c) => {"
            " const d = c.getContext('2d').getImageData(0, 0, 256, 256).data;"
            " for (let i = 3; i < d.length; i += 4) if (d[i]) n++; }); }); return n;"
        )
        assert painted > 50_000, painted
        assert sorted(
            (p["row"], p["col"], CLASSES.index(p["label"])) for p in state["points"]
        ) == sorted(clicked)

        # the preview's tiles: scikit-learn's k-NN on the clicked pixels' embeddings, predicted on
        # the store pixels an independent reprojection (rasterio.warp.reproject) puts under the tile
        X = np.stack([s.values[t, r, c] for r, c, _ in clicked])
        y = np.array([k for _, _, k in clicked])
        model = KNeighborsClassifier(n_neighbors=min(5, *np.bincount(y))).fit(X, y)
        legend = dict(
            browser.execute_script(
                "return Array.from(document.querySelectorAll('.class-row')).map(r => [r.dataset.label, r.querySelector('.swatch').dataset.color]);"
            )
        )
        colours = {
            CLASSES.index(n): tuple(int(c[i : i + 2], 16) for i in (1, 3, 5))
            for n, c in legend.items()
        }
        checked = 0
        for z, tx, ty in browser.execute_script(
            "const m = efmLabel.map, z = 15, g = m.getBounds(), out = [];"
            "const b = L.bounds(m.project(g.getNorthWest(), z), m.project(g.getSouthEast(), z));"
            "for (let x = Math.floor(b.min.x / 256); x <= Math.floor(b.max.x / 256); x++)"
            " for (let y = Math.floor(b.min.y / 256); y <= Math.floor(b.max.y / 256); y++) out.push([z, x, y]);"
            "return out;"
        ):
            ref = reference_pixels(s, z, tx, ty)
            status, rgba = get_tile(url, token, f"/api/tile/preview/{z}/{tx}/{ty}.png")
            if status == 204:
                assert (ref < 0).all()
                continue
            flat = s.values[t].reshape(-1, s.values.shape[-1])
            has = (ref >= 0) & ~np.isnan(flat[np.maximum(ref, 0)]).any(axis=-1)
            expected = np.full(ref.shape, -1)
            expected[has] = model.predict(flat[ref[has]])
            got = np.full(ref.shape, -1)
            for k, rgb in colours.items():
                got[(rgba[..., 3] == 255) & np.all(rgba[..., :3] == rgb, axis=-1)] = k
            agree = (got == expected).mean()
            assert agree > 0.995, (
                z,
                tx,
                ty,
                agree,
            )  # GDAL's nearest rounds a pixel centre on an edge its own way
            checked += has.sum()
        assert checked > 30_000

        # a polygon of class "forest", drawn with the map's polygon tool (real clicks), over the image
        pick_class(browser, "forest")
        block = pick_pixels(s, t, 1, 1, rng, margin=6)[0]
        corners = [
            (block[0] - 5, block[1] - 5),
            (block[0] - 5, block[1] + 5),
            (block[0] + 5, block[1] + 6),
            (block[0] + 6, block[1] - 4),
        ]
        browser.find_element("css selector", ".leaflet-pm-icon-polygon").click()
        for r, c in corners + corners[:1]:
            click_lonlat(browser, *lonlat(r, c))
            time.sleep(0.2)
        wait_for(
            browser,
            "efmLabel.idle() && efmLabel.state.polygons.length === 1 && efmLabel.state.polygons[0].efm.sampled",
        )
        # the suggestions: the most uncertain pixels of the view, spread out; one accepted as a click
        browser.find_element("id", "suggest").click()
        wait_for(browser, "efmLabel.idle() && efmLabel.state.suggestions.length > 0")
        wait_for(
            browser, "document.getElementById('cv').textContent.startsWith('spatial CV accuracy')"
        )
        screenshot = os.environ.get("EFM_LABEL_SCREENSHOT")
        if screenshot:  # the README's picture: a polygon over the image, the preview, suggestions
            browser.save_screenshot(screenshot)
        suggestions = browser.execute_script("return efmLabel.state.suggestions")
        first = suggestions[0]
        pick_class(browser, "water")
        n_before = len(clicked)
        click_lonlat(browser, *first["lonlat"])
        wait_for(browser, f"efmLabel.idle() && efmLabel.state.points.length === {n_before + 1}")
        accepted = browser.execute_script("return efmLabel.state.points.at(-1)")
        assert (accepted["row"], accepted["col"], accepted["label"]) == (
            first["row"],
            first["col"],
            "water",
        )

        browser.find_element("id", "save").click()
        wait_for(browser, "document.getElementById('saved').textContent.startsWith('saved')")
        # nothing came from outside this machine but the basemap the user named
        resources = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert all(r.startswith((url.rstrip("/"), tiles_server.origin)) for r in resources), (
            resources
        )
        assert any(r.startswith(tiles_server.origin) for r in resources) and tiles_server.log
        csp = [
            e["message"] for e in browser.get_log("browser") if "Content Security" in e["message"]
        ]
        assert not csp, csp
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        tiles_server.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)

    saved = json.loads(output.read_text())
    outline = [f for f in saved["features"] if f["properties"].get("efm_role") == "polygon"]
    assert len(outline) == 1 and outline[0]["properties"]["label"] == "forest"
    # the polygon's points: every store pixel whose centre is inside the ring drawn (shapely, here)
    ring = np.array(outline[0]["properties"]["drawn"])
    from_lonlat = pyproj.Transformer.from_crs("EPSG:4326", s.grid.crs, always_xy=True)
    shape = shapely.Polygon(np.column_stack(from_lonlat.transform(ring[:, 0], ring[:, 1])))
    rr, cc = np.mgrid[0 : s.grid.height, 0 : s.grid.width]
    inside = shapely.contains_xy(shape, *store_factory.pixel_centre(s, rr, cc))
    # as `efm sample --label-column label`
    points = labelled_points.read_points(str(output), "label")
    rows, cols = sampling.to_pixels(readers.store_info(s.path), points)
    got = sorted(zip(rows.tolist(), cols.tolist(), [str(v) for v in points.labels]))
    want = sorted(
        [(r, c, CLASSES[k]) for r, c, k in clicked]
        + [(first["row"], first["col"], "water")]
        + [(int(r), int(c), "forest") for r, c in zip(*np.nonzero(inside))]
    )
    assert got == want
    # and their coordinates are the pixel centres (pyproj)
    for x, y_, r, c in zip(points.x, points.y, rows, cols):
        lon, lat = lonlat(int(r), int(c))
        assert abs(x - lon) < 1e-9 and abs(y_ - lat) < 1e-9


EVIL_PAGE = """<!doctype html><html><body><script>
// What any page open in the user's browser could try against efm label on TARGET.
const target = TARGET, results = {};
const attempt = (name, p) => p.then((r) => r.type === "opaque" ? (results[name] = "sent (opaque)")
                                    : r.text().then((t) => { results[name] = "read " + r.status + " " + t; }),
                                    (e) => { results[name] = "failed " + e; });
Promise.all([
  attempt("no-cors text/plain save", fetch(target + "/api/save", {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body: '{"points":[]}'})),
  attempt("json save with a guessed token", fetch(target + "/api/save", {method: "POST",
      headers: {"Content-Type": "application/json", "X-EFM-Token": "guess"}, body: '{"points":[]}'})),
  attempt("read the page for its token", fetch(target + "/")),
  attempt("read the points", fetch(target + "/api/info")),
]).then(() => { window.results = results; });
</script></body></html>"""


def test_another_page_in_the_browser_cannot_save_or_read(synthetic, browser, tmp_path):
    """A page of another origin (another port of 127.0.0.1), and the same attacker after DNS
    rebinding (evil.example resolving to 127.0.0.1: the browser then calls it same-origin), try
    to overwrite the saved points and to read the page's token, in real Chromium; the file's
    bytes stay the same."""
    import http.server
    import urllib.request

    from label_page import server as serverlib
    from label_page.view import StoreView
    from transforms.storage import readers

    output = tmp_path / "points.geojson"
    session = serverlib.Session(
        StoreView(readers.store_info(synthetic.path), YEAR),
        list(CLASSES),
        [],
        str(output),
        overwrite=False,
        rgb=None,
        meta={},
    )
    label = serve_in_background(serverlib.make_server(session, 0))
    port = label.server_address[1]

    class Evil(http.server.BaseHTTPRequestHandler):
        target = ""

        def do_GET(self):
            body = EVIL_PAGE.replace("TARGET", json.dumps(self.target)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    evil = serve_in_background(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil))
    try:
        points = [{"id": "c1", "label": "water", "row": 5, "col": 6}]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/save",
            data=json.dumps({"points": points}).encode(),
            headers={"Content-Type": "application/json", "X-EFM-Token": label.token},
        )
        with urllib.request.urlopen(request) as res:
            assert res.status == 200
        before = output.read_bytes()

        # 1. another origin on this machine (a page of another local server)
        Evil.target = f"http://127.0.0.1:{port}"
        browser.get(f"http://127.0.0.1:{evil.server_address[1]}/")
        results = wait_results(browser)
        assert output.read_bytes() == before, results
        assert not any(label.token in r for r in results.values()), results
        assert all(r.startswith(("failed", "sent (opaque)")) for r in results.values()), results

        # 2. DNS rebinding: the attacker's own name now points at efm label's port
        browser.get(f"http://{EVIL_HOST}:{port}/")
        assert label.token not in browser.page_source and "Host must be" in browser.page_source
        Evil.target = ""  # the same script, now same-origin with the label server's port
        browser.execute_script(
            EVIL_PAGE.split("<script>")[1].split("</script>")[0].replace("TARGET", '""')
        )
        results = wait_results(browser)
        assert output.read_bytes() == before, results
        assert all("Host must be" in r for r in results.values() if r.startswith("read")), results
        assert not any(label.token in r for r in results.values()), results
    finally:
        for httpd in (label, evil):
            httpd.shutdown()
            httpd.server_close()


def wait_results(driver, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = driver.execute_script("return window.results || null")
        if got is not None:
            driver.execute_script("window.results = null")
            return got
        time.sleep(0.05)
    raise AssertionError("the attacking page did not finish")
