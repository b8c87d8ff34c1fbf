"""`efm label` without a browser: bad input (one line, exit 2, nothing written), windows read at a
stride from only the chunks they touch, the preview on a gs:// store through the HTTP API, and
--points read and written back unchanged. The page itself: tests/test_label_browser.py."""

from __future__ import annotations

import base64
import json
import pathlib
import socket
import urllib.request

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from label_page import points as pointlib
from label_page import server as serverlib
from label_page.view import NO_CLASS, StoreView, ZoomIn
from pipelines import cli, label
from tests.helpers import store_factory
from tests.helpers.label import lonlat_of, one_error_line
from tests.helpers.local_servers import serve_in_background
from transforms.learning import labelled_points, sampling
from transforms.storage import readers

YEAR = 2021


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return store_factory.make_store(
        str(tmp_path_factory.mktemp("label") / "emb.zarr"), years=(YEAR, 2022)
    )


def points_file(path, labels, lonlat, extra_top=None) -> str:
    collection = {
        "type": "FeatureCollection",
        **(extra_top or {}),
        "features": [
            {
                "type": "Feature",
                "properties": {"label": lab},
                "geometry": {"type": "Point", "coordinates": list(xy)},
            }
            for lab, xy in zip(labels, lonlat)
        ],
    }
    path.write_text(json.dumps(collection))
    return str(path)


# ---------------------------------------------------------------- bad input


