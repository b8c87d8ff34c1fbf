"""`efm cluster` and `efm label` on stores in the field's layouts (issue 17, item 2): the public
AEF mosaic's (EPSG:4326, int8 signed_square, 64 bands) and TESSERA's zone group holding floats
(UTM 31N, 128 bands), built by tests/helpers/field_stores.py.

References are read with zarr/numpy straight from the arrays the test wrote (de-quantised here with
the published AEF formula), and fitted with scikit-learn here.
"""

from __future__ import annotations

import base64
import json
import urllib.request

import numpy as np
import pytest
import xarray as xr
import zarr
from sklearn.cluster import KMeans
from sklearn.neighbors import KNeighborsClassifier

from pipelines import classify as classify_cli
from pipelines import cluster as cluster_cli
from tests.helpers import field_stores
from tests.helpers.local_servers import serve_in_background
from tests.helpers.runners import FNAPI
from transforms.learning import models

K = 4
ROWS, COLS = slice(20, 100), slice(4050, 4150)  # the mosaic's data: across its shard edge (4096)


def _aef(codes: np.ndarray) -> np.ndarray:
    c = codes.astype(np.float64)
    values = ((c / 127.5) ** 2 * np.sign(c)).astype(np.float32)
    values[codes == -128] = np.nan
    return values


def _clustered(rng, shape, bands):
    """K well-separated unit directions plus a little noise, one cluster per pixel."""
    centres = rng.normal(size=(K, bands))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, K, size=shape)
    vectors = centres[labels] + rng.normal(scale=0.03, size=shape + (bands,))
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("field")
    rng = np.random.default_rng(21)
    mosaic = str(folder / "aef-mosaic.zarr")
    array = field_stores.aef_mosaic(mosaic, width=4200, height=120, years=(2024,))
    vectors = _clustered(rng, (80, 100), 64)
    codes = np.clip(np.rint(np.sign(vectors) * np.sqrt(np.abs(vectors)) * 127.5), -127, 127)
    codes = codes.astype(np.int8)
    codes[:6, :9] = -128  # no data in a corner
    array[0, :, ROWS, COLS] = np.moveaxis(codes, -1, 0)
    tessera = str(folder / "tessera.zarr")
    embeddings, _ = field_stores.tessera(
        tessera, 31, width=70, height=50, years=(2024,), dtype="float32"
    )
    floats = _clustered(rng, (50, 70), 128).astype(np.float32)
    floats[40:, 60:] = np.nan  # no data
    embeddings[0] = np.moveaxis(floats, -1, 0)
    return {"aef": mosaic, "tessera": f"{tessera}/utm31"}


def _source_values(store: str) -> np.ndarray:
    """(y, x, band) float32 of year 0, read with zarr from the stored array, NaN = no data."""
    array = zarr.open_array(f"{store}/embeddings", mode="r")
    raw = np.moveaxis(np.asarray(array[0]), 0, -1)
    return _aef(raw) if raw.dtype == np.int8 else raw.astype(np.float32)


@pytest.mark.parametrize("which", ["aef", "tessera"])
def test_cluster_equals_scikit_learns_kmeans_on_the_same_pixels(stores, tmp_path, which):
    """The sample size exceeds the valid pixels, so efm's sample is every valid pixel (in some
    order): its k-means (K, n_init=4, the seed) equals scikit-learn's fitted here on the pixels
    read with numpy, up to the clusters' numbering; the class map `efm classify` makes with the
    model equals scikit-learn's predict over the whole store, numbering matched."""
    store = stores[which]
    values = _source_values(store)
    flat = values.reshape(-1, values.shape[-1])
    valid = ~np.isnan(flat).any(axis=1)
    model_path = str(tmp_path / "km.skops")
    argv = [
        "--embeddings",
        store,
        "--clusters",
        str(K),
        "--tuning",
        f"sample_size={valid.sum() + 10}",
    ]
    assert cluster_cli.run(argv + ["--tuning", "seed=3", "--output", model_path] + FNAPI) == 0
    loaded = models.load_model(model_path)
    assert loaded.sidecar["metrics"]["sample_size"] == int(valid.sum())
    assert loaded.sidecar["n_features"] == values.shape[-1]
    reference = KMeans(n_clusters=K, n_init=4, random_state=3).fit(flat[valid].astype(np.float32))
    got = loaded.model.cluster_centers_
    # match the numbering: each of efm's centres to the reference's nearest (a permutation)
    distance = np.linalg.norm(got[:, None, :] - reference.cluster_centers_[None], axis=-1)
    match = distance.argmin(axis=1)
    assert sorted(match.tolist()) == list(range(K))
    np.testing.assert_allclose(got, reference.cluster_centers_[match], rtol=0, atol=1e-4)
    np.testing.assert_allclose(loaded.model.inertia_, reference.inertia_, rtol=1e-4)
    # the class map of the whole store
    out = str(tmp_path / "clusters.zarr")
    argv = ["--embeddings", store, "--model", model_path, "--output", out]
    assert classify_cli.run(argv + FNAPI) == 0
    classes = xr.open_zarr(out, mask_and_scale=False)["class"].isel(time=0).values.reshape(-1)
    to_efm = np.argsort(match)  # reference cluster j is efm's cluster to_efm[j]
    want = to_efm[reference.predict(flat[valid].astype(np.float32))]
    np.testing.assert_array_equal(classes[valid], want)
    assert (classes[~valid] == 255).all()


