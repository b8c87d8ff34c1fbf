"""efm.label (issue 19 item 6): the labelling page served from a notebook's kernel.

Without a browser: points and a polygon posted to the server the way the page posts them (its
HTTP API, with the token read from the served page) come back from `Labeller.points` as pixel
centres (pyproj and shapely here, from the store's grid) with their classes, and `efm.sample`
takes them; `.close()` frees the port; bad input is one line naming the parameter.
In a browser: docs/notebook.ipynb runs cell by cell in a real kernel (nbclient); the `efm.label`
cell's output (the IFrame) is shown by a page of another local origin, as Jupyter shows it, and
real headless Chromium clicks points and draws a polygon in it; the next cells get those points.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyproj
import pytest

import efm
from tests.helpers import store_factory
from tests.helpers.local_servers import OneBodyServer

YEAR = 2021
CLASSES = ["water", "forest"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return store_factory.make_store(
        str(tmp_path_factory.mktemp("nb-label") / "emb.zarr"), years=(YEAR, 2022)
    )


def lonlat(s, row, col):
    """The centre of store pixel (row, col) in EPSG:4326, from the store's grid (pyproj)."""
    to = pyproj.Transformer.from_crs(s.grid.crs, "EPSG:4326", always_xy=True)
    return to.transform(*store_factory.pixel_centre(s, row, col))


def token_of(url: str) -> str:
    """The run's token, read from the served page as the page's script reads it."""
    with urllib.request.urlopen(url, timeout=30) as res:
        page = res.read().decode()
    return page.split('name="efm-token" content="', 1)[1].split('"', 1)[0]


def post(url: str, path: str, body: dict, token: str) -> dict:
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-EFM-Token": token},
    )
    with urllib.request.urlopen(request, timeout=60) as res:
        return json.loads(res.read())


def test_points_and_a_polygon_set_through_the_page_s_api_come_back_as_a_geodataframe(
    synthetic, tmp_path
):
    import shapely

    s = synthetic
    ds = efm.open_embeddings(s.path).sel(time=slice(f"{YEAR}", f"{YEAR}"))  # the year shown
    clicked = [(40, 30, "water"), (200, 150, "forest"), (250, 20, "forest")]
    with efm.label(ds, classes=CLASSES, output=tmp_path / "p.geojson") as lab:
        assert lab._session.view.year == YEAR
        assert lab.points.empty and list(lab.points.columns) == ["label", "polygon", "geometry"]
        token = token_of(lab.url)
        # a point is placed where /api/locate says the clicked place is, as the page does
        placed = []
        for i, (row, col, name) in enumerate(clicked):
            got = post(lab.url, "/api/locate", {"lonlat": list(lonlat(s, row, col))}, token)
            assert (got["row"], got["col"]) == (row, col)
            placed.append({"id": f"c{i}", "label": name, "row": row, "col": col})
        # (row, col) of the store, off the pixel centres (none on an edge: no tie to break)
        corners = [(100.2, 100.3), (100.1, 112.35), (111.3, 115.2), (109.15, 98.4)]
        ring = [list(lonlat(s, r, c)) for r, c in corners + corners[:1]]
        post(
            lab.url,
            "/api/update",
            {"points": placed, "polygons": [{"id": "p1", "label": "forest", "ring": ring}]},
            token,
        )
        pts, polys = lab.points, lab.polygons
        table = efm.sample(ds, pts, label_column="label")
    assert pts.crs.to_epsg() == 4326 and polys.crs.to_epsg() == 4326
    # the polygon's points: every pixel whose centre is inside the ring (shapely, in the store's CRS)
    to_store = pyproj.Transformer.from_crs("EPSG:4326", s.grid.crs, always_xy=True)
    r = np.array(ring)
    shape = shapely.Polygon(np.column_stack(to_store.transform(r[:, 0], r[:, 1])))
    rr, cc = np.mgrid[90:125, 90:125]
    inside = shapely.contains_xy(shape, *store_factory.pixel_centre(s, rr, cc))
    want = [(*lonlat(s, row, col), name, None) for row, col, name in clicked] + [
        (*lonlat(s, int(a), int(b)), "forest", "p1") for a, b in zip(rr[inside], cc[inside])
    ]
    got = list(zip(pts.geometry.x, pts.geometry.y, pts["label"], pts["polygon"]))
    assert len(got) == len(want) == 3 + int(inside.sum()) and inside.sum() > 50
    key = lambda t: (round(t[0], 7), round(t[1], 7))  # noqa: E731
    for g, w in zip(sorted(got, key=key), sorted(want, key=key)):
        assert g[2:] == w[2:]
        assert abs(g[0] - w[0]) < 1e-9 and abs(g[1] - w[1]) < 1e-9
    assert list(polys["polygon"]) == ["p1"] and list(polys["label"]) == ["forest"]
    assert int(polys["pixels"][0]) == inside.sum() and not bool(polys["fixed"][0])
    # efm.sample takes them as they are: one row per point with data, at the right pixels
    ok = ~np.isnan(s.values[0][rr[inside], cc[inside]]).any(axis=-1)
    assert sorted(table["label"].value_counts().items()) == sorted(
        {"water": 1, "forest": 2 + int(ok.sum())}.items()
    )
    assert set(zip(table["pixel_y"], table["pixel_x"])) >= {(r_, c_) for r_, c_, _ in clicked}


