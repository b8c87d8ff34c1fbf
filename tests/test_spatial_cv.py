"""`efm train --cv spatial --block-size` and `--learning-curve` (and efm.train's cv=, block_size=,
learning_curve=): on clustered points whose label follows location-correlated noise, random
k-fold is clearly optimistic and the spatial score is not, the spatial score agrees with
scikit-learn's GroupKFold on blocks computed here (floor(x / size), floor(y / size)), the
learning curve's last point is the full cross-validation score computed here with scikit-learn,
and bad input is refused in one line with nothing written."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import (
    GroupKFold,
    StratifiedKFold,
    cross_val_predict,
    cross_val_score,
)
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

import efm
from pipelines import train as train_cli
from transforms.core.errors import InputError

BANDS = [f"A{i:02d}" for i in range(64)]
PIXEL = 10.0
X0, Y0 = 500_000.0, 4_200_000.0  # the grid's top-left corner: a multiple of every block size
SIDE = 2000  # pixels: a 20 km square
GRID = {
    "crs": "EPSG:32610",
    "transform": [PIXEL, 0.0, X0, 0.0, -PIXEL, Y0, 0.0, 0.0, 1.0],
    "width": SIDE,
    "height": SIDE,
}


def clustered(clusters=150, per_cluster=5, seed=0, regression=False, spread=4):
    """Points in tight clusters (a few pixels across); each cluster has its own random offset in
    embedding space (location-correlated noise) and its own label (or target), unrelated to
    anything a model could learn elsewhere. Returns the frame and each row's (x, y) in metres."""
    rng = np.random.default_rng(seed)
    rows, xs, ys = [], [], []
    pid = 0
    for c in range(clusters):
        cx, cy = rng.integers(spread, SIDE - spread, size=2)
        offset = rng.normal(scale=1.0, size=64)
        label = rng.normal() if regression else ("crop" if c % 2 else "forest")
        for _ in range(per_cluster):
            col = int(cx + rng.integers(-spread, spread + 1))
            row = int(cy + rng.integers(-spread, spread + 1))
            v = (offset + rng.normal(scale=0.1, size=64)).astype(np.float32)
            rows.append(
                {
                    "point_id": pid,
                    "label": label,
                    "year": 2024,
                    "pixel_x": col,
                    "pixel_y": row,
                    **dict(zip(BANDS, v)),
                }
            )
            xs.append(X0 + (col + 0.5) * PIXEL)
            ys.append(Y0 - (row + 0.5) * PIXEL)
            pid += 1
    frame = pd.DataFrame(rows)
    frame["point_x"] = np.array(xs)
    frame["point_y"] = np.array(ys)
    return frame, np.array(xs), np.array(ys)


def write_table(frame, path, meta=None):
    meta = {"grid": GRID, "bands": BANDS} if meta is None else meta
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({b"efm": json.dumps(meta).encode()}), path)
    return str(path)


def independent_blocks(xs, ys, size):
    """floor(x / size), floor(y / size) -> one int per block, numbered here."""
    keys = [(int(np.floor(x / size)), int(np.floor(y / size))) for x, y in zip(xs, ys)]
    numbers = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return np.array([numbers[k] for k in keys])


def train(tmp_path, capsys, table, *extra, name="m.skops"):
    out = tmp_path / name
    code = train_cli.run(["--samples", table, "--classifier", "knn", "--output", str(out), *extra])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    return json.loads((tmp_path / f"{name}.json").read_text())["metrics"], printed


def test_random_kfold_is_optimistic_and_spatial_matches_group_kfold(tmp_path, capsys):
    frame, xs, ys = clustered()
    table = write_table(frame, tmp_path / "s.parquet")
    random_cv, _ = train(tmp_path, capsys, table, name="random.skops")
    spatial, printed = train(
        tmp_path, capsys, table, "--cv", "spatial", "--block-size", "1km", name="spatial.skops"
    )
    X, y = frame[BANDS].to_numpy(np.float32), frame["label"].to_numpy()
    blocks = independent_blocks(xs, ys, 1000.0)
    reference = accuracy_score(
        y,
        cross_val_predict(
            KNeighborsClassifier(n_neighbors=5), X, y, groups=blocks, cv=GroupKFold(5)
        ),
    )
    # random k-fold sees each cluster's neighbours: near perfect; on blocks it is near chance
    assert random_cv["overall_accuracy"] > 0.85
    assert spatial["overall_accuracy"] < 0.7 and reference < 0.7
    assert random_cv["overall_accuracy"] - spatial["overall_accuracy"] > 0.25
    assert abs(spatial["overall_accuracy"] - reference) < 0.2
    # what the summary reports: the CV, the blocks, the folds' sizes
    assert spatial["cv"] == "spatial" and spatial["blocks"] == len(np.unique(blocks))
    assert sum(spatial["fold_sizes"]) == len(frame) and len(spatial["fold_sizes"]) == 5
    assert "cv" not in random_cv  # the default is today's output
    summary = printed.split("efm train:")[-1]
    assert re.search(rf"spatial, 5 folds over {len(np.unique(blocks))} blocks of 1 km", summary)
    assert ", ".join(map(str, spatial["fold_sizes"])) in summary


