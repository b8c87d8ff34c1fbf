"""Training: the sample table in, cross-validated metrics out (`efm train`).

`training_samples.load_samples` reads a table `efm sample` wrote; `cross_validate` scores a
classifier with stratified k-fold (grouped by point when a point has several years);
`format_metrics` prints it. `training_samples.load_target_samples`, `cross_validate_regression`
and `format_regression_metrics` do the same for a regressor on a numeric column
(`efm train --target-column`).
"""

from __future__ import annotations

import numpy as np

from transforms.core import checks
from transforms.core.errors import InputError
from transforms.learning import spatial_cv
from transforms.learning.model_sidecar import jsonable


def check_estimator_choice(
    classifier: str | None, regressor: str | None, target_column: str | None
) -> None:
    """--classifier goes with class labels, --regressor with --target-column: refuse a mix."""
    if target_column is not None and classifier is not None:
        raise InputError(
            "--classifier",
            "--target-column trains a regressor: choose it with --regressor (or drop --target-column to train a classifier)",
        )
    if regressor is not None and target_column is None:
        raise InputError(
            "--regressor",
            "a regressor needs the numeric column to learn: add --target-column COLUMN (or use --classifier for classes)",
        )


def fitted_fields(estimator, bands: list[str], table_meta: dict, metrics: dict) -> dict:
    """Sidecar fields every trained model has: its parameters, bands, source store and metrics."""
    return {
        "params": {
            k: repr(v) if not isinstance(v, (int, float, str, bool, type(None))) else v
            for k, v in estimator.get_params(deep=False).items()
        },
        "bands": bands,
        "n_features": len(bands),
        "store": {
            k: table_meta.get(k) for k in ("embeddings", "source", "grid", "years", "store_dtype")
        },
        "metrics": metrics,
    }


def check_fold_count(folds, flag: str = "--folds") -> int:
    """A number of cross-validation folds: an int, at least 2."""
    folds = checks.check_int(folds, flag, "a number of folds", 5)
    if folds < 2:
        raise InputError(
            flag,
            f"{spatial_cv.folds_key(flag)}cross-validation needs at least 2 folds, got {folds}",
        )
    return folds


def check_neighbours(estimator, splits: list, samples: int, flag: str = "--param") -> None:
    """A k-NN's n_neighbors must not exceed the samples each cross-validation fold is fitted on."""
    k = estimator.get_params(deep=False).get("n_neighbors")
    if not isinstance(k, int) or not splits:
        return
    smallest = min(len(train) for train, _ in splits)
    if k > smallest:
        raise InputError(
            flag,
            f"n_neighbors={k} is more than the {smallest} samples the smallest of the {len(splits)} "
            f"cross-validation folds is fitted on ({samples} samples in all); the largest that works "
            f"is n_neighbors={smallest} (or add samples)",
        )


def check_folds(
    labels: np.ndarray, groups: np.ndarray | None, folds: int, flag: str = "--folds"
) -> None:
    """Refuse when a class has fewer samples (points, when grouped) than folds."""
    folds = check_fold_count(folds, flag)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise InputError(
            "--samples",
            f"only one class ({classes[0]!r}) in the samples; a classifier needs at least two",
        )
    if groups is not None:
        counts = np.array([len(np.unique(groups[labels == c])) for c in classes])
    short = [(c, n) for c, n in zip(classes, counts) if n < folds]
    if short:
        unit = "points" if groups is not None else "samples"
        listed = ", ".join(f"{c!r}: {n}" for c, n in short[:5])
        raise InputError(
            flag,
            f"{spatial_cv.folds_key(flag)}too few {unit} to validate with {folds} folds in class "
            f"{listed}; add samples to these classes or {spatial_cv.lower_folds(flag)} (each "
            f"class needs at least {folds})",
        )