# ---------------------------------------------------------------- efm label's API on these stores


def _serve(session):
    from label_page import server as serverlib

    httpd = serve_in_background(serverlib.make_server(session, 0))
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def _call(httpd, url, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"X-EFM-Token": httpd.token}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(
        url + path, data=data, headers=headers, method="GET" if data is None else "POST"
    )
    with urllib.request.urlopen(request) as answer:
        return answer.headers, answer.read()


@pytest.mark.parametrize("which", ["aef", "tessera"])
def test_label_serves_the_store_and_its_clicks_read_the_source_pixels(stores, tmp_path, which):
    """The page's API over HTTP: /api/info gives the store's grid, /api/image a PNG of a window,
    and /api/preview -- the k-NN the page runs after each click -- equals scikit-learn's k-NN fitted
    on the clicked pixels' values read with numpy from the source array, over the window read so.
    The clicked pixels' embeddings (what the preview is fitted on) are the source's, bit for bit."""
    from label_page import server as serverlib
    from label_page.view import NO_CLASS, StoreView
    from transforms.storage import readers

    store = stores[which]
    values = _source_values(store)
    info = readers.store_info(store)
    view = StoreView(info, 2024)
    session = serverlib.Session(
        view,
        ["water", "forest"],
        [],
        str(tmp_path / "p.geojson"),
        overwrite=False,
        rgb=None,
        meta={},
    )
    httpd, url = _serve(session)
    try:
        grid = json.loads(_call(httpd, url, "/api/info")[1])
        assert grid["width"] == values.shape[1] and grid["height"] == values.shape[0]
        if which == "aef":
            row0, col0, rows, cols = ROWS.start, COLS.start, 80, 100
        else:
            row0, col0, rows, cols = 0, 0, 50, 70
        window = {"row0": row0, "col0": col0, "rows": rows, "cols": cols, "step": 1}
        query = "&".join(f"{k}={v}" for k, v in window.items())
        headers, png = _call(httpd, url, f"/api/image?{query}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        rng = np.random.default_rng(5)
        picks = [(row0 + int(r), col0 + int(c)) for r, c in rng.integers(10, [rows, cols], (8, 2))]
        picks = [p for p in picks if not np.isnan(values[p]).any()]
        points = [
            {"id": f"c{i}", "label": ["water", "forest"][i % 2], "row": r, "col": c}
            for i, (r, c) in enumerate(picks)
        ]
        answer = json.loads(
            _call(httpd, url, "/api/preview", {"window": window, "points": points})[1]
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    for r, c in picks:  # the clicked pixels' embeddings, as the session holds them
        np.testing.assert_array_equal(view.vector(r, c), values[r, c])
    got = np.frombuffer(base64.b64decode(answer["classes"]), dtype=np.uint8)
    got = got.reshape(answer["height"], answer["width"])
    labels = [i % 2 for i in range(len(picks))]
    knn = KNeighborsClassifier(n_neighbors=answer["k"]).fit(
        np.stack([values[p] for p in picks]), labels
    )
    window_values = values[row0 : row0 + rows, col0 : col0 + cols]
    valid = ~np.isnan(window_values).any(axis=-1)
    want = np.full(valid.shape, NO_CLASS, dtype=np.uint8)
    want[valid] = knn.predict(window_values[valid])
    np.testing.assert_array_equal(got, want)