def test_no_training_sample_shares_a_block_with_a_test_sample(tmp_path):
    """The folds themselves: efm's splits never put one block on both sides (checked here
    through the learning curve's per-fold scores being computed on whole blocks is not enough:
    read the folds back by training with a 1-NN, whose test prediction is its nearest training
    sample's label; in a cluster split across folds it would be right)."""
    frame, xs, ys = clustered(seed=3)
    _, report = efm.train(
        write_table(frame, tmp_path / "s.parquet"),
        classifier="knn",
        params={"n_neighbors": 1},
        cv="spatial",
        block_size=2000,
    )
    blocks = independent_blocks(xs, ys, 2000.0)
    assert report.metrics["blocks"] == len(np.unique(blocks))
    _, random_report = efm.train(
        write_table(frame, tmp_path / "r.parquet"), classifier="knn", params={"n_neighbors": 1}
    )
    assert random_report.metrics["overall_accuracy"] == 1.0
    assert report.metrics["overall_accuracy"] < 0.7


def test_regressor_spatial_r2_is_not_optimistic(tmp_path):
    frame, xs, ys = clustered(regression=True, seed=1)
    frame = frame.rename(columns={"label": "agbd"})
    table = write_table(frame, tmp_path / "s.parquet")
    _, rand = efm.train(table, target_column="agbd", regressor="knn")
    _, spatial = efm.train(
        table, target_column="agbd", regressor="knn", cv="spatial", block_size="1km"
    )
    X, y = frame[BANDS].to_numpy(np.float32), frame["agbd"].to_numpy()
    reference = r2_score(
        y,
        cross_val_predict(
            KNeighborsRegressor(n_neighbors=5),
            X,
            y,
            groups=independent_blocks(xs, ys, 1000.0),
            cv=GroupKFold(5),
        ),
    )
    assert rand.metrics["r2"] > 0.7
    assert spatial.metrics["r2"] < 0.2 and reference < 0.2
    assert rand.metrics["r2"] - spatial.metrics["r2"] > 0.5
    assert spatial.metrics["cv"] == "spatial" and sum(spatial.metrics["fold_sizes"]) == len(y)
    assert "blocks of 1 km" in str(spatial)


def test_learning_curve_last_point_is_the_full_cv_score(tmp_path, capsys):
    """Random CV: the last point's mean is scikit-learn's cross_val_score over the same
    StratifiedKFold(shuffle, seed); each intermediate point is the mean over folds of a model fit
    on n labels per class drawn here from the fold's training part."""
    rng = np.random.default_rng(7)
    n = 300
    y = np.where(rng.random(n) < 0.5, "a", "b")
    X = rng.normal(size=(n, 64)).astype(np.float32)
    X[:, 0] += np.where(y == "a", 1.0, -1.0)  # a weak signal: more labels help
    frame = pd.DataFrame(X, columns=BANDS)
    frame.insert(0, "label", y)
    frame.insert(0, "point_id", np.arange(n))
    frame["pixel_x"], frame["pixel_y"] = np.arange(n) % SIDE, np.arange(n) // 7
    table = write_table(frame, tmp_path / "s.parquet")
    png = tmp_path / "curve.png"
    metrics, printed = train(
        tmp_path, capsys, table, "--tuning", "seed=3", "--learning-curve", str(png)
    )
    curve = metrics["learning_curve"]
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=3)
    full = cross_val_score(KNeighborsClassifier(n_neighbors=5), X, y, cv=cv, scoring="accuracy")
    assert curve["points"][-1]["mean"] == pytest.approx(full.mean(), abs=1e-12)
    assert curve["points"][-1]["std"] == pytest.approx(full.std(), abs=1e-12)
    folds = list(cv.split(X, y))
    largest = max((y[tr] == c).sum() for tr, _ in folds for c in "ab")
    assert [p["n"] for p in curve["points"]] == [5, 10, 20, 40, 80, largest]
    # the sizes actually used: n per class (at most what a fold's training part holds)
    for p in curve["points"][:-1]:
        expected = np.mean([sum(min(p["n"], (y[tr] == c).sum()) for c in "ab") for tr, _ in folds])
        assert p["training_samples"] == pytest.approx(expected)
    assert curve["points"][-1]["training_samples"] == pytest.approx(
        np.mean([len(tr) for tr, _ in folds])
    )
    # the table and the PNG
    assert "learning curve (accuracy over the folds against labels per class)" in printed
    assert re.search(rf"all \({largest}\)\s+{full.mean():.4f}", printed)
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 100
    assert "learning curve" in printed.split("efm train:")[-1]


