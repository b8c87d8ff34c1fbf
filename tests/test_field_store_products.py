"""Products straight from a store in the public AEF mosaic's layout (issue 17, item 2/3): the
API and the commands read it as it is, no copy step, and every value equals numpy on the same
slice of the codes the test wrote (de-quantised with the published formula, here in float64)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import efm
from pipelines import similarity as similarity_cli
from tests.helpers import field_stores
from tests.helpers.runners import FNAPI

YEARS = (2023, 2024)
WEST, NORTH, RES = -122.5, 38.0, 0.00009
ROWS, COLS = slice(100, 400), slice(3900, 4300)  # where the data is (across a shard edge)


def _values(codes):
    c = codes.astype(np.float64)
    values = ((c / 127.5) ** 2 * np.sign(c)).astype(np.float32)
    values[codes == -128] = np.nan
    return values


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pub") / "aef-mosaic.zarr")
    array = field_stores.aef_mosaic(path, width=4400, height=600, years=YEARS)
    rng = np.random.default_rng(3)
    codes = rng.integers(-127, 128, size=(len(YEARS), 64, 300, 400), dtype=np.int8)
    codes[:, :, :20, :30] = -128  # no data in a corner
    array[:, :, ROWS, COLS] = codes
    full = np.full((len(YEARS), 600, 4400, 64), -128, dtype=np.int8)  # the reference, (t, y, x, b)
    full[:, ROWS, COLS, :] = np.moveaxis(codes, 1, -1)
    return path, full


def _lonlat(row, col):
    return WEST + (col + 0.5) * RES, NORTH - (row + 0.5) * RES


def test_open_embeddings_reads_the_mosaic_as_it_is(mosaic):
    path, full = mosaic
    ds = efm.open_embeddings(path)
    assert ds["embedding"].dims == ("time", "y", "x", "band")
    assert ds.rio.crs.to_epsg() == 4326
    assert tuple(ds.rio.transform())[:6] == (RES, 0.0, WEST, 0.0, -RES, NORTH)
    assert [int(str(t)[:4]) for t in ds["time"].values] == list(YEARS)
    got = ds["embedding"].isel(time=1, y=slice(90, 160), x=slice(4050, 4150)).values
    np.testing.assert_array_equal(got, _values(full[1, 90:160, 4050:4150]))


def test_similarity_over_a_bbox_of_the_mosaic(mosaic, tmp_path):
    path, full = mosaic
    refs = [(150, 3950), (151, 3990), (300, 4200)]
    points = tmp_path / "refs.geojson"
    points.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"kind": "ref"},
                        "geometry": {"type": "Point", "coordinates": list(_lonlat(r, c))},
                    }
                    for r, c in refs
                ],
            }
        )
    )
    r0, r1, c0, c1 = 120, 380, 3950, 4250  # the bbox's pixels (edges inside pixels)
    w, n = _lonlat(r0, c0)
    e, s = _lonlat(r1 - 1, c1 - 1)
    bbox = f"{w - RES / 4},{s - RES / 4},{e + RES / 4},{n + RES / 4}"
    out = str(tmp_path / "sim.zarr")
    argv = ["--embeddings", path, "--points", str(points), "--bbox", bbox, "--output", out]
    assert similarity_cli.run(argv + FNAPI) == 0
    got = xr.open_zarr(out)
    values = _values(full)
    for t, year in enumerate(YEARS):
        mean = np.mean([values[t, r, c].astype(np.float64) for r, c in refs], axis=0)
        want = np.einsum("yxb,b->yx", values[t, r0:r1, c0:c1].astype(np.float64), mean)
        assert int(str(got["time"].values[t])[:4]) == year
        sim = got["similarity"].isel(time=t).values
        assert sim.shape == want.shape
        np.testing.assert_allclose(sim, want, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.fixture(scope="module")
def two_class_mosaic(tmp_path_factory):
    """Two classes (left and right halves of the data) around two directions, quantised as AEF's."""
    path = str(tmp_path_factory.mktemp("pub2") / "aef-mosaic.zarr")
    array = field_stores.aef_mosaic(path, width=4400, height=600, years=(2024,))
    rng = np.random.default_rng(4)
    directions = rng.normal(size=(2, 64))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    labels = np.zeros((300, 400), dtype=int)
    labels[:, 200:] = 1
    vectors = directions[labels] + rng.normal(scale=0.05, size=(300, 400, 64))
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    codes = np.clip(np.rint(np.sign(vectors) * np.sqrt(np.abs(vectors)) * 127.5), -127, 127)
    codes = codes.astype(np.int8)
    array[0, :, ROWS, COLS] = np.moveaxis(codes, -1, 0)
    return path, codes, labels