def cross_validate(
    estimator,
    X: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    folds: int,
    seed: int = 0,
    *,
    folds_flag: str = "--folds",
    params_flag: str = "--param",
    blocks=None,
    curve: bool = False,
    size_flag: str = "--block-size",
) -> dict:
    """Stratified k-fold (grouped by point when a point has several years) -> metrics.

    `blocks` (spatial_cv.Blocks): stratified group k-fold over the spatial blocks instead (each
    block tested whole in one fold); `curve`: add the learning curve over the same folds."""
    from sklearn.base import clone
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict

    check_folds(labels, groups, folds, folds_flag)
    if blocks is not None:
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = _block_splits(cv, X, labels, blocks, folds, size_flag, folds_flag)
    else:
        if groups is not None:
            cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        else:
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = list(cv.split(X, labels, groups))
    check_neighbours(estimator, splits, len(labels), params_flag)
    if blocks is not None:
        _check_two_classes(labels, splits, blocks, size_flag)
    predicted = cross_val_predict(clone(estimator), X, labels, cv=splits)
    classes = np.unique(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    extra = {}
    if blocks is not None:
        extra.update(_spatial_fields(blocks, splits))
        extra["classes_missing_from_training"] = spatial_cv.class_gaps(labels, splits)
    if curve:
        extra["learning_curve"] = spatial_cv.learning_curve(
            estimator, X, labels, groups, splits, classifier=True, seed=seed
        )
    return jsonable(
        {
            "folds": folds,
            "grouped_by_point": groups is not None,
            "samples": len(labels),
            "overall_accuracy": float(accuracy_score(labels, predicted)),
            # what the AlphaEarth evaluations report: mean recall over classes, blind to class sizes
            "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
            "macro_f1": float(
                f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)
            ),
            "classes": classes,
            "per_class": {
                str(c): {"precision": p, "recall": r, "f1": f, "support": s}
                for c, p, r, f, s in zip(classes, precision, recall, f1, support)
            },
            "confusion_matrix": confusion_matrix(labels, predicted, labels=classes),
            **extra,
        }
    )


def _block_splits(
    cv, X, y, blocks, folds: int, size_flag: str, folds_flag: str = "--folds"
) -> list:
    """The folds of a group k-fold over the blocks; refuses a fold left without test samples."""
    splits = list(cv.split(X, y, blocks.ids))
    empty = sum(1 for _, test in splits if len(test) == 0)
    if empty:
        raise InputError(
            size_flag,
            f"the {blocks.count} blocks of {blocks.size_text()} leave {empty} of the {folds} folds "
            f"empty; use smaller blocks or {spatial_cv.lower_folds(folds_flag)}",
        )
    return splits


def _check_two_classes(labels, splits: list, blocks, size_flag: str) -> None:
    """A fold whose training part holds a single class cannot fit a classifier."""
    for train, _ in splits:
        present = np.unique(labels[train])
        if len(present) < 2:
            raise InputError(
                size_flag,
                f"with blocks of {blocks.size_text()}, one fold trains on class {present[0]!r} "
                f"alone (its test blocks hold every other class); use smaller blocks, or label "
                "each class in more places",
            )


def _spatial_fields(blocks, splits: list) -> dict:
    return {
        "cv": "spatial",
        "block_size": blocks.size,
        "block_size_text": blocks.size_text(),
        "crs": blocks.crs,
        "blocks": blocks.count,
        "fold_sizes": [len(test) for _, test in splits],
        "fold_blocks": [len(np.unique(blocks.ids[test])) for _, test in splits],
    }


def format_cv_line(metrics: dict, kind: str) -> str:
    """The first line of the printed metrics: which cross-validation ran."""
    grouped = " (grouped by point)" if metrics["grouped_by_point"] else ""
    if metrics.get("cv") != "spatial":
        return f"cross-validation: {metrics['folds']}-fold {kind}{grouped}, {metrics['samples']} samples"
    sizes = ", ".join(map(str, metrics["fold_sizes"]))
    return (
        f"cross-validation: {metrics['folds']}-fold spatial (blocks of "
        f"{metrics['block_size_text']}: {metrics['blocks']} blocks hold samples){grouped}, "
        f"{metrics['samples']} samples; test folds hold {sizes} samples"
    )


def format_extra(metrics: dict) -> list[str]:
    """Notes on spatial folds and the learning curve, printed after the metrics."""
    lines = []
    gaps = metrics.get("classes_missing_from_training") or {}
    if gaps:
        listed = ", ".join(f"{c!r} ({n} of {metrics['folds']})" for c, n in gaps.items())
        lines += [
            "",
            f"note: some folds train without a class, which they then never predict: {listed}; "
            "its labels lie in few blocks (label it in more places for an honest score)",
        ]
    if "learning_curve" in metrics:
        lines += ["", spatial_cv.format_curve(metrics["learning_curve"])]
    return lines


