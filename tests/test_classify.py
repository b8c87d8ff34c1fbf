"""efm classify: the class map equals model.predict on the whole array, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from sklearn.ensemble import RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier

from pipelines import classify as classify_cli
from tests.helpers.runners import FNAPI, MULTIPROCESS
from tests.helpers.store_factory import BANDS, make_store
from transforms.learning import models
from transforms.products.classify import class_encoding, predict_chunk
from transforms.storage import store

NAMES = np.array(["water", "forest", "crop land", "urban"])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {
        dtype: make_store(str(root / f"{dtype}.zarr"), dtype=dtype) for dtype in ("float32", "int8")
    }


def training_set(s, n=400, seed=0, noisy=True):
    rng = np.random.default_rng(seed)
    t, r, c = np.nonzero(s.valid)
    pick = rng.choice(len(t), n, replace=False)
    X = s.values[t[pick], r[pick], c[pick]]
    y = NAMES[s.labels[t[pick], r[pick], c[pick]]]
    if (
        noisy
    ):  # some wrong labels, so that the models disagree with the truth and are not trivially exact
        flip = rng.random(n) < 0.15
        y[flip] = rng.choice(NAMES, flip.sum())
    return X, y


@pytest.fixture(scope="module")
def trained(stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    X, y = training_set(stores["float32"])
    out = {}
    for name, est, suffix in [
        ("knn", KNeighborsClassifier(5), ".skops"),
        ("rf", RandomForestClassifier(20, random_state=0), ".pkl"),
    ]:
        est.fit(X, y)
        path = str(root / f"{name}{suffix}")
        meta = models.save_model(
            est, path, {"kind": "classifier", "classes": est.classes_, "bands": list(BANDS)}
        )
        out[name] = (est, path, meta["sha256"])
    return out


def expected_map(model, values, encoding):
    """model.predict on the whole array at once; fill where there is no data."""
    flat = values.reshape(-1, values.shape[-1])
    valid = ~np.isnan(flat).any(axis=1)
    lookup = {label: code for label, code in zip(encoding.labels, encoding.values)}
    classes = np.full(flat.shape[0], encoding.fill, dtype=encoding.dtype)
    classes[valid] = [lookup[p] for p in model.predict(flat[valid])]
    conf = np.full(flat.shape[0], np.nan, dtype=np.float32)
    conf[valid] = model.predict_proba(flat[valid]).max(axis=1)
    return classes.reshape(values.shape[:-1]), conf.reshape(values.shape[:-1])


def run(*argv):
    return classify_cli.run([*map(str, argv)])


@pytest.mark.parametrize(
    "model_name,dtype,runner",
    [("knn", "float32", FNAPI), ("rf", "int8", FNAPI), ("rf", "float32", MULTIPROCESS)],
)
def test_class_map_equals_whole_array_predict(
    stores, trained, tmp_path, model_name, dtype, runner, capsys
):
    s = stores[dtype]
    est, path, sha = trained[model_name]
    output = tmp_path / "classes.zarr"
    trust = ["--model-sha256", sha] if path.endswith(".pkl") else []
    assert (
        run(
            "--embeddings",
            s.path,
            "--model",
            path,
            *trust,
            "--output",
            output,
            "--confidence",
            *runner,
        )
        == 0
    )
    assert "complete" in capsys.readouterr().out
    got = xr.open_zarr(output, mask_and_scale=False)
    encoding = class_encoding(list(est.classes_))
    classes, conf = expected_map(est, s.values, encoding)
    np.testing.assert_array_equal(got["class"].values, classes)
    np.testing.assert_array_equal(
        got["class"].values[~s.valid], encoding.fill
    )  # no-data pixels stay fill
    np.testing.assert_allclose(got["confidence"].values, conf, rtol=0, atol=1e-6)
    assert got["class"].dtype == np.uint8 and got["class"].attrs["fill_value"] == 255
    assert got["class"].attrs["flag_values"] == [0, 1, 2, 3]
    assert got["class"].attrs["flag_meanings"] == "crop_land forest urban water"
    assert got["class"].attrs["class_labels"] == sorted(NAMES.tolist())
    assert got.attrs[store.STATUS_ATTR] == "complete" and got.attrs["model_sha256"] == sha
    emb = store.open_embeddings(s.path)
    assert got.rio.crs == emb.rio.crs and got.rio.transform() == emb.rio.transform()
    np.testing.assert_array_equal(got["x"].values, emb["x"].values)
    np.testing.assert_array_equal(got["time"].values, emb["time"].values)


def test_predict_chunk_views_the_window_and_leaves_no_data(stores):
    s = stores["float32"]
    seen = []

    class Recorder:  # records the matrix it is given: the window itself when all pixels are valid
        def predict(self, X):
            seen.append(X)
            return np.full(len(X), 7)

    lookup = class_encoding([7]).lookup()
    window = s.values[0, 200:260, 200:260].copy()
    window[np.isnan(window).any(axis=-1)] = s.directions[0]
    classes, conf = predict_chunk(Recorder(), window, lookup, "uint8", 255)
    assert conf is None and (classes == 7).all()
    assert np.shares_memory(seen[-1], window) and seen[-1].shape == (3600, 64)
    holey = s.values[1, :128, :128].copy()  # the whole chunk is no data in the last year
    classes, _ = predict_chunk(Recorder(), holey, lookup, "uint8", 255)
    assert (classes == 255).all() and len(seen) == 1  # the model was not called


def test_class_encoding():
    e = class_encoding([10, 20, 40])
    assert (
        e.values == (10, 20, 40)
        and e.dtype == "uint8"
        and e.fill == 255
        and e.meanings == ("class_10", "class_20", "class_40")
    )
    e = class_encoding(["b", "a c"])
    assert e.values == (0, 1) and e.meanings == ("b", "a_c")
    e = class_encoding(list(range(300)))
    assert e.dtype == "int16" and e.fill == -1 and e.values[-1] == 299
    lookup = class_encoding(["water", "forest"]).lookup()
    np.testing.assert_array_equal(
        lookup(np.array(["forest", "water", "forest"]), "uint8"), [1, 0, 1]
    )


def test_existing_output_resume_and_overwrite(stores, trained, tmp_path, capsys):
    s = stores["float32"]
    _, path, _ = trained["knn"]
    output = tmp_path / "c.zarr"
    assert (
        run("--embeddings", s.path, "--model", path, "--output", output, "--years", "2022", *FNAPI)
        == 0
    )
    reference = xr.open_zarr(output, mask_and_scale=False)["class"].values
    assert run("--embeddings", s.path, "--model", path, "--output", output, *FNAPI) == 2
    assert (
        "already exists (an efm class-map store, complete); pass --overwrite"
        in capsys.readouterr().err
    )
    # an interrupted run: one chunk's marker is gone and its data damaged
    import zarr

    (output / ".efm" / "done" / "0.128.0").unlink()
    zarr.open_group(str(output), mode="r+")["class"][0, 128:256, 0:128] = 9
    store.set_status(str(output), "incomplete")
    assert (
        run(
            "--embeddings",
            s.path,
            "--model",
            path,
            "--output",
            output,
            "--years",
            "2022",
            "--resume",
            *FNAPI,
        )
        == 0
    )
    assert "chunks already done (resume)  " in capsys.readouterr().out
    np.testing.assert_array_equal(
        xr.open_zarr(output, mask_and_scale=False)["class"].values, reference
    )
    assert (
        run(
            "--embeddings",
            s.path,
            "--model",
            path,
            "--output",
            output,
            "--years",
            "2021",
            "--resume",
            *FNAPI,
        )
        == 2
    )
    assert "years" in capsys.readouterr().err
    assert (
        run("--embeddings", s.path, "--model", path, "--output", output, "--overwrite", *FNAPI) == 0
    )
    assert xr.open_zarr(output).sizes["time"] == 2


def test_bad_inputs_fail_before_any_work(stores, trained, tmp_path, capsys):
    s = stores["float32"]
    _, path, _ = trained["knn"]
    output = tmp_path / "never.zarr"
    assert (
        run("--embeddings", s.path, "--model", path, "--output", output, "--years", "2019", *FNAPI)
        == 2
    )
    assert "--years" in capsys.readouterr().err
    assert (
        run("--embeddings", tmp_path / "missing.zarr", "--model", path, "--output", output, *FNAPI)
        == 2
    )
    assert "--embeddings" in capsys.readouterr().err
    from sklearn.cluster import KMeans

    km = KMeans(2, n_init=1, random_state=0).fit(s.values[s.valid][:500])
    km_path = str(tmp_path / "km.skops")
    models.save_model(km, km_path, {"kind": "clusterer", "classes": [0, 1], "bands": list(BANDS)})
    assert (
        run("--embeddings", s.path, "--model", km_path, "--output", output, "--confidence", *FNAPI)
        == 2
    )
    assert "--confidence" in capsys.readouterr().err
    assert not output.exists()


def test_classify_from_and_to_a_bucket(stores, trained, gcs, gcs_bucket, tmp_path):
    """The same pipeline on gs:// (GCS emulator, real gcsfs): read the store, write the class map."""
    s = stores["int8"]
    est, path, _ = trained["knn"]
    gcs.fs.put(s.path, f"{gcs_bucket[5:]}/emb.zarr", recursive=True)
    remote_model = f"{gcs_bucket}/models/knn.skops"
    gcs.fs.put(path, remote_model[5:])
    gcs.fs.put(path + ".json", remote_model[5:] + ".json")
    output = f"{gcs_bucket}/classes.zarr"
    assert (
        run(
            "--embeddings",
            f"{gcs_bucket}/emb.zarr",
            "--model",
            remote_model,
            "--output",
            output,
            "--years",
            "2021",
            *FNAPI,
        )
        == 0
    )
    got = xr.open_zarr(output, mask_and_scale=False)
    classes, _ = expected_map(est, s.values[:1], class_encoding(list(est.classes_)))
    np.testing.assert_array_equal(got["class"].values, classes)
    assert got.attrs[store.STATUS_ATTR] == "complete"