def test_sample_train_predict_on_the_mosaic(two_class_mosaic, tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    from pipelines import predict as predict_cli

    path, codes, labels = two_class_mosaic
    rng = np.random.default_rng(9)
    picks = [(int(r), int(c)) for r, c in rng.integers(0, [300, 400], size=(40, 2))]
    features = [
        {
            "type": "Feature",
            "properties": {"cls": ["left", "right"][labels[r, c]]},
            "geometry": {"type": "Point", "coordinates": list(_lonlat(100 + r, 3900 + c))},
        }
        for r, c in picks
    ]
    points = tmp_path / "points.geojson"
    points.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    model = knn_model(path, points, tmp_path, "--param", "n_neighbors=3")
    r0, r1, c0, c1 = 150, 390, 3950, 4290
    w, n = _lonlat(r0, c0)
    e, s = _lonlat(r1 - 1, c1 - 1)
    bbox = f"{w - RES / 4},{s - RES / 4},{e + RES / 4},{n + RES / 4}"
    out = str(tmp_path / "map.zarr")
    argv = ["--embeddings", path, "--model", model, "--bbox", bbox, "--output", out]
    assert predict_cli.run(argv + FNAPI) == 0
    # the reference: scikit-learn's k-NN on the points' pixels, over the same slice
    values = _values(codes)
    train_x = np.array([values[r, c] for r, c in picks])
    train_y = np.array([["left", "right"][labels[r, c]] for r, c in picks])
    knn = KNeighborsClassifier(n_neighbors=3).fit(train_x, train_y)
    window = values[r0 - 100 : r1 - 100, c0 - 3900 : c1 - 3900].reshape(-1, 64)
    want = knn.predict(window).reshape(r1 - r0, c1 - c0)
    got = xr.open_zarr(out)
    names = dict(
        zip(got["class"].attrs["flag_values"], got["class"].attrs["flag_meanings"].split())
    )
    classes = np.vectorize(names.get)(got["class"].isel(time=0).values)
    np.testing.assert_array_equal(classes, want)


def test_similarity_over_http_reads_only_the_inner_chunks_of_the_area(mosaic, tmp_path):
    """`--embeddings https://...`: the map equals the local one, and the bytes the server sent
    are at most 1.3x the stored inner chunks the area and the reference point touch (read from
    the shard's own index), plus the metadata."""
    import os

    from tests.helpers import range_http

    path, full = mosaic
    server, url = range_http.serve(os.path.dirname(path))
    try:
        root = f"{url}/{os.path.basename(path)}"
        refs = tmp_path / "refs.csv"
        lon, lat = _lonlat(150, 4120)  # the reference: inner chunk (0, 0) of shard (0, 1)
        refs.write_text(f"lon,lat\n{lon},{lat}\n")
        r0, r1, c0, c1 = 260, 300, 4120, 4160  # inside inner chunk (1, 0) of shard (0, 1)
        w, n = _lonlat(r0, c0)
        e, s = _lonlat(r1 - 1, c1 - 1)
        bbox = f"{w - RES / 4},{s - RES / 4},{e + RES / 4},{n + RES / 4}"
        remote, local = str(tmp_path / "remote.zarr"), str(tmp_path / "local.zarr")
        argv = ["--points", str(refs), "--bbox", bbox, "--years", "2024"]
        assert similarity_cli.run(["--embeddings", path, "--output", local] + argv + FNAPI) == 0
        before = sum(server.bytes_sent)
        assert similarity_cli.run(["--embeddings", root, "--output", remote] + argv + FNAPI) == 0
        fetched = sum(server.bytes_sent) - before
    finally:
        server.shutdown()
    got, want = xr.open_zarr(remote)["similarity"].values, xr.open_zarr(local)["similarity"].values
    np.testing.assert_array_equal(got, want)
    index_bytes = 16 * 16 * 16 + 4
    shard = os.path.join(path, "embeddings", "c", "1", "0", "0", "1")  # 2024, shard (0, 1)
    with open(shard, "rb") as f:
        f.seek(-index_bytes, os.SEEK_END)
        index = np.frombuffer(f.read(index_bytes)[:-4], dtype="<u8").reshape(16, 16, 2)
    # the inner chunks the area touches, and the one under the reference point (read by the driver)
    touched = int(index[1, 0, 1] + index[0, 0, 1])
    assert touched > 64 * 40 * 40
    # the metadata (zarr.json of the group and arrays, the coordinate arrays) is read too: count it
    metadata = sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
        if name == "zarr.json" or os.path.basename(folder) in ("0",) and "embeddings" not in folder
    )
    print(f"fetched {fetched} bytes; inner chunk + shard index {touched}; metadata {metadata}")
    assert fetched <= 1.3 * touched + 4 * metadata, (fetched, touched, metadata)


