"""`efm train --regressor NAME --label-column COLUMN`: a regressor cross-validated against scikit-learn's own numbers,
its model + sidecar pair (kind, target and bands covered by the model file), every registered
regressor round-tripping through .skops and pickle, and the bad input refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GroupKFold, KFold, cross_val_predict
from sklearn.neighbors import KNeighborsRegressor

from pipelines import train as train_cli
from tests.helpers.regression_table import regression_table
from tests.helpers.store_factory import BANDS
from transforms.core.errors import InputError
from transforms.learning import models


def reference_metrics(frame, cv, groups=None):
    """R², RMSE and MAE from scikit-learn's cross_val_predict, computed here in numpy."""
    X, y = frame[list(BANDS)].to_numpy(np.float32), frame["agbd"].to_numpy(np.float64)
    predicted = cross_val_predict(KNeighborsRegressor(n_neighbors=5), X, y, groups=groups, cv=cv)
    residual = y - predicted
    return {
        "r2": 1 - (residual**2).sum() / ((y - y.mean()) ** 2).sum(),
        "rmse": np.sqrt((residual**2).mean()),
        "mae": np.abs(residual).mean(),
        "target_mean": y.mean(),
        "target_std": y.std(),
    }


@pytest.mark.parametrize(
    "years, tuning, folds, seed",
    [
        (1, "target_units=Mg/ha", 5, 0),
        (2, "target_units=Mg/ha", 5, 0),
        # the folds and the seed, as --tuning keys, reach scikit-learn's splitter
        (1, "target_units=Mg/ha,folds=3,seed=7", 3, 7),
        (2, "folds=4,target_units=Mg/ha,seed=11", 4, 11),
    ],
)
def test_metrics_equal_scikit_learn_on_the_same_folds(tmp_path, capsys, years, tuning, folds, seed):
    table, out = tmp_path / "s.parquet", tmp_path / "knn.skops"
    frame = regression_table(table, years=years)
    assert (
        train_cli.run(
            [
                "--samples",
                str(table),
                "--label-column",
                "agbd",
                "--regressor",
                "knn",
                "--tuning",
                tuning,
                "--output",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    meta = json.loads((tmp_path / "knn.skops.json").read_text())
    groups = frame["point_id"].to_numpy() if years > 1 else None
    cv = (
        GroupKFold(folds, shuffle=True, random_state=seed)
        if groups is not None
        else KFold(folds, shuffle=True, random_state=seed)
    )
    if (
        groups is not None
    ):  # a point's years never straddle a fold: no leak from one year to the other
        for _, test in cv.split(frame, groups=groups):
            assert not set(groups[test]) & set(np.delete(groups, test))
    expected = reference_metrics(frame, cv, groups)
    for name, value in expected.items():
        assert meta["metrics"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert meta["metrics"]["grouped_by_point"] == (years > 1) and meta["metrics"]["samples"] == len(
        frame
    )
    assert (
        f"R²:   {expected['r2']:.4f}" in printed
        and f"RMSE: {expected['rmse']:.4g} Mg/ha" in printed
    )
    assert (
        meta["kind"] == "regressor"
        and meta["target"] == "agbd"
        and meta["units"] == "Mg/ha"
        and meta["bands"] == list(BANDS)
    )
    assert "classes" not in meta
    loaded = models.load_model(str(out))
    assert loaded.kind == "regressor" and loaded.classes is None and loaded.bands == list(BANDS)
    X = frame[list(BANDS)].to_numpy(np.float32)
    np.testing.assert_array_equal(
        loaded.model.predict(X), KNeighborsRegressor(5).fit(X, frame["agbd"]).predict(X)
    )


def test_sidecar_target_is_covered_by_the_model_file(tmp_path):
    table, out = tmp_path / "s.parquet", tmp_path / "m.skops"
    regression_table(table, points=30, years=1)
    assert (
        train_cli.run(
            [
                "--samples",
                str(table),
                "--label-column",
                "agbd",
                "--regressor",
                "ridge",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    sidecar_file = tmp_path / "m.skops.json"
    meta = json.loads(sidecar_file.read_text())
    for field, value in (("target", "canopy_height"), ("kind", "classifier")):
        sidecar_file.write_text(json.dumps({**meta, field: value}))
        with pytest.raises(InputError, match=f"says {field} '{value}' but the model file records"):
            models.load_model(str(out))


@pytest.mark.parametrize("suffix", [".skops", ".pkl"])
@pytest.mark.parametrize("name", list(models.REGRESSORS))
def test_every_regressor_round_trips(tmp_path, name, suffix):
    table, out = tmp_path / "s.parquet", tmp_path / f"m{suffix}"
    frame = regression_table(table, points=40, years=1)
    quick = {
        "random-forest": ["n_estimators=10"],
        "extra-trees": ["n_estimators=10"],
        "gradient-boosting": ["max_iter=10"],
    }.get(name, [])
    argv = [
        "--samples",
        str(table),
        "--label-column",
        "agbd",
        "--regressor",
        name,
        "--tuning",
        "folds=2",
        "--output",
        str(out),
    ]
    assert train_cli.run(argv + [f"--param={p}" for p in quick]) == 0
    sha = json.loads((tmp_path / f"m{suffix}.json").read_text())["sha256"]
    loaded = models.load_model(str(out), sha256=sha if suffix == ".pkl" else None)
    expected = models.make_regressor(name, models.parse_params(quick)).fit(
        frame[list(BANDS)].to_numpy(np.float32), frame["agbd"]
    )
    X = frame[list(BANDS)].to_numpy(np.float32)
    # same model, fitted twice: equal up to float32 rounding of the linear solvers (targets ~ 10)
    np.testing.assert_allclose(loaded.model.predict(X), expected.predict(X), rtol=1e-5, atol=1e-4)
    assert loaded.kind == "regressor" and loaded.classes is None


def bad_table(path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 64)).astype(np.float32)
    pd.DataFrame(
        {
            "point_id": np.arange(30),
            "label": np.repeat(["a", "b", "c"], 10),
            "two": np.repeat([0.0, 1.0, 1.0], 10),
            "agbd": rng.normal(size=30),
            "year": 2021,
            **dict(zip(BANDS, X.T)),
        }
    ).to_parquet(path)


REG = ["--regressor", "knn"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            [*REG, "--label-column", "label"],
            "--label-column: column 'label' of .* is not numeric .*for classes use --classifier "
            "instead of --regressor",
        ),
        (
            [*REG, "--label-column", "two"],
            "--label-column: column 'two' of .* holds only 2 distinct values .*did you mean "
            "--classifier instead of --regressor",
        ),
        ([*REG, "--label-column", "biomass"], "--label-column: .* has no column 'biomass'"),
        # --regressor alone: the numeric target is --label-column's default column, label
        (REG, "--label-column: column 'label' of .* is not numeric"),
        (
            [*REG, "--label-column", "agbd", "--classifier", "knn"],
            "--regressor: --classifier trains a classifier, --regressor a regressor: give one",
        ),
        (["--label-column", "agbd", "--regressor", "xgb"], "--regressor: unknown regressor 'xgb'"),
        (
            [*REG, "--label-column", "agbd", "--tuning", "folds=40"],
            "--tuning: folds: too few samples \\(30\\) to validate with 40 folds; add samples or "
            "lower folds \\(--tuning folds=N\\)$",
        ),
        # --target-column merged into --label-column: a script that still passes it is told how
        (
            ["--target-column", "agbd", *REG],
            "^efm train: error: --target-column: use --label-column \\(with --regressor it names "
            "the numeric target\\)$",
        ),
        (["--target-column=agbd"], "--target-column: use --label-column \\(with --regressor"),
        # the moved knobs: the old flag names its key; a bad value names the key
        (["--folds", "3"], "--folds: moved: use --tuning folds=3 "),
        (["--seed=4"], "--seed: moved: use --tuning seed=4 "),
        (["--target-units", "Mg/ha"], "--target-units: moved: use --tuning target_units=Mg/ha "),
        (
            ["--drop-missing-target"],
            "--drop-missing-target: moved: use --tuning drop_missing_target=true ",
        ),
        (
            [*REG, "--label-column", "agbd", "--tuning", "folds=1"],
            "--tuning: folds: cross-validation needs at least 2 folds, got 1$",
        ),
        (["--tuning", "folds=two"], "--tuning: folds: must be an integer, got 'two'$"),
        (
            ["--tuning", "seed=-1"],
            "--tuning: seed: must be a whole number in 0..4294967295 \\(numpy's limit\\), got -1$",
        ),
        (
            ["--tuning", "drop_missing_target=maybe"],
            "--tuning: drop_missing_target: must be true or false, got 'maybe'$",
        ),
        (
            ["--tuning", "drop_missing_target=true"],
            "--tuning: drop_missing_target: applies to a regressor's target: add --regressor NAME",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    table = tmp_path / "s.parquet"
    bad_table(table)
    assert (
        train_cli.run(["--samples", str(table), "--output", str(tmp_path / "m.skops"), *extra]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("efm train: error: ")
    assert __import__("re").search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]
