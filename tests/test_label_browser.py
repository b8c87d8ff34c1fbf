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
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import store_factory

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,800",
    "--force-device-scale-factor=1",
)
YEAR = 2021
CLASSES = ("water", "forest")
EVIL_HOST = "evil.example"


def browser_or_fail():
    if os.environ.get("EFM_SKIP_BROWSER") == "1":
        pytest.skip("EFM_SKIP_BROWSER=1: the labelling page's browser test is skipped on purpose")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: run `sudo bash scripts/browser_env.sh` (Debian: apt-get install chromium "
            "chromium-driver), or set EFM_SKIP_BROWSER=1 to skip this test on purpose",
            pytrace=False,
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail(
            "selenium is not installed: pip install -c constraints.txt -e '.[test]'", pytrace=False
        )


@pytest.fixture
def synthetic(tmp_path):
    return store_factory.make_store(str(tmp_path / "emb.zarr"), years=(YEAR, 2022))


def start_label(*args, timeout: float = 120):
    """`efm label ... --port 0` as a process; returns (process, url, its later output lines) once it prints its URL."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.label", *args, "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(
        target=lambda: [*map(lines.put, proc.stdout), lines.put(None)], daemon=True
    ).start()  # None: the end
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if "open http://" in line:
            return proc, line.split("open ", 1)[1].split()[0], lines
    proc.kill()
    raise AssertionError("efm label did not print its URL:\n" + "".join(seen))


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


def wait_for(driver, script: str, timeout: float = 30):
    from selenium.common.exceptions import JavascriptException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if driver.execute_script("return typeof efmLabel !== 'undefined' && (" + script + ")"):
                return
        except JavascriptException:  # e.g. a state not there yet; the deadline decides
            pass
        time.sleep(0.05)
    status = driver.execute_script(
        "return document.getElementById('status').textContent + ' | ' + document.getElementById('message').textContent"
    )
    raise AssertionError(f"timed out waiting for {script}: the page says {status!r}")


def click_pixel(driver, row: int, col: int) -> None:
    """A real mouse click (WebDriver input actions) at the centre of store pixel (row, col)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    x, y = driver.execute_script(
        "const p = efmLabel.pixelToCanvas(arguments[0], arguments[1]), r = document.getElementById('map').getBoundingClientRect();"
        "return [r.left + p.x, r.top + p.y];",
        row,
        col,
    )
    builder = ActionBuilder(driver)
    builder.pointer_action.move_to_location(int(round(x)), int(round(y))).click()
    builder.perform()


def pick_class(driver, name: str) -> None:
    driver.find_element("css selector", f".class-row[data-label='{name}']").click()


def pick_pixels(s, t: int, truth: int, n: int, rng) -> list[tuple[int, int]]:
    """n pixels of the synthetic class `truth`, inside a block (not on its edge), with data."""
    labels = s.labels[t]
    inner = labels == truth
    inner[1:-1, 1:-1] &= (
        (labels[:-2, 1:-1] == truth)
        & (labels[2:, 1:-1] == truth)
        & (labels[1:-1, :-2] == truth)
        & (labels[1:-1, 2:] == truth)
    )
    rows, cols = np.nonzero(inner[1:-1, 1:-1])
    pick = rng.choice(len(rows), n, replace=False)
    return [(int(rows[i]) + 1, int(cols[i]) + 1) for i in pick]


def reference_preview(s, t: int, clicked: list[tuple[int, int, int]], window: dict) -> np.ndarray:
    """scikit-learn's k-NN on exactly the clicked pixels' embeddings, predicted on the window at its stride."""
    from sklearn.neighbors import KNeighborsClassifier

    X = np.stack([s.values[t, r, c] for r, c, _ in clicked])
    y = np.array([k for _, _, k in clicked])
    k = min(5, *np.bincount(y))  # 5, or the smallest class's count (as docs/label.md says)
    model = KNeighborsClassifier(n_neighbors=k).fit(X, y)
    w = window
    values = s.values[
        t,
        w["row0"] : w["row0"] + w["rows"] : w["step"],
        w["col0"] : w["col0"] + w["cols"] : w["step"],
    ]
    flat = values.reshape(-1, values.shape[-1])
    valid = ~np.isnan(flat).any(axis=1)
    expected = np.full(len(flat), 255, dtype=np.uint8)
    expected[valid] = model.predict(flat[valid])
    return expected.reshape(values.shape[:2])


def test_clicks_give_the_knn_preview_and_save_the_pixel_centres(synthetic, browser, tmp_path):
    import pyproj

    from transforms.learning import sampling
    from transforms.storage import readers

    s, t = synthetic, 0
    output = tmp_path / "points.geojson"
    proc, url, lines = start_label(
        "--embeddings",
        s.path,
        "--output",
        str(output),
        "--classes",
        ",".join(CLASSES),
        "--year",
        str(YEAR),
    )
    try:
        browser.get(url)
        wait_for(browser, "efmLabel.state.image !== null && efmLabel.idle()")
        rng = np.random.default_rng(1)
        clicked = [(r, c, 0) for r, c in pick_pixels(s, t, 0, 3, rng)] + [
            (r, c, 1) for r, c in pick_pixels(s, t, 1, 3, rng)
        ]
        for row, col, k in clicked:
            pick_class(browser, CLASSES[k])
            click_pixel(browser, row, col)
            wait_for(browser, "efmLabel.idle()")
        # a point clicked by mistake, then removed by clicking it again
        extra = pick_pixels(s, t, 2, 1, rng)[0]
        click_pixel(browser, *extra)
        wait_for(browser, f"efmLabel.idle() && efmLabel.state.points.length === {len(clicked) + 1}")
        click_pixel(browser, *extra)
        wait_for(
            browser,
            f"efmLabel.idle() && efmLabel.state.preview && efmLabel.state.preview.nPoints === {len(clicked)}",
        )

        state = browser.execute_script(
            "const S = efmLabel.state; return {points: S.points, timings: S.timings, "
            "preview: {win: S.preview.win, width: S.preview.width, height: S.preview.height, classes: Array.from(S.preview.classes)}};"
        )
        assert sorted(
            (p["row"], p["col"], CLASSES.index(p["label"])) for p in state["points"]
        ) == sorted(clicked)
        preview = state["preview"]
        got = np.array(preview["classes"], dtype=np.uint8).reshape(
            preview["height"], preview["width"]
        )
        expected = reference_preview(s, t, clicked, preview["win"])
        assert (
            preview["win"]["rows"] == s.grid.height and preview["win"]["cols"] == s.grid.width
        )  # the whole small store is in view
        assert got.shape == expected.shape and np.array_equal(got, expected)

        # what the page drew: the preview canvas' colours, mapped back through the legend's swatches
        legend = browser.execute_script(
            "return Array.from(document.querySelectorAll('.class-row')).map(r => [r.dataset.label, r.querySelector('.swatch').dataset.color]);"
        )
        colours = {
            tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)): CLASSES.index(name)
            for name, c in legend
        }
        rgba = np.array(
            browser.execute_script("return efmLabel.previewPixels();"), dtype=np.uint8
        ).reshape(got.shape + (4,))
        drawn = np.full(got.shape, 255, dtype=np.uint8)
        for colour, k in colours.items():
            drawn[(rgba[..., 3] == 255) & np.all(rgba[..., :3] == colour, axis=-1)] = k
        assert np.array_equal(drawn, expected)

        # the view follows the wheel and a drag; the preview follows the view (and stays scikit-learn's k-NN)
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

        canvas = browser.find_element("id", "map")
        for gesture in ("zoom in", "pan", "zoom out"):
            before = browser.execute_script("return efmLabel.state.preview.win")
            if gesture == "zoom in":
                ActionChains(browser).scroll_from_origin(
                    ScrollOrigin.from_element(canvas), 0, -400
                ).perform()
            elif gesture == "pan":
                ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(
                    120, 80
                ).release().perform()
            else:
                ActionChains(browser).scroll_from_origin(
                    ScrollOrigin.from_element(canvas), 0, 1600
                ).perform()
            wait_for(
                browser,
                "efmLabel.idle() && efmLabel.state.preview && JSON.stringify(efmLabel.state.preview.win) !== arguments[0]".replace(
                    "arguments[0]", json.dumps(json.dumps(before, separators=(",", ":")))
                ),
            )
            view = browser.execute_script(
                "const S = efmLabel.state; return {win: S.preview.win, width: S.preview.width, height: S.preview.height, "
                "classes: Array.from(S.preview.classes), points: S.points.length};"
            )
            assert view["points"] == len(clicked)  # a drag is not a click
            moved = np.array(view["classes"], dtype=np.uint8).reshape(view["height"], view["width"])
            np.testing.assert_array_equal(
                moved, reference_preview(s, t, clicked, view["win"]), err_msg=gesture
            )
            if gesture == "zoom in":
                assert view["win"]["rows"] < s.grid.height and view["win"]["cols"] < s.grid.width
            if gesture == "zoom out":
                assert view["win"]["step"] > 1

        timings = state["timings"]
        print(
            "\nclick-to-preview (ms, page-measured from the click event to the painted frame):",
            ", ".join(f"{x['ms']:.0f} (server {x['server_ms']:.0f})" for x in timings),
            f"on {got.size} px",
        )
        screenshot = os.environ.get("EFM_LABEL_SCREENSHOT")
        browser.save_screenshot(screenshot or str(tmp_path / "label.png"))

        browser.find_element("id", "save").click()
        wait_for(browser, "document.getElementById('saved').textContent.startsWith('saved')")
        # the page works under its Content-Security-Policy: the browser reported no violation
        csp = [
            e["message"] for e in browser.get_log("browser") if "Content Security" in e["message"]
        ]
        assert not csp, csp
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the way to stop it
        assert proc.wait(timeout=30) == 0
        said = "".join(iter(lambda: lines.get(timeout=10), None))
        assert f"efm label: stopped; {output} holds {len(clicked)} points (last Save)" in said, said
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)

    saved = json.loads(output.read_text())
    assert saved["efm_product"] == "points"
    points = sampling.read_points(
        str(output), "label"
    )  # efm sample's reader, as `efm sample --label-column label` calls it
    assert points.crs == "EPSG:4326"
    to_lonlat = pyproj.Transformer.from_crs(s.grid.crs, "EPSG:4326", always_xy=True)
    order = sorted(range(len(clicked)), key=lambda i: (points.labels[i], points.x[i]))
    want = sorted(
        (
            (CLASSES[k], *to_lonlat.transform(*store_factory.pixel_centre(s, r, c)))
            for r, c, k in clicked
        ),
        key=lambda p: (p[0], p[1]),
    )
    for i, (label, lon, lat) in zip(order, want):
        assert points.labels[i] == label
        assert abs(points.x[i] - lon) < 1e-9 and abs(points.y[i] - lat) < 1e-9
    rows, cols = sampling.to_pixels(readers.store_info(s.path), points)
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted((r, c) for r, c, _ in clicked)


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
    label = serverlib.make_server(session, 0)
    port = label.server_address[1]
    threading.Thread(
        target=label.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()

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

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
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
