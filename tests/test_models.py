"""Model files: safety checks before loading, band checks, the train command and its sidecar."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from pipelines import classify as classify_cli
from pipelines import train as train_cli
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import BANDS, make_store
from transforms.core.errors import InputError
from transforms.learning import models


def _double(x):  # a function skops does not trust: it could be anything
    return x * 2


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    return make_store(
        str(tmp_path_factory.mktemp("s") / "emb.zarr"), height=140, width=130, years=(2021,)
    )


@pytest.fixture
def knn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 64)).astype(np.float32)
    return KNeighborsClassifier(3).fit(X, np.repeat(["a", "b", "c"], 20))


def test_pickle_needs_a_matching_hash_or_trust(knn, tmp_path):
    path = str(tmp_path / "m.pkl")
    sha = models.save_model(knn, path, {"classes": knn.classes_, "bands": list(BANDS)})["sha256"]
    with pytest.raises(InputError) as err:
        models.load_model(path)
    assert (
        "--model-sha256" in str(err.value)
        and "--trust-pickle" in str(err.value)
        and "runs code" in str(err.value)
    )
    with pytest.raises(InputError, match="--model-sha256: sha256 of .* is " + sha):
        models.load_model(path, sha256="0" * 64)
    assert models.load_model(path, sha256=sha.upper()).sha256 == sha
    assert isinstance(models.load_model(path, trust_pickle=True).model, KNeighborsClassifier)


def test_skops_with_untrusted_type_is_refused(knn, tmp_path):
    pipe = make_pipeline(FunctionTransformer(_double), KNeighborsClassifier(3)).fit(
        np.eye(64)[:6], list("aabbcc")
    )
    path = str(tmp_path / "m.skops")
    models.save_model(pipe, path, {})
    with pytest.raises(InputError, match="not trusted: .*_double"):
        models.load_model(path)
    ok = str(tmp_path / "ok.skops")
    models.save_model(knn, ok, {})
    assert models.load_model(ok).classes == ["a", "b", "c"]


@pytest.mark.parametrize(
    "suffix,content",
    [(".pkl", b"not a pickle at all"), (".skops", b"PK\x03\x04 truncated zip"), (".joblib", b"")],
)
def test_corrupt_model_file_gives_a_clear_error(tmp_path, suffix, content):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"--model: cannot load .*bad.* not a valid"):
        models.load_model(str(path), trust_pickle=True)


def test_model_on_other_bands_is_refused(knn, small_store, tmp_path, capsys):
    path = str(tmp_path / "other.skops")
    other = [f"B{i:02d}" for i in range(64)]
    models.save_model(knn, path, {"classes": knn.classes_, "bands": other})
    out = tmp_path / "never.zarr"
    assert (
        classify_cli.run(
            ["--embeddings", small_store.path, "--model", path, "--output", str(out), *FNAPI]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "trained on 64 bands [B00, B01, …, B63]" in err
        and "[A00, A01, …, A63]" in err
        and small_store.path in err
    )
    few = KNeighborsClassifier(3).fit(np.eye(8)[:6], list("aabbcc"))
    path8 = str(tmp_path / "few.skops")
    models.save_model(few, path8, {"classes": few.classes_, "bands": list(BANDS[:8])})
    assert (
        classify_cli.run(
            ["--embeddings", small_store.path, "--model", path8, "--output", str(out), *FNAPI]
        )
        == 2
    )
    assert "trained on 8 bands" in capsys.readouterr().err
    nosidecar = str(tmp_path / "bare.skops")
    models.save_model(few, nosidecar, {})
    (tmp_path / "bare.skops.json").unlink()
    assert (
        classify_cli.run(
            ["--embeddings", small_store.path, "--model", nosidecar, "--output", str(out), *FNAPI]
        )
        == 2
    )
    assert "expects 8 features but" in capsys.readouterr().err
    assert not out.exists()


def test_sidecar_of_another_file_is_refused(knn, tmp_path):
    path = str(tmp_path / "m.skops")
    models.save_model(knn, path, {})
    meta = json.loads((tmp_path / "m.skops.json").read_text())
    meta["sha256"] = "f" * 64
    (tmp_path / "m.skops.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="describes another file"):
        models.load_model(path)


def test_params_and_registry():
    assert models.parse_params(
        ["n_neighbors=7", "weights=distance", "max_depth=None", "bootstrap=false", "x=(64, 32)"]
    ) == {
        "n_neighbors": 7,
        "weights": "distance",
        "max_depth": None,
        "bootstrap": False,
        "x": (64, 32),
    }
    with pytest.raises(InputError, match="--param: expected NAME=VALUE"):
        models.parse_params(["oops"])
    assert models.make_classifier("knn", {"n_neighbors": 9}).n_neighbors == 9
    assert models.make_classifier("random-forest").n_estimators == 100
    with pytest.raises(
        InputError, match="--classifier: unknown classifier 'xgb'; choose from knn, random-forest"
    ):
        models.make_classifier("xgb")
    with pytest.raises(InputError, match="--param: KNeighborsClassifier has no parameter 'k'"):
        models.make_classifier("knn", {"k": 3})


def samples_table(path, n_per_class=(12, 12, 12), years=1, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(64)[:3]
    rows = []
    pid = 0
    for label, n in zip(["water", "forest", "urban"], n_per_class):
        for _ in range(n):
            for year in range(years):
                v = centres[["water", "forest", "urban"].index(label)] + rng.normal(
                    scale=0.01, size=64
                )
                rows.append(
                    {
                        "point_id": pid,
                        "label": label,
                        "year": 2021 + year,
                        **dict(zip(BANDS, v.astype(np.float32))),
                    }
                )
            pid += 1
    pd.DataFrame(rows).to_parquet(path)


def test_train_cross_validates_and_writes_the_sidecar(tmp_path, capsys):
    table = tmp_path / "samples.parquet"
    samples_table(table, years=2)
    out = tmp_path / "knn.skops"
    assert (
        train_cli.run(
            [
                "--samples",
                str(table),
                "--classifier",
                "knn",
                "--param",
                "n_neighbors=3",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "overall accuracy: 1.0000" in printed
        and "grouped by point" in printed
        and "confusion matrix" in printed
    )
    assert "precision" in printed and "recall" in printed
    meta = json.loads((tmp_path / "knn.skops.json").read_text())
    assert meta["classes"] == ["forest", "urban", "water"] and meta["bands"] == list(BANDS)
    assert meta["params"]["n_neighbors"] == 3 and meta["metrics"]["overall_accuracy"] == 1.0
    assert meta["metrics"]["confusion_matrix"] == [[24, 0, 0], [0, 24, 0], [0, 0, 24]]
    import hashlib

    import sklearn

    assert (
        meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        and meta["sklearn_version"] == sklearn.__version__
    )
    assert models.load_model(str(out)).model.n_neighbors == 3


def test_train_refuses_classes_too_small_to_validate(tmp_path, capsys):
    table = tmp_path / "samples.parquet"
    samples_table(table, n_per_class=(12, 3, 12))
    assert train_cli.run(["--samples", str(table), "--output", str(tmp_path / "m.skops")]) == 2
    err = capsys.readouterr().err
    assert (
        "--tuning: folds: too few samples to validate with 5 folds in class 'forest': 3; add "
        "samples to these classes or lower folds (--tuning folds=N) (each class needs at least 5)"
        in err
    )
    assert not (tmp_path / "m.skops").exists()
    assert (
        train_cli.run(
            [
                "--samples",
                str(table),
                "--tuning",
                "folds=3",
                "--classifier",
                "knn",
                "--output",
                str(tmp_path / "m.pkl"),
            ]
        )
        == 0
    )


def test_balanced_accuracy_and_macro_f1_equal_scikit_learn(tmp_path, capsys):
    """Unequal, overlapping classes: the three scores differ, and each equals scikit-learn's on the same folds."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(3)
    labels = np.repeat(["water", "forest", "urban"], [40, 12, 8])
    X = (
        np.eye(64)[np.searchsorted(["forest", "urban", "water"], labels)] * 0.6
        + rng.normal(scale=0.5, size=(60, 64))
    ).astype(np.float32)
    table = tmp_path / "s.parquet"
    pd.DataFrame(
        {"point_id": np.arange(60), "label": labels, "year": 2021, **dict(zip(BANDS, X.T))}
    ).to_parquet(table)
    assert (
        train_cli.run(
            ["--samples", str(table), "--classifier", "knn", "--output", str(tmp_path / "m.skops")]
        )
        == 0
    )
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "m.skops.json").read_text())["metrics"]
    predicted = cross_val_predict(
        KNeighborsClassifier(5), X, labels, cv=StratifiedKFold(5, shuffle=True, random_state=0)
    )
    expected = {
        "overall_accuracy": accuracy_score(labels, predicted),
        "balanced_accuracy": balanced_accuracy_score(labels, predicted),
        "macro_f1": f1_score(labels, predicted, average="macro"),
    }
    assert len({round(v, 6) for v in expected.values()}) == 3  # the data tells them apart
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, rel=1e-12), name
    assert (
        f"balanced accuracy: {expected['balanced_accuracy']:.4f}" in printed
        and f"macro F1: {expected['macro_f1']:.4f}" in printed
    )
    assert f"balanced accuracy (CV)  {expected['balanced_accuracy']:.4f}" in printed


@pytest.mark.parametrize("suffix", [".skops", ".pkl"])
def test_ridge_linear_probe_trains_and_loads(tmp_path, suffix):
    from sklearn.linear_model import RidgeClassifier

    table, out = tmp_path / "samples.parquet", tmp_path / f"ridge{suffix}"
    samples_table(table)
    assert (
        train_cli.run(["--samples", str(table), "--classifier", "ridge", "--output", str(out)]) == 0
    )
    meta = json.loads((tmp_path / f"ridge{suffix}.json").read_text())
    loaded = models.load_model(str(out), sha256=meta["sha256"] if suffix == ".pkl" else None)
    assert isinstance(loaded.model, RidgeClassifier) and loaded.kind == "classifier"
    assert (
        loaded.classes == ["forest", "urban", "water"]
        and meta["metrics"]["balanced_accuracy"] == 1.0
    )
