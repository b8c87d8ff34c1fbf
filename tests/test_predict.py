"""efm predict: a regressor's map equals model.predict on the whole array; classifiers give what classify gives."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

from pipelines import classify as classify_cli
from pipelines import predict as predict_cli
from tests.helpers.runners import FNAPI, MULTIPROCESS
from tests.helpers.store_factory import BANDS, make_store
from transforms.learning import models
from transforms.storage import store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {
        dtype: make_store(str(root / f"{dtype}.zarr"), dtype=dtype) for dtype in ("float32", "int8")
    }


@pytest.fixture(scope="module")
def regressors(stores, tmp_path_factory):
    """Regressors of a synthetic "biomass" = a linear function of the vector plus the class, saved as efm saves them."""
    s, root = stores["float32"], tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    t, r, c = np.nonzero(s.valid)
    pick = rng.choice(len(t), 500, replace=False)
    X = s.values[t[pick], r[pick], c[pick]]
    y = (
        X @ rng.normal(size=X.shape[1]) * 10
        + s.labels[t[pick], r[pick], c[pick]] * 20
        + rng.normal(size=len(pick))
    )
    out = {}
    for name, est in [("ridge", Ridge(alpha=0.1)), ("knn", KNeighborsRegressor(5))]:
        est.fit(X, y)
        path = str(root / f"{name}.pkl")
        meta = models.save_model(
            est,
            path,
            {"kind": "regressor", "bands": list(BANDS), "target": "agbd", "units": "Mg/ha"},
        )
        out[name] = (est, path, meta["sha256"])
    clf = KNeighborsClassifier(3).fit(X, s.labels[t[pick], r[pick], c[pick]])
    path = str(root / "clf.pkl")
    out["classifier"] = (
        clf,
        path,
        models.save_model(
            clf, path, {"kind": "classifier", "classes": clf.classes_, "bands": list(BANDS)}
        )["sha256"],
    )
    return out


def expected_prediction(model, values):
    """model.predict on the whole array at once (float64 in, float32 out); NaN where there is no data."""
    flat = values.reshape(-1, values.shape[-1])
    valid = ~np.isnan(flat).any(axis=1)
    out = np.full(flat.shape[0], np.nan)
    out[valid] = model.predict(flat[valid])
    return out.reshape(values.shape[:-1]).astype(np.float32)


@pytest.mark.parametrize(
    "name,dtype,runner",
    [("ridge", "float32", FNAPI), ("knn", "int8", FNAPI), ("ridge", "int8", MULTIPROCESS)],
)
def test_regression_map_equals_whole_array_predict(
    stores, regressors, tmp_path, name, dtype, runner, capsys
):
    s = stores[dtype]
    est, path, sha = regressors[name]
    output = tmp_path / "pred.zarr"
    assert (
        predict_cli.run(
            [
                "--embeddings",
                s.path,
                "--model",
                path,
                "--model-sha256",
                sha,
                "--output",
                str(output),
                *runner,
            ]
        )
        == 0
    )
    assert "complete" in capsys.readouterr().out
    got = xr.open_zarr(output, mask_and_scale=False)
    want = expected_prediction(est, s.values)
    assert got["prediction"].dims == ("time", "y", "x") and got["prediction"].dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got["prediction"].values), ~s.valid)
    # float32 out of a float64 predict: within float32 rounding of the values (|y| ~ 100)
    np.testing.assert_allclose(got["prediction"].values, want, rtol=1e-6, atol=1e-4)
    assert (
        got["prediction"].attrs["target"] == "agbd" and got["prediction"].attrs["units"] == "Mg/ha"
    )
    assert (
        got.attrs["efm_product"] == "prediction"
        and got.attrs[store.STATUS_ATTR] == "complete"
        and got.attrs["model_sha256"] == sha
    )


def test_a_classifier_gives_what_classify_gives(stores, regressors, tmp_path):
    s = stores["float32"]
    _, path, sha = regressors["classifier"]
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    assert (
        predict_cli.run(
            [
                "--embeddings",
                s.path,
                "--model",
                path,
                "--model-sha256",
                sha,
                "--output",
                str(a),
                "--years",
                "2022",
                *FNAPI,
            ]
        )
        == 0
    )
    assert (
        classify_cli.run(
            [
                "--embeddings",
                s.path,
                "--model",
                path,
                "--model-sha256",
                sha,
                "--output",
                str(b),
                "--years",
                "2022",
                *FNAPI,
            ]
        )
        == 0
    )
    got, want = xr.open_zarr(a, mask_and_scale=False), xr.open_zarr(b, mask_and_scale=False)
    np.testing.assert_array_equal(got["class"].values, want["class"].values)
    assert got.attrs["efm_product"] == "classes" and got["class"].attrs == want["class"].attrs


def test_a_regressor_with_confidence_is_refused(stores, regressors, tmp_path, capsys):
    _, path, sha = regressors["ridge"]
    output = tmp_path / "pred.zarr"
    assert (
        predict_cli.run(
            [
                "--embeddings",
                stores["float32"].path,
                "--model",
                path,
                "--model-sha256",
                sha,
                "--output",
                str(output),
                "--confidence",
                *FNAPI,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("efm predict: error: --confidence: a regressor") and "\n" not in err
    assert not output.exists()


def test_classify_refuses_a_regressor_and_names_efm_predict(stores, regressors, tmp_path, capsys):
    from pipelines import classify as classify_cli

    _, path, sha = regressors["ridge"]
    output = tmp_path / "classes.zarr"
    assert (
        classify_cli.run(
            [
                "--embeddings",
                stores["float32"].path,
                "--model",
                path,
                "--model-sha256",
                sha,
                "--output",
                str(output),
                *FNAPI,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("efm classify: error: --model: ")
        and "apply it with `efm predict`" in err
        and "\n" not in err
    )
    assert not output.exists()