def test_learning_curve_over_spatial_folds_and_default_png_path(tmp_path, capsys):
    """Spatial CV: the last point's per-fold scores, weighted by the folds' sizes, are the pooled
    overall accuracy (two computations of the same folds); the PNG goes beside the model."""
    frame, _, _ = clustered(seed=5)
    table = write_table(frame, tmp_path / "s.parquet")
    metrics, printed = train(
        tmp_path, capsys, table, "--cv", "spatial", "--block-size", "500m", "--learning-curve"
    )
    last = metrics["learning_curve"]["points"][-1]
    pooled = np.dot(last["fold_scores"], metrics["fold_sizes"]) / sum(metrics["fold_sizes"])
    assert pooled == pytest.approx(metrics["overall_accuracy"], abs=1e-12)
    assert (tmp_path / "m.skops.learning-curve.png").is_file()
    assert "still rising" in printed or "levelling off" in printed


def test_saturated_curve_is_not_rising(tmp_path):
    rng = np.random.default_rng(2)
    y = np.repeat(["a", "b"], 100)
    X = rng.normal(size=(200, 64)).astype(np.float32)
    X[:, 0] += np.where(y == "a", 20.0, -20.0)  # separable from 5 labels on
    frame = pd.DataFrame(X, columns=BANDS)
    frame.insert(0, "label", y)
    _, report = efm.train(frame, classifier="knn", learning_curve=True)
    curve = report.metrics["learning_curve"]
    assert [p["mean"] for p in curve["points"]] == [1.0] * len(curve["points"])
    assert curve["still_rising"] is False and "levelling off" in str(report)