# ---------------------------------------------------------------- bad input: one line, exit 2


def knn_model(path: str, points, tmp_path, *train_args: str) -> str:
    """`efm sample` of `points` (column `cls`) from the store, then `efm train --classifier knn
    TRAIN_ARGS` on the table: -> the model's path."""
    from pipelines import sample as sample_cli
    from pipelines import train as train_cli

    table, model = str(tmp_path / "s.parquet"), str(tmp_path / "m.skops")
    argv = ["--embeddings", path, "--points", str(points), "--label-column", "cls"]
    assert sample_cli.run(argv + ["--output", table] + FNAPI) == 0
    train = ["--samples", table, "--classifier", "knn", *train_args]
    assert train_cli.run(train + ["--output", model]) == 0
    return model


def _one_line(capsys, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(f in err[0] for f in fragments), err
    return err[0]


def test_bad_convention_inputs_are_one_line_and_write_nothing(
    mosaic, two_class_mosaic, tmp_path, capsys
):
    import zarr

    from pipelines import predict as predict_cli

    refs = tmp_path / "refs.csv"
    lon, lat = _lonlat(150, 4000)
    refs.write_text(f"lon,lat\n{lon},{lat}\n")
    out = tmp_path / "out.zarr"

    def similarity(embeddings, *extra):
        argv = ["--embeddings", embeddings, "--points", str(refs), "--output", str(out)]
        return similarity_cli.run(argv + list(extra) + FNAPI)

    # a Zarr that is not an embedding store: say what is missing
    other = str(tmp_path / "other.zarr")
    zarr.open_group(other, mode="w", zarr_format=3).create_array("ndvi", shape=(4,), dtype="f4")
    assert similarity(other) == 2
    _one_line(capsys, "--embeddings", "not an embedding store", "ndvi")
    # an unreachable root
    assert similarity("http://127.0.0.1:9/aef-mosaic.zarr") == 2
    _one_line(capsys, "--embeddings", "http://127.0.0.1:9/aef-mosaic.zarr")
    # an area outside the store
    assert similarity(mosaic[0], "--bbox", "10.0,45.0,10.1,45.1") == 2
    _one_line(capsys, "--bbox")
    # a model trained on 64 bands, a store of 128 (TESSERA's)
    tessera = str(tmp_path / "tessera.zarr")
    embeddings, scales = field_stores.tessera(tessera, 10, width=40, height=30)
    embeddings[:] = 1
    scales[:] = 0.01
    path, _, labels = two_class_mosaic
    points = tmp_path / "p.csv"
    rows = [(100 + r, 3900 + c, ["left", "right"][labels[r, c]]) for r, c in [(5, 5), (5, 300)]]
    points.write_text(
        "lon,lat,cls\n"
        + "".join(f"{_lonlat(r, c)[0]},{_lonlat(r, c)[1]},{k}\n" for r, c, k in rows * 3)
    )
    model = knn_model(path, points, tmp_path, "--tuning", "folds=2", "--param", "n_neighbors=1")
    capsys.readouterr()
    argv = ["--embeddings", f"{tessera}/utm10", "--model", model, "--output", str(out)]
    assert predict_cli.run(argv + FNAPI) == 2
    _one_line(capsys, "--model", "64 bands", "128 bands")
    assert not out.exists()


def test_change_between_two_years_of_the_mosaic(mosaic, tmp_path):
    from pipelines import change as change_cli

    path, full = mosaic
    r0, r1, c0, c1 = 110, 330, 3980, 4230
    w, n = _lonlat(r0, c0)
    e, s = _lonlat(r1 - 1, c1 - 1)
    bbox = f"{w - RES / 4},{s - RES / 4},{e + RES / 4},{n + RES / 4}"
    out = str(tmp_path / "change.zarr")
    argv = ["--embeddings", path, "--years", "2023,2024", "--bbox", bbox]
    assert change_cli.run(argv + ["--output", out] + FNAPI) == 0
    values = _values(full)[:, r0:r1, c0:c1].astype(np.float64)
    want = np.einsum("yxb,yxb->yx", values[0], values[1])
    got = xr.open_zarr(out)["similarity"].values.squeeze()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_export_one_band_of_the_mosaic(mosaic, tmp_path):
    import rasterio

    from pipelines import export as export_cli

    path, full = mosaic
    tif = str(tmp_path / "a07.tif")
    argv = ["--input", path, "--band", "A07", "--years", "2024", "--output", tif]
    code = export_cli.run(argv)
    assert code == 0
    with rasterio.open(tif) as src:
        assert src.crs.to_epsg() == 4326
        got = src.read(1)
        np.testing.assert_allclose(src.transform[:6], (RES, 0.0, WEST, 0.0, -RES, NORTH))
    np.testing.assert_array_equal(got, _values(full[1, :, :, 7]))


COORDS = ("x", "y", "time", "band")


def _shard_index(shard_file: str, n_inner: int = 16) -> np.ndarray:
    """(offset, nbytes) of each inner chunk, read from the shard's own index (the sharding codec's
    spec: at the end of the shard, uint64 pairs in C order, then a crc32c)."""
    import os

    size = n_inner * n_inner * 16 + 4
    with open(shard_file, "rb") as f:
        f.seek(-size, os.SEEK_END)
        return np.frombuffer(f.read(size)[:-4], dtype="<u8").reshape(n_inner, n_inner, 2)


def test_predict_and_export_over_s3_read_only_the_inner_chunks_of_the_area(
    two_class_mosaic, tmp_path
):
    """`--embeddings s3://...` (moto's S3 server, anonymous, behind a proxy that counts every byte
    the server sends): the map equals the one made from the local copy, and the bytes fetched are
    at most 1.3x the shard index and the inner chunks the area touches, plus the metadata.
    `efm export --band` over S3 too (it opened the root without the anonymous option)."""
    import os

    pytest.importorskip("s3fs", reason="the [s3] extra")
    pytest.importorskip("moto.server", reason="moto[server], in the [test] extra")
    import rasterio

    from pipelines import export as export_cli
    from pipelines import predict as predict_cli
    from tests.helpers import s3

    path, codes, labels = two_class_mosaic
    points = tmp_path / "points.csv"
    picks = [(5, 5), (5, 300), (200, 10), (200, 350), (100, 100), (100, 250)]
    points.write_text(
        "lon,lat,cls\n"
        + "".join(
            f"{_lonlat(100 + r, 3900 + c)[0]},{_lonlat(100 + r, 3900 + c)[1]},"
            f"{['left', 'right'][labels[r, c]]}\n"
            for r, c in picks
        )
    )
    model = knn_model(path, points, tmp_path, "--tuning", "folds=2", "--param", "n_neighbors=1")
    r0, r1, c0, c1 = 260, 300, 4120, 4160  # inside inner chunk (1, 0) of shard (0, 1)
    w, n = _lonlat(r0, c0)
    e, s = _lonlat(r1 - 1, c1 - 1)
    bbox = f"{w - RES / 4},{s - RES / 4},{e + RES / 4},{n + RES / 4}"
    local, remote = str(tmp_path / "local.zarr"), str(tmp_path / "remote.zarr")
    argv = ["--model", model, "--bbox", bbox] + FNAPI
    assert predict_cli.run(["--embeddings", path, "--output", local] + argv) == 0
    with s3.moto_server(str(tmp_path / "aws")) as endpoint:
        root = s3.upload_folder(path, "opendata", "tge-labs/aef-mosaic.zarr")
        proxy = s3.CountingProxy(endpoint)
        os.environ["AWS_ENDPOINT_URL"] = proxy.url
        s3.fresh_state()
        try:
            assert predict_cli.run(["--embeddings", root, "--output", remote] + argv) == 0
            fetched = proxy.bytes_from_server
            tifs = {where: str(tmp_path / f"{where}.tif") for where in ("local", "s3")}
            for where, store in (("local", path), ("s3", root)):
                export = [
                    "--input",
                    store,
                    "--band",
                    "A05",
                    "--bbox",
                    bbox,
                    "--output",
                    tifs[where],
                ]
                assert export_cli.run(export) == 0
        finally:
            proxy.close()
    got = xr.open_zarr(remote)["class"].values
    want = xr.open_zarr(local)["class"].values
    assert got.shape == (1, r1 - r0, c1 - c0)
    np.testing.assert_array_equal(got, want)
    with rasterio.open(tifs["local"]) as a, rasterio.open(tifs["s3"]) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.transform == b.transform
    index = _shard_index(os.path.join(path, "embeddings", "c", "0", "0", "0", "1"))
    touched = int(index[1, 0, 1]) + 16 * 16 * 16 + 4  # the inner chunk and the shard's index
    assert touched > 64 * 40 * 40
    metadata = sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
        if name == "zarr.json"
        or os.path.basename(os.path.dirname(folder)) in ("x", "y", "time", "band")
        or os.path.basename(folder) in ("x", "y", "time", "band")
    )
    print(f"fetched {fetched} bytes; inner chunk + shard index {touched}; metadata {metadata}")
    assert fetched <= 1.3 * touched + 4 * metadata, (fetched, touched, metadata)


