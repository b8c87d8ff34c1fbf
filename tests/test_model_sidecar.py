"""The model sidecar cannot silently change what a model means: its kind, classes and bands are
stored inside the model file (covered by its sha256) and checked against it and against the fitted
model before any worker starts. An edited sidecar is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr
from sklearn.cluster import KMeans
from sklearn.neighbors import KNeighborsClassifier

from pipelines import classify as classify_cli
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import BANDS, make_store
from transforms.core.errors import InputError
from transforms.learning import models


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(
        str(tmp_path_factory.mktemp("s") / "emb.zarr"), height=140, width=130, years=(2021,)
    )


def knn_model(path: str) -> dict:
    rng = np.random.default_rng(0)
    knn = KNeighborsClassifier(3).fit(
        rng.normal(size=(60, 64)).astype(np.float32), np.repeat(["forest", "urban", "water"], 20)
    )
    return models.save_model(
        knn, path, {"kind": "classifier", "classes": knn.classes_, "bands": list(BANDS)}
    )


def edit_sidecar(path: str, **changes) -> None:
    meta = json.loads(open(path + ".json").read())
    meta.update(changes)
    with open(path + ".json", "w") as f:
        json.dump(meta, f)


def classify(capsys, store, model: str, out, *extra) -> tuple[int, list[str]]:
    code = classify_cli.run(
        ["--embeddings", store.path, "--model", model, "--output", str(out), *extra, *FNAPI]
    )
    err = [
        line
        for line in capsys.readouterr().err.splitlines()
        if not line.startswith(("WARNING", "INFO"))
    ]
    return code, err


REORDERED = [BANDS[1], BANDS[0], *BANDS[2:]]


@pytest.mark.parametrize("suffix", [".skops", ".pkl"])
@pytest.mark.parametrize(
    "case,changes,expected",
    [
        (
            "reordered bands",
            {"bands": REORDERED},
            r"says bands \[A01, A00, …, A63\] but the model file records \[A00, A01, …, A63\]",
        ),
        (
            "reordered classes",
            {"classes": ["urban", "forest", "water"]},
            r"says classes \[urban, forest, water\] but the model file records \[forest, urban, water\]",
        ),
        (
            "renamed class",
            {"classes": ["forest", "urban", "lake"]},
            r"says classes \[forest, urban, lake\] but the model file records",
        ),
        (
            "changed kind",
            {"kind": "clusterer"},
            r"says kind 'clusterer' but the model file records 'classifier'",
        ),
    ],
)
def test_edited_sidecar_is_refused_before_anything_is_written(
    store, tmp_path, capsys, suffix, case, changes, expected
):
    model = str(tmp_path / f"m{suffix}")
    sha = knn_model(model)["sha256"]
    edit_sidecar(model, **changes)
    out = tmp_path / "classes.zarr"
    code, err = classify(
        capsys, store, model, out, *(["--model-sha256", sha] if suffix == ".pkl" else [])
    )
    assert code == 2 and len(err) == 1, err
    assert (
        err[0].startswith(f"efm classify: error: --model: {model}.json says ")
        and "restore it, or delete it" in err[0]
    )
    import re

    assert re.search(expected, err[0]), err[0]
    assert not out.exists()


def test_sidecar_is_checked_against_the_fitted_model_too(tmp_path):
    """A model file without efm's record (made elsewhere, or before efm stored it): the sidecar must still
    agree with classes_ / cluster_centers_, and bands it lists must be checkable (feature_names_in_)."""
    import joblib
    import pandas as pd

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 64)).astype(np.float32)
    knn = KNeighborsClassifier(3).fit(X, np.repeat(["a", "b"], 20))
    path = tmp_path / "foreign.pkl"
    joblib.dump(knn, path)
    (tmp_path / "foreign.pkl.json").write_text(json.dumps({"classes": ["b", "a"]}))
    with pytest.raises(
        InputError, match=r"says classes \[b, a\] but the fitted model has \[a, b\]"
    ):
        models.load_model(str(path), trust_pickle=True)
    (tmp_path / "foreign.pkl.json").write_text(
        json.dumps({"classes": ["a", "b"], "bands": list(BANDS)})
    )
    with pytest.raises(
        InputError,
        match="lists bands that the model file does not record, so nothing checks their order",
    ):
        models.load_model(str(path), trust_pickle=True)
    named = KNeighborsClassifier(3).fit(
        pd.DataFrame(X, columns=REORDERED), np.repeat(["a", "b"], 20)
    )
    joblib.dump(named, path)
    with pytest.raises(
        InputError,
        match=r"says bands \[A00, A01, …, A63\] but the fitted model has \[A01, A00, …, A63\]",
    ):
        models.load_model(str(path), trust_pickle=True)
    km = KMeans(3, n_init=1, random_state=0).fit(X)
    joblib.dump(km, path)
    (tmp_path / "foreign.pkl.json").write_text(json.dumps({"kind": "classifier"}))
    with pytest.raises(
        InputError, match="says kind 'classifier' but the fitted model has 'clusterer'"
    ):
        models.load_model(str(path), trust_pickle=True)


def test_model_file_carries_its_fields_without_a_sidecar(store, tmp_path, capsys):
    model = str(tmp_path / "m.skops")
    knn_model(model)
    (tmp_path / "m.skops.json").unlink()
    loaded = models.load_model(model)
    assert loaded.classes == ["forest", "urban", "water"] and loaded.bands == list(BANDS)
    out = tmp_path / "classes.zarr"
    code, err = classify(capsys, store, model, out)
    assert code == 0, err
    with xr.open_zarr(out, consolidated=True) as ds:
        assert [str(v) for v in ds["class"].attrs["class_labels"]] == ["forest", "urban", "water"]


def test_kmeans_without_a_sidecar_is_still_a_clusterer(tmp_path):
    """The kind comes from the model file (or the fitted k-means), not from an optional sidecar."""
    from sklearn.cluster import KMeans

    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    path = str(tmp_path / "k.skops")
    models.save_model(
        KMeans(n_clusters=3, n_init=1, random_state=0).fit(X),
        path,
        {"kind": "clusterer", "classes": [0, 1, 2]},
    )
    os.remove(models.sidecar_path(path))
    assert models.load_model(path).kind == "clusterer"