def test_default_cv_output_is_unchanged(tmp_path, capsys):
    """--cv random (the default) prints and records what it did before the flag existed."""
    frame, _, _ = clustered()
    table = write_table(frame, tmp_path / "s.parquet")
    metrics, printed = train(tmp_path, capsys, table, name="a.skops")
    explicit, _ = train(tmp_path, capsys, table, "--cv", "random", name="b.skops")
    assert metrics == explicit
    assert set(metrics) == {
        "folds",
        "grouped_by_point",
        "samples",
        "overall_accuracy",
        "balanced_accuracy",
        "macro_f1",
        "classes",
        "per_class",
        "confusion_matrix",
    }
    assert printed.splitlines()[0] == f"cross-validation: 5-fold stratified, {len(frame)} samples"
    assert "learning curve" not in printed and not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    "extra, meta, message",
    [
        (
            ["--cv", "spatial", "--block-size", "5m"],
            None,
            r"--block-size: 5 m is smaller than a pixel of the store \(10 m\)",
        ),
        (
            ["--cv", "spatial", "--block-size", "50km"],
            None,
            r"--block-size: the samples lie in 1 block of 50 km, fewer than the 5 folds .*"
            r"try --block-size \d+k?m \(\d+ blocks\)",
        ),
        (
            ["--cv", "spatial", "--block-size", "5 miles"],
            None,
            r"--block-size: cannot read '5 miles' as a size: give it as 5km, 500m or 5000",
        ),
        (["--cv", "spatial", "--block-size", "-5km"], None, r"--block-size: cannot read '-5km'"),
        (["--cv", "spatial", "--block-size", "0"], None, r"--block-size: .*positive"),
        (["--block-size", "5km"], None, r"--block-size: .*add --cv spatial, or drop"),
        (["--cv", "spatial"], None, r"--block-size: --cv spatial needs the side"),
        (
            ["--cv", "spatial", "--block-size", "5km"],
            {"bands": BANDS},
            r"--cv: spatial cross-validation needs each sample's place, and .* lacks the grid",
        ),
        (
            ["--cv", "spatial", "--block-size", "5km"],
            {"bands": BANDS, "product": "zonal", "grid": GRID},
            r"--cv: .* is a zonal table .* records no coordinates",
        ),
        (
            ["--cv", "spatial", "--block-size", "5km"],
            {"bands": BANDS, "grid": {**GRID, "crs": "EPSG:4326"}},
            r"--block-size: the store's CRS \(EPSG:4326\) is not in metres",
        ),
        (["--cv", "blocks"], None, r"--cv: invalid choice"),
        (["--learning-curve", "curve.txt"], None, r"--learning-curve: writes a PNG"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, meta, message):
    frame, _, _ = clustered(clusters=10, per_cluster=6)
    write_table(frame, tmp_path / "s.parquet", meta)
    code = train_cli.run(
        ["--samples", str(tmp_path / "s.parquet"), "--output", str(tmp_path / "m.skops"), *extra]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("efm train: error: ")
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]


def test_table_without_pixel_columns_is_refused(tmp_path, capsys):
    frame, _, _ = clustered(clusters=10, per_cluster=6)
    table = write_table(frame.drop(columns=["pixel_x", "pixel_y"]), tmp_path / "s.parquet")
    args = ["--samples", table, "--output", str(tmp_path / "m.skops")]
    assert train_cli.run([*args, "--cv", "spatial", "--block-size", "1km"]) == 2
    assert "lacks pixel_x, pixel_y" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"cv": "spatial"}, "block_size"),
        ({"block_size": "5km"}, "block_size"),
        ({"cv": "nearby", "block_size": "5km"}, "cv"),
        ({"cv": "spatial", "block_size": "1 furlong"}, "block_size"),
        ({"cv": "spatial", "block_size": "100km"}, "block_size"),
        ({"learning_curve": "curve.jpg"}, "learning_curve"),
    ],
)
def test_api_refusals_name_the_parameter(tmp_path, kwargs, flag):
    frame, _, _ = clustered(clusters=10, per_cluster=6)
    frame.attrs["efm"] = {"grid": GRID, "bands": BANDS}
    with pytest.raises(InputError) as caught:
        efm.train(frame, classifier="knn", **kwargs)
    assert caught.value.flag == flag


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_learning_curve_never_replaces_a_png_efm_did_not_write(tmp_path, capsys, overwrite):
    frame, _, _ = clustered(clusters=10, per_cluster=6)
    table = write_table(frame, tmp_path / "s.parquet")
    (tmp_path / "foreign.png").write_bytes(b"not ours")
    code = train_cli.run(
        ["--samples", table, "--output", str(tmp_path / "m.skops"), *overwrite]
        + ["--learning-curve", str(tmp_path / "foreign.png")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--learning-curve: " in err and "not an efm quicklook PNG" in err, err
    assert (tmp_path / "foreign.png").read_bytes() == b"not ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.png", "s.parquet"]


def test_a_group_goes_whole_to_the_block_of_its_mean_place(tmp_path):
    """A table's group_column (a polygon's samples) wins over blocks: each field straddles a
    block border with one sample left of it and three right of it, and is counted in the block
    of its mean place, never split; the block count is computed here from the means."""
    rng = np.random.default_rng(4)
    rows = []
    for field in range(60):
        border = 100 * (1 + field % 18)  # a 1 km border (100 pixels of 10 m)
        line = 30 + 60 * (field // 18) + field % 7
        for col in (border - 1, border, border + 1, border + 2):
            v = rng.normal(size=64).astype(np.float32)
            rows.append({"field": field, "label": "ab"[field % 2], "pixel_x": col})
            rows[-1].update({"pixel_y": line, **dict(zip(BANDS, v))})
    frame = pd.DataFrame(rows)
    meta = {"grid": GRID, "bands": BANDS, "group_column": "field"}
    _, report = efm.train(
        write_table(frame, tmp_path / "s.parquet", meta),
        classifier="knn",
        cv="spatial",
        block_size="1km",
    )
    xs = X0 + (frame["pixel_x"] + 0.5) * PIXEL
    ys = Y0 - (frame["pixel_y"] + 0.5) * PIXEL
    means = pd.DataFrame({"f": frame["field"], "x": xs, "y": ys}).groupby("f").mean()
    assert report.metrics["blocks"] == len(np.unique(independent_blocks(means.x, means.y, 1000)))
    per_row = len(np.unique(independent_blocks(xs, ys, 1000)))
    assert per_row > report.metrics["blocks"]  # the rows alone would split every field