def test_an_efm_store_on_a_public_bucket_is_read_anonymously(tmp_path):
    """A store efm wrote (Zarr 3, with its done markers), published in a public S3 bucket and read
    without credentials: the completeness check lists it anonymously too, and the map equals the
    one made from the local copy."""
    import os

    pytest.importorskip("s3fs", reason="the [s3] extra")
    pytest.importorskip("moto.server", reason="moto[server], in the [test] extra")
    from pipelines import change as change_cli
    from tests.helpers import s3
    from tests.helpers.store_factory import make_store

    s = make_store(str(tmp_path / "emb.zarr"), height=150, width=130, chunk_size=64)
    argv = ["--years", "2021,2022", *FNAPI]
    local, remote = str(tmp_path / "local.zarr"), str(tmp_path / "remote.zarr")
    assert change_cli.run(["--embeddings", s.path, "--output", local, *argv]) == 0
    with s3.moto_server(str(tmp_path / "aws")) as endpoint:
        root = s3.upload_folder(s.path, "opendata", "efm/emb.zarr")
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        s3.fresh_state()
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            os.environ.pop(key, None)
        assert change_cli.run(["--embeddings", root, "--output", remote, *argv]) == 0
    np.testing.assert_array_equal(
        xr.open_zarr(remote)["similarity"].values, xr.open_zarr(local)["similarity"].values
    )
