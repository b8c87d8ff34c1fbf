"""Every model `efm train` writes, in either format, is one `efm classify` loads and applies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipelines import classify as classify_cli
from pipelines import train as train_cli
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import BANDS, make_store
from transforms.learning import models, skops_trust, training_samples
from transforms.products.classify import class_encoding

NAMES = np.array(["water", "forest", "crop", "urban"])
CASES = [(name, []) for name in models.CLASSIFIERS] + [
    ("knn", ["--param", "algorithm='kd_tree'"]),
    ("knn", ["--param", "algorithm='ball_tree'"]),
]


@pytest.fixture(scope="module")
def store_and_samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    s = make_store(
        str(root / "emb.zarr"),
        height=70,
        width=60,
        years=(2021,),
        chunk_size=32,
        n_classes=4,
        seed=5,
    )
    rng = np.random.default_rng(1)
    t, r, c = np.nonzero(s.valid)
    pick = rng.choice(len(t), 80, replace=False)
    frame = pd.DataFrame(s.values[t[pick], r[pick], c[pick]], columns=list(BANDS))
    frame.insert(0, "label", NAMES[s.labels[t[pick], r[pick], c[pick]]])
    frame.insert(0, "point_id", np.arange(len(frame)))
    table = root / "samples.parquet"
    frame.to_parquet(table)
    return s, str(table)


@pytest.mark.parametrize("suffix", [".skops", ".pkl"])
@pytest.mark.parametrize(
    "name, params",
    CASES,
    ids=[f"{n}{'-' + p[1].split('=')[1].strip(chr(39)) if p else ''}" for n, p in CASES],
)
def test_train_then_classify(store_and_samples, tmp_path, capsys, name, params, suffix):
    s, table = store_and_samples
    model = str(tmp_path / f"model{suffix}")
    assert (
        train_cli.run(
            [
                "--samples",
                table,
                "--classifier",
                name,
                *params,
                "--tuning",
                "folds=2",
                "--output",
                model,
            ]
        )
        == 0
    )
    sha = json.loads(open(model + ".json").read())["sha256"]
    out = str(tmp_path / "classes.zarr")
    pickle_flags = ["--model-sha256", sha] if suffix == ".pkl" else []
    code = classify_cli.run(
        ["--embeddings", s.path, "--model", model, *pickle_flags, "--output", out, *FNAPI]
    )
    assert code == 0, capsys.readouterr().err
    loaded = models.load_model(model, sha256=sha)
    if "algorithm='kd_tree'" in params:
        assert type(loaded.model._tree).__name__ == "KDTree"
    encoding = class_encoding(loaded.classes)
    lookup = dict(zip(encoding.labels, encoding.values))
    values = s.values[0]
    valid = s.valid[0]
    expected = np.full(valid.shape, encoding.fill, dtype=encoding.dtype)
    expected[valid] = [lookup[p] for p in loaded.model.predict(values[valid])]
    got = xr.open_zarr(out, mask_and_scale=False)["class"].values[0]
    np.testing.assert_array_equal(got, expected)


def _python_metric(a, b):  # a k-NN metric given as a Python function: skops cannot load it safely
    return float(np.abs(a - b).sum())


def test_untrusted_skops_model_is_refused_before_fitting(store_and_samples, tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    _, table = store_and_samples
    X, labels, *_ = training_samples.load_samples(table)
    estimator = KNeighborsClassifier(3, algorithm="ball_tree", metric=_python_metric)
    with pytest.raises(
        models.InputError, match=r"--output: .*PyFuncDistance.*--output .*m\.pkl.*--model-sha256"
    ):
        skops_trust.check_skops_loadable(estimator, X, labels, str(tmp_path / "m.skops"))
    assert not hasattr(estimator, "classes_")  # the user's estimator was not fitted
    skops_trust.check_skops_loadable(
        KNeighborsClassifier(3, algorithm="kd_tree"), X, labels, str(tmp_path / "m.skops")
    )


def test_estimator_parameters_are_checked_at_construction(tmp_path, capsys):
    with pytest.raises(
        models.InputError, match="--param: KNeighborsClassifier: The 'n_neighbors' parameter"
    ):
        models.make_classifier("knn", {"n_neighbors": "abc"})
    with pytest.raises(
        models.InputError, match="--param: RandomForestClassifier: The 'n_estimators' parameter"
    ):
        models.make_classifier("random-forest", {"n_estimators": -3})
    code = train_cli.run(
        [
            "--samples",
            str(tmp_path / "none.parquet"),
            "--classifier",
            "knn",
            "--param",
            "n_neighbors=abc",
            "--output",
            str(tmp_path / "m.skops"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert (
        code == 2
        and err.startswith(
            "efm train: error: --param: KNeighborsClassifier: The 'n_neighbors' parameter"
        )
        and "\n" not in err
    )
    assert not (tmp_path / "m.skops").exists()