def test_a_port_in_use_is_one_line_and_nothing_is_written(synthetic, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tmp_path / "p.geojson"
        assert (
            cli.main(
                [
                    "label",
                    "--embeddings",
                    synthetic.path,
                    "--output",
                    str(out),
                    "--classes",
                    "a,b",
                    "--tuning",
                    f"port={port}",
                ]
            )
            == 2
        )
    assert "in use" in one_error_line(capsys, "--tuning: port")
    assert not out.exists()


@pytest.mark.parametrize(
    "case",
    [
        "not-a-store",
        "classes-twice",
        "labels-not-in-classes",
        "no-label-column",
        "not-geojson",
        "year",
        "rgb",
        "colors",
        "output-not-efms",
        "output-efms-without-overwrite",
        "output-is-the-points",
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(synthetic, tmp_path, capsys, case):
    out = tmp_path / "p.geojson"
    args = [
        "--embeddings",
        synthetic.path,
        "--output",
        str(out),
        "--classes",
        "water,forest",
        "--tuning",
        "port=0",
    ]
    flag = {
        "not-a-store": "--embeddings",
        "classes-twice": "--classes",
        "labels-not-in-classes": "--points",
        "no-label-column": "--points",
        "not-geojson": "--output",
        "year": "--year",
        "rgb": "--tuning: rgb",
        "colors": "--tuning: colors",
        "output-not-efms": "--output",
        "output-efms-without-overwrite": "--output",
        "output-is-the-points": "--output",
    }[case]
    before = None
    if case == "not-a-store":
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "readme.txt").write_text("not a store")
        args[1] = str(tmp_path / "folder")
    elif case == "classes-twice":
        args[5] = "water,forest,water"
    elif case in ("labels-not-in-classes", "no-label-column"):
        pts = points_file(
            tmp_path / "in.geojson", ["water", "crops"], [lonlat_of(synthetic, 3, 3)] * 2
        )
        if case == "no-label-column":
            pts = str(tmp_path / "in.geojson")
            (tmp_path / "in.geojson").write_text(
                json.dumps(
                    {
                        "type": "FeatureCollection",
                        "features": [
                            {
                                "type": "Feature",
                                "properties": {"class": "water"},
                                "geometry": {
                                    "type": "Point",
                                    "coordinates": list(lonlat_of(synthetic, 3, 3)),
                                },
                            }
                        ],
                    }
                )
            )
        args += ["--points", pts]
    elif case == "not-geojson":
        out = tmp_path / "p.csv"
        args[3] = str(out)
    elif case == "year":
        args += ["--year", "2019"]
    elif case == "rgb":
        args += ["--tuning", "rgb=A01;A02"]
    elif case == "colors":
        args += ["--tuning", "colors=crops=red"]
    elif case == "output-not-efms":
        out.write_text('{"type": "FeatureCollection", "features": []}')
        before = out.read_text()
    elif case == "output-efms-without-overwrite":
        out.write_text(
            json.dumps({"type": "FeatureCollection", "efm_product": "points", "features": []})
        )
        before = out.read_text()
    elif case == "output-is-the-points":
        pts = points_file(out, ["water"], [lonlat_of(synthetic, 3, 3)], {"efm_product": "points"})
        before = out.read_text()
        args += ["--points", pts, "--overwrite"]
    assert label.run(args) == 2
    line = one_error_line(capsys, flag)
    if case == "labels-not-in-classes":
        assert "crops" in line
    if before is None:
        assert not out.exists()
    else:
        assert out.read_text() == before


# ---------------------------------------------------------------- reading windows


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_a_window_is_read_at_its_stride_from_only_the_chunks_it_touches(tmp_path, dtype):
    s = store_factory.make_store(
        str(tmp_path / "emb.zarr"), years=(YEAR,), height=300, width=260, chunk_size=64, dtype=dtype
    )
    view = StoreView(
        readers.store_info(s.path), YEAR
    )  # its colour sample reads chunks all over the store: before the damage below
    w = view.clamp(
        70, 100, 140, 90, 3
    )  # rows 70..209, cols 100..189: chunk rows 1-3, chunk cols 1-2
    # every chunk outside the window becomes garbage: reading one would fail to decode
    damaged = 0
    for shard in pathlib.Path(s.path, "embedding", "c").glob("*/*/*/*"):  # c/<t>/<band>/<y>/<x>
        row, col = int(shard.parent.name), int(shard.name)
        if not (1 <= row <= 3 and 1 <= col <= 2):
            shard.write_bytes(b"not a chunk")
            damaged += 1
    assert damaged > 0
    got = view.read(w)
    np.testing.assert_array_equal(got, s.values[0, 70:210:3, 100:190:3])
    assert got.shape[:2] == w.shape == (47, 30)


def test_a_view_touching_too_many_chunks_asks_to_zoom_in_and_the_stride_keeps_the_pixel_cap(
    synthetic, monkeypatch
):
    view = StoreView(
        readers.store_info(synthetic.path), YEAR, max_decoded_bytes=3 * 128 * 128 * 64 * 4
    )
    with pytest.raises(ZoomIn, match="zoom in: this view touches 9 chunks, more than the 3"):
        view.read(view.clamp(0, 0, 300, 260, 1))
    assert view.read(view.clamp(0, 0, 128, 256, 1)).shape == (128, 256, 64)  # two chunks
    monkeypatch.setattr("label_page.view.MAX_READ_PIXELS", 10_000)
    w = view.clamp(
        -50, -50, 1000, 1000, 1
    )  # clamped to the store, stride raised until <= 10,000 px
    assert (
        (w.row0, w.col0, w.rows, w.cols) == (0, 0, 300, 260)
        and w.shape[0] * w.shape[1] <= 10_000
        and w.step == 3
    )


# ---------------------------------------------------------------- the API on a gs:// store


SERVED: dict = {}  # url -> its server (for its token)


def serve(session):
    httpd = serve_in_background(serverlib.make_server(session, 0))
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    SERVED[url] = httpd
    return httpd, url


def call(url, path, body=None, token=None):
    """The page's request: the run's token (serve() keeps it on the URL's server), JSON bodies."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"X-EFM-Token": token or SERVED[url].token}
    if data is not None:
        headers["Content-Type"] = "application/json"
    with urllib.request.urlopen(
        urllib.request.Request(
            url + path, data=data, headers=headers, method="GET" if data is None else "POST"
        )
    ) as res:
        return res.headers, res.read()


def test_the_api_on_a_gcs_store_previews_the_knn_and_saves_what_sample_reads(
    synthetic, gcs, gcs_bucket, tmp_path
):
    gcs.fs.put(synthetic.path, f"{gcs_bucket[5:]}/emb.zarr", recursive=True)
    path = f"{gcs_bucket}/emb.zarr"
    info = readers.store_info(path)
    out = f"{gcs_bucket}/labels/points.geojson"  # the output in the bucket too
    session = serverlib.Session(
        StoreView(info, YEAR), ["water", "forest"], [], out, overwrite=False, rgb=None, meta={}
    )
    httpd, url = serve(session)
    try:
        headers, png = call(
            url, "/api/image?row0=10&col0=20&rows=200&cols=150&step=2&bands=A01,A16,A09"
        )
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and json.loads(headers["X-EFM-Window"]) == {
            "row0": 10,
            "col0": 20,
            "rows": 200,
            "cols": 150,
            "step": 2,
        }
        labels = synthetic.labels[0]
        picks = [
            (r, c)
            for r, c in [(40, 40), (45, 50), (60, 30), (200, 200), (150, 120), (100, 10)]
            if labels[r, c] >= 0
        ]
        pts = [
            {
                "id": f"c{i}",
                "label": "water" if labels[r, c] % 2 == 0 else "forest",
                "row": r,
                "col": c,
            }
            for i, (r, c) in enumerate(picks)
        ]
        assert len({p["label"] for p in pts}) == 2
        window = {"row0": 10, "col0": 20, "rows": 200, "cols": 150, "step": 2}
        answer = json.loads(call(url, "/api/preview", {"window": window, "points": pts})[1])
        got = np.frombuffer(base64.b64decode(answer["classes"]), dtype=np.uint8).reshape(
            answer["height"], answer["width"]
        )
        X = np.stack([synthetic.values[0, p["row"], p["col"]] for p in pts])
        y = [["water", "forest"].index(p["label"]) for p in pts]
        assert answer["k"] == min(5, *np.bincount(y))
        model = KNeighborsClassifier(n_neighbors=answer["k"]).fit(X, y)
        values = synthetic.values[0, 10:210:2, 20:170:2]
        valid = ~np.isnan(values).any(axis=-1)
        expected = np.full(valid.shape, NO_CLASS, dtype=np.uint8)
        expected[valid] = model.predict(values[valid])
        np.testing.assert_array_equal(got, expected)
        assert json.loads(call(url, "/api/save", {"points": pts})[1]) == {
            "path": out,
            "count": len(pts),
            "polygons": 0,
        }
    finally:
        httpd.shutdown()
        httpd.server_close()
    local = tmp_path / "points.geojson"
    local.write_bytes(gcs.fs.cat(out[5:]))
    read = labelled_points.read_points(str(local), "label")
    rows, cols = sampling.to_pixels(info, read)
    assert sorted(zip(rows.tolist(), cols.tolist(), read.labels.tolist())) == sorted(
        (p["row"], p["col"], p["label"]) for p in pts
    )


# ---------------------------------------------------------------- --points


def test_loaded_points_are_written_back_unchanged_and_save_never_replaces_a_foreign_file(
    synthetic, tmp_path
):
    info = readers.store_info(synthetic.path)
    inside, outside = (
        lonlat_of(synthetic, 12.3, 45.2),
        (10.0, 10.0),
    )  # not a pixel centre; far outside the store
    given = points_file(tmp_path / "given.geojson", ["forest", "water"], [inside, outside])
    loaded, classes = pointlib.load(given, info, [])
    assert classes == ["forest", "water"]  # without --classes: the file's labels
    assert [(p.row, p.col) for p in loaded] == [(12, 45), (None, None)]
    out = tmp_path / "out.geojson"
    session = serverlib.Session(
        StoreView(info, YEAR), classes, loaded, str(out), overwrite=False, rgb=None, meta={}
    )
    page_points = session.info()["points"] + [{"id": "c1", "label": "water", "row": 100, "col": 7}]
    session.save({"points": page_points})
    saved = json.loads(out.read_text())
    coords = [tuple(f["geometry"]["coordinates"]) for f in saved["features"]]
    assert coords[:2] == [inside, outside]  # exactly as given, bit for bit
    assert np.allclose(coords[2], lonlat_of(synthetic, 100, 7), rtol=0, atol=1e-9)
    session.save({"points": page_points[:1]})  # a second Save replaces the file this session wrote
    assert len(json.loads(out.read_text())["features"]) == 1
    out.write_text("someone else's notes")
    with pytest.raises(serverlib.BadRequest, match="changed by someone else"):
        session.save({"points": page_points})
    assert out.read_text() == "someone else's notes"


# ---------------------------------------------------------------- the preview's k-NN


@pytest.mark.parametrize("n_points", [3, 7, 12, 90])  # 90: the partition path (many points)
def test_the_fast_knn_equals_scikit_learns_predict_ties_included(n_points):
    """The preview's k-NN (a float32 product, scikit-learn where float32 could pick another neighbour
    set) equals KNeighborsClassifier.predict, on int8-quantised embeddings with exact ties: training
    points repeated with another label, and pixels equal to training points."""
    from label_page.view import knn_predict
    from transforms.core import quantize

    rng = np.random.default_rng(n_points)
    centres = rng.normal(size=(3, 64))
    pixels = centres[rng.integers(0, 3, 20_000)] + rng.normal(scale=0.6, size=(20_000, 64))
    pixels /= np.linalg.norm(pixels, axis=1, keepdims=True)
    pixels = quantize.dequantize(
        quantize.quantize(pixels)
    )  # values on the int8 grid, as real stores hold
    train = pixels[rng.choice(len(pixels), n_points, replace=False)]
    labels = rng.integers(0, 3, n_points)
    labels[:3] = [0, 1, 2]
    if n_points > 5:
        train[-1], labels[-1] = (
            train[0],
            (labels[0] + 1) % 3,
        )  # the same vector under two labels: tied distances
    pixels[:50] = train[rng.integers(0, n_points, 50)]  # pixels at distance 0 from a point
    model = KNeighborsClassifier(n_neighbors=min(5, n_points)).fit(train, labels)
    np.testing.assert_array_equal(knn_predict(model, pixels), model.predict(pixels))