def test_starting_points_from_a_geodataframe_in_another_crs_keep_their_place(synthetic):
    import geopandas as gpd

    s = synthetic
    xs, ys = store_factory.pixel_centre(s, np.array([10, 120, 5000]), np.array([12, 77, 9000]))
    start = gpd.GeoDataFrame(
        {"label": ["forest", "water", "water"], "n": [1, 2, 3]},
        geometry=gpd.points_from_xy(xs + 2.0, ys - 3.0),  # not on pixel centres
        crs=s.grid.crs,
    )  # the third point is outside the store: kept, as the page keeps it
    lab = efm.label(s.path, points=start, year=YEAR)
    try:
        assert lab.classes == ["forest", "water"]  # the frame's labels, sorted
        pts = lab.points
        lon, lat = pyproj.Transformer.from_crs(s.grid.crs, "EPSG:4326", always_xy=True).transform(
            xs + 2.0, ys - 3.0
        )
        assert list(pts["label"]) == ["forest", "water", "water"]
        assert np.allclose(pts.geometry.x, lon, atol=1e-9, rtol=0)
        assert np.allclose(pts.geometry.y, lat, atol=1e-9, rtol=0)
        # and an earlier Labeller's points start the next one
        again = efm.label(s.path, points=pts, year=YEAR)
        assert np.allclose(again.points.geometry.x, lon, atol=1e-9, rtol=0)
        again.close()
    finally:
        lab.close()