def format_metrics(metrics: dict) -> str:
    """Overall accuracy, per-class precision/recall, and the confusion matrix (rows = truth)."""
    names = [str(c) for c in metrics["classes"]]
    width = max(8, *(len(n) for n in names))
    lines = [
        format_cv_line(metrics, "stratified"),
        f"overall accuracy: {metrics['overall_accuracy']:.4f}",
        f"balanced accuracy: {metrics['balanced_accuracy']:.4f}",
        f"macro F1: {metrics['macro_f1']:.4f}",
        "",
        f"{'class':<{width}}  precision  recall  f1      support",
    ]
    for name in names:
        m = metrics["per_class"][name]
        lines.append(
            f"{name:<{width}}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:6.4f}  {m['support']:7d}"
        )
    lines += [
        "",
        "confusion matrix (rows: true class, columns: predicted)",
        " " * width + "  " + " ".join(f"{n[:8]:>8}" for n in names),
    ]
    for name, row in zip(names, metrics["confusion_matrix"]):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:>8d}" for v in row))
    return "\n".join(lines + format_extra(metrics))


def regression_cv(groups: np.ndarray | None, folds: int, seed: int = 0):
    """Shuffled k-fold, or shuffled group k-fold when a point has several years (its years stay in one fold)."""
    from sklearn.model_selection import GroupKFold, KFold

    if groups is not None:
        return GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return KFold(n_splits=folds, shuffle=True, random_state=seed)


def cross_validate_regression(
    estimator,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    folds: int,
    seed: int = 0,
    *,
    folds_flag: str = "--folds",
    params_flag: str = "--param",
    blocks=None,
    curve: bool = False,
    size_flag: str = "--block-size",
) -> dict:
    """k-fold predictions of every sample -> R², RMSE, MAE, and the target's mean and spread.

    `blocks`: group k-fold over the spatial blocks instead; `curve`: add the learning curve."""
    from sklearn.base import clone
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    from sklearn.model_selection import GroupKFold, cross_val_predict

    folds = check_fold_count(folds, folds_flag)
    units = len(np.unique(groups)) if groups is not None else len(y)
    if units < folds:
        raise InputError(
            folds_flag,
            f"{spatial_cv.folds_key(folds_flag)}too few "
            f"{'points' if groups is not None else 'samples'} ({units}) to validate with {folds} "
            f"folds; add samples or {spatial_cv.lower_folds(folds_flag)}",
        )
    if blocks is not None:
        cv = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = _block_splits(cv, X, y, blocks, folds, size_flag, folds_flag)
    else:
        splits = list(regression_cv(groups, folds, seed).split(X, y, groups))
    check_neighbours(estimator, splits, len(y), params_flag)
    predicted = cross_val_predict(clone(estimator), X, y, cv=splits)
    extra = _spatial_fields(blocks, splits) if blocks is not None else {}
    if curve:
        extra["learning_curve"] = spatial_cv.learning_curve(
            estimator, X, y, groups, splits, classifier=False, seed=seed
        )
    return jsonable(
        {
            "folds": folds,
            "grouped_by_point": groups is not None,
            "samples": len(y),
            "r2": float(r2_score(y, predicted)),
            "rmse": float(np.sqrt(mean_squared_error(y, predicted))),
            "mae": float(mean_absolute_error(y, predicted)),
            "target_mean": float(np.mean(y)),
            "target_std": float(np.std(y)),
            "target_min": float(np.min(y)),
            "target_max": float(np.max(y)),
            **extra,
        }
    )


def format_regression_metrics(metrics: dict, target: str, units: str = "") -> str:
    u = f" {units}" if units else ""
    return "\n".join(
        [
            format_cv_line(metrics, "shuffled"),
            f"target {target}: mean {metrics['target_mean']:.4g}{u}, std {metrics['target_std']:.4g}{u}, range {metrics['target_min']:.4g} to {metrics['target_max']:.4g}{u}",
            f"R²:   {metrics['r2']:.4f}",
            f"RMSE: {metrics['rmse']:.4g}{u}",
            f"MAE:  {metrics['mae']:.4g}{u}",
            *format_extra(metrics),
        ]
    )