def test_close_frees_the_port_and_the_page_shows_in_an_iframe(synthetic):
    lab = efm.label(synthetic.path, classes=CLASSES)
    port = lab.port
    html = lab._repr_html_()
    assert f'<iframe src="http://127.0.0.1:{port}/"' in html
    assert f"http://127.0.0.1:{port}/" in repr(lab)
    # the page in an IFrame of a notebook on localhost (another site): served, framable by loopback
    # pages only; its API still refuses a cross-site call
    request = urllib.request.Request(
        lab.url, headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "iframe"}
    )
    with urllib.request.urlopen(request, timeout=30) as res:
        csp = res.headers["Content-Security-Policy"]
        assert res.status == 200 and res.headers["X-Frame-Options"] is None
    ancestors = csp.split("frame-ancestors ", 1)[1].split(";")[0].split()
    assert ancestors == [
        "'self'",
        "http://127.0.0.1:*",
        "http://localhost:*",
        "https://127.0.0.1:*",
        "https://localhost:*",
    ]
    token = token_of(lab.url)
    request = urllib.request.Request(
        lab.url + "api/info", headers={"X-EFM-Token": token, "Sec-Fetch-Site": "cross-site"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    lab.close()
    lab.close()  # twice is fine
    assert "closed" in repr(lab) and "<iframe" not in lab._repr_html_()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    with socket.socket() as again:  # the port is free: another server may listen there (with
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # SO_REUSEADDR, as HTTPServer)
        again.bind(("127.0.0.1", port))
        again.listen()


def test_efm_label_s_own_page_is_still_never_framed(synthetic, tmp_path):
    from label_page import server as serverlib
    from label_page.view import StoreView
    from transforms.storage import readers

    session = serverlib.Session(
        StoreView(readers.store_info(synthetic.path), YEAR),
        CLASSES,
        [],
        str(tmp_path / "p.geojson"),
        overwrite=False,
        rgb=None,
        meta={},
    )
    httpd = serverlib.make_server(session, 0)
    threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        with urllib.request.urlopen(url, timeout=30) as res:
            assert res.headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in res.headers["Content-Security-Policy"]
        request = urllib.request.Request(
            url, headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "iframe"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403
    finally:
        httpd.shutdown()
        httpd.server_close()


def bad_cases(s, tmp_path):
    import geopandas as gpd

    xs, ys = store_factory.pixel_centre(s, np.array([10]), np.array([12]))
    crops = gpd.GeoDataFrame(
        {"label": ["crops"]}, geometry=gpd.points_from_xy(xs, ys), crs=s.grid.crs
    )
    foreign = tmp_path / "foreign.geojson"
    foreign.write_text('{"type": "FeatureCollection", "features": []}')
    return {
        "class-empty": ({"classes": ["water", " "]}, "classes", "empty class name"),
        "class-twice": ({"classes": ["water", "water"]}, "classes", "given twice"),
        "class-not-a-list": ({"classes": 5}, "classes", "list of class names"),
        "class-empty-text": ({"classes": "water,,forest"}, "classes", "empty class name"),
        "points-unknown-class": (
            {"classes": CLASSES, "points": crops},
            "points",
            "labels not among",
        ),
        "points-not-a-frame": ({"points": [(1, 2)]}, "points", "GeoDataFrame"),
        "points-no-label": ({"points": crops.rename(columns={"label": "x"})}, "points", "'label'"),
        "basemap-no-y": ({"basemap": "https://t.example/{z}/{x}.png"}, "basemap", "{y}"),
        "year": ({"year": 2019}, "year", "no year 2019"),
        "port": ({"port": 70000}, "port", "0-65535"),
        "per-polygon": ({"points_per_polygon": -1}, "points_per_polygon", "0..1000"),
        "output-csv": ({"output": str(tmp_path / "x.csv")}, "output", "GeoJSON"),
        "output-foreign": ({"output": str(foreign)}, "output", "not an efm points file"),
        "ds-not-a-store": ({"ds": str(tmp_path)}, "ds", "cannot open"),
        "ds-a-number": ({"ds": 3}, "ds", "expected an embedding store"),
    }


CASES = [
    "class-empty", "class-twice", "class-not-a-list", "class-empty-text", "points-unknown-class",
    "points-not-a-frame", "points-no-label", "basemap-no-y", "year", "port", "per-polygon",
    "output-csv", "output-foreign", "ds-not-a-store", "ds-a-number",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_naming_the_parameter_and_nothing_starts(synthetic, tmp_path, case):
    kwargs, param, words = bad_cases(synthetic, tmp_path)[case]
    ds = kwargs.pop("ds", synthetic.path)
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(efm.InputError) as raised:
        efm.label(ds, **kwargs)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{param}: "), message
    assert words in message, message
    started = {t.name for t in threading.enumerate()} - before
    assert not any(name.startswith("efm-label") for name in started)
    if case == "output-foreign":
        assert (tmp_path / "foreign.geojson").read_text().endswith("[]}")


def test_a_refusal_leaves_no_temporary_output_folder(synthetic, tmp_path, monkeypatch):
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where mkdtemp makes efm-label-*
    for kwargs, param in (
        ({"image": str(tmp_path / "missing.tif")}, "image"),
        ({"points": str(tmp_path / "missing.geojson")}, "points"),
        ({"port": -1}, "port"),
    ):
        with pytest.raises(efm.InputError) as raised:
            efm.label(synthetic.path, classes=["water", "forest"], **kwargs)
        assert str(raised.value).startswith(f"{param}: ")
    assert list(temp.iterdir()) == []
    with efm.label(synthetic.path, classes=["water", "forest"]) as lab:  # the default output
        assert Path(lab.output).parent.parent == temp and not Path(lab.output).exists()


# ------------------------------------------------------------------ the notebook, in a browser


def notebook_host(html: str) -> OneBodyServer:
    """A page of another origin (http://localhost:PORT, as Jupyter serves a notebook) holding the
    `efm.label` cell's HTML output as it is."""
    body = f'<!doctype html><html><body style="margin: 0">{html}</body></html>'
    return OneBodyServer(body.encode(), "text/html; charset=utf-8", host="localhost")


def run_cell(client, nb, index: int) -> list:
    client.execute_cell(nb.cells[index], index)
    return nb.cells[index].outputs


def test_the_notebook_s_label_cell_returns_the_points_clicked_and_drawn_in_the_browser(
    tmp_path,
    monkeypatch,
    browser,
):
    import nbformat
    import shapely
    from nbclient import NotebookClient

    from tests.helpers.label_browser import click_lonlat, pick_class, wait_for

    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(REPO / "docs" / "notebook.ipynb", as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    at = next(i for i in code if "efm.label(" in nb.cells[i].source)
    after = next(i for i in code if i > at and "labeller.points" in nb.cells[i].source)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    host = None
    with client.setup_kernel():
        for i in code:
            if i > at:
                break
            run_cell(client, nb, i)
        html = next(o["data"]["text/html"] for o in nb.cells[at].outputs if "data" in o)
        url = html.split('<iframe src="', 1)[1].split('"', 1)[0]
        assert url.startswith("http://127.0.0.1:")
        # the store's grid as rioxarray reads it from the notebook's Dataset (pixel centres are
        # computed here from it, with pyproj)
        grid = json.loads(
            "".join(
                o.get("text", "")
                for o in run_cell_source(
                    client,
                    nb,
                    "print(json.dumps({'crs': ds.rio.crs.to_wkt(), 't': list(ds.rio.transform())[:6],"
                    " 'h': ds.sizes['y'], 'w': ds.sizes['x']}))",
                )
            )
        )
        start = len(json.loads(points_json(client, nb))["features"])
        to_lonlat = pyproj.Transformer.from_crs(grid["crs"], "EPSG:4326", always_xy=True)
        a, b, c, d, e, f = grid["t"]

        def centre(row, col):
            return to_lonlat.transform(
                a * (col + 0.5) + b * (row + 0.5) + c, d * (col + 0.5) + e * (row + 0.5) + f
            )

        host = notebook_host(html)
        try:
            browser.get(host.origin + "/")
            frame = browser.find_element("css selector", "iframe")
            # the IFrame at the top left of the host page: WebDriver's click coordinates and
            # the frame's own are then the same
            assert browser.execute_script(
                "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top];", frame
            ) == [0, 0]
            browser.switch_to.frame(frame)

            wait_for(browser, "efmLabel.idle() && efmLabel.state.info !== null")
            classes = browser.execute_script("return efmLabel.state.classes.map(c => c.name)")
            h, w = grid["h"], grid["w"]
            clon, clat = centre(h // 2, w // 2)
            browser.execute_script(
                "efmLabel.map.setView([arguments[1], arguments[0]], 16, {animate: false});",
                clon,
                clat,
            )
            wait_for(browser, "efmLabel.idle() && efmLabel.map.getZoom() === 16")
            n0 = browser.execute_script("return efmLabel.state.points.length")
            clicked = [(h // 2 - 7, w // 2 - 9, classes[0]), (h // 2 + 5, w // 2 + 11, classes[1])]
            for i, (row, col, name) in enumerate(clicked):
                pick_class(browser, name)
                click_lonlat(browser, *centre(row, col))
                wait_for(
                    browser, f"efmLabel.idle() && efmLabel.state.points.length === {n0 + i + 1}"
                )
            pick_class(browser, classes[1])
            corners = [(h // 2 - 4, w // 2 - 4), (h // 2 - 4, w // 2 + 4), (h // 2 + 4, w // 2 + 3)]
            browser.find_element("css selector", ".leaflet-pm-icon-polygon").click()
            for r, c_ in corners + corners[:1]:
                click_lonlat(browser, *centre(r, c_))
                time.sleep(0.2)
            wait_for(
                browser,
                "efmLabel.idle() && efmLabel.state.polygons.length === 1"
                " && efmLabel.state.polygons[0].efm.sampled",
            )
            drawn = browser.execute_script(
                "return efmLabel.state.polygons[0].getLatLngs()[0].map(p => [p.lng, p.lat])"
            )
        finally:
            browser.switch_to.default_content()
            host.close()
        # the cells after the map: they see what was set on it
        for i in code:
            if at < i <= after:
                run_cell(client, nb, i)
        got = json.loads(points_json(client, nb, "labelled"))["features"]
        run_cell_source(client, nb, "labeller.close()")
    assert len(got) > start
    mine = got[start:]  # the starting points first, then the page's (clicks, then the polygon's)
    for (row, col, name), feat in zip(clicked, mine):
        lon, lat = centre(row, col)
        assert feat["properties"]["label"] == name and feat["properties"]["polygon"] is None
        x, y = feat["geometry"]["coordinates"]
        sx, sy = pyproj.Transformer.from_crs("EPSG:4326", grid["crs"], always_xy=True).transform(
            x, y
        )
        at_pixel = ((sy - f) / e - 0.5, (sx - c) / a - 0.5)  # (row, col): a north-up grid
        assert np.allclose(at_pixel, (row, col), atol=1e-6), (at_pixel, row, col, x, y, lon, lat)
        assert abs(x - lon) < 1e-9 and abs(y - lat) < 1e-9
    sampled = mine[len(clicked) :]
    to_store = pyproj.Transformer.from_crs("EPSG:4326", grid["crs"], always_xy=True)
    ring = np.array(drawn)
    shape = shapely.Polygon(np.column_stack(to_store.transform(ring[:, 0], ring[:, 1])))
    rr, cc = np.mgrid[h // 2 - 8 : h // 2 + 9, w // 2 - 8 : w // 2 + 9]
    xs, ys = a * (cc + 0.5) + b * (rr + 0.5) + c, d * (cc + 0.5) + e * (rr + 0.5) + f
    inside = shapely.contains_xy(shape, xs, ys)
    want = sorted(
        (round(x, 8), round(y, 8)) for x, y in zip(*to_lonlat.transform(xs[inside], ys[inside]))
    )
    assert inside.sum() > 10
    assert (
        sorted(
            (round(ft["geometry"]["coordinates"][0], 8), round(ft["geometry"]["coordinates"][1], 8))
            for ft in sampled
        )
        == want
    )
    assert {ft["properties"]["label"] for ft in sampled} == {clicked[1][2]}
    # and efm.sample's table (the next cell) holds every one of them (one row per point and year)
    table_text = "".join(
        str(o.get("data", {}).get("text/plain", "")) for o in nb.cells[after].outputs
    )
    assert clicked[0][2] in table_text


@pytest.fixture
def browser(tmp_path):
    """Debian's headless Chromium as tests/test_label_browser.py starts it (same flags, same rule:
    missing is a failure, EFM_SKIP_BROWSER=1 skips)."""
    from tests.helpers.label_browser import (
        CHROMEDRIVER,
        CHROMIUM,
        CHROMIUM_FLAGS,
        browser_or_fail,
    )

    browser_or_fail()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def run_cell_source(client, nb, source: str) -> list:
    import nbformat

    cell = nbformat.v4.new_code_cell(source)
    nb.cells.append(cell)
    try:
        client.execute_cell(cell, len(nb.cells) - 1)
    finally:
        nb.cells.pop()
    return cell.outputs


def points_json(client, nb, name: str = "labeller.points") -> str:
    return "".join(
        o.get("text", "") for o in run_cell_source(client, nb, f"print({name}.to_json())")
    )
