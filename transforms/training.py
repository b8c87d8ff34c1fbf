"""Training: the sample table in, cross-validated metrics out (`efm train`).

`load_samples` reads a table `efm sample` wrote; `cross_validate` scores an estimator with
stratified k-fold (grouped by point when a point has several years); `format_metrics` prints it.
"""
from __future__ import annotations

import fsspec
import numpy as np

from transforms.errors import InputError
from transforms.models import _jsonable


def load_samples(path: str, label_column: str = "label", flag: str = "--samples"):
    """A table from `efm sample` -> (X float32 (n, bands), labels, groups (point ids) or None, bands, table metadata)."""
    import pandas as pd

    from transforms import sampling

    try:
        with fsspec.open(path, "rb") as f:
            frame = pd.read_parquet(f)
        meta = sampling.read_table_metadata(path)
    except FileNotFoundError:
        raise InputError(flag, f"{path} does not exist") from None
    except Exception as exc:
        raise InputError(flag, f"cannot read {path} as a Parquet table: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if label_column not in frame.columns:
        raise InputError("--label-column", f"{path} has no column {label_column!r}; its columns start {', '.join(map(str, frame.columns[:8]))}")
    bands = meta.get("bands") or [c for c in frame.columns if len(str(c)) == 3 and str(c)[0] == "A" and str(c)[1:].isdigit()]
    missing = [b for b in bands if b not in frame.columns]
    if not bands or missing:
        raise InputError(flag, f"{path} lacks band columns ({'missing ' + ', '.join(missing[:3]) if missing else 'none of A00…A63'}); make it with `efm sample`")
    frame = frame[frame[label_column].notna()]
    X = frame[bands].to_numpy(np.float32)
    keep = ~np.isnan(X).any(axis=1)
    frame, X = frame[keep], X[keep]
    if len(frame) == 0:
        raise InputError(flag, f"{path} holds no usable sample")
    groups = frame["point_id"].to_numpy() if "point_id" in frame.columns and frame["point_id"].duplicated().any() else None
    return X, frame[label_column].to_numpy(), groups, list(bands), meta


def check_folds(labels: np.ndarray, groups: np.ndarray | None, folds: int) -> None:
    """Refuse when a class has fewer samples (points, when grouped) than folds."""
    if folds < 2:
        raise InputError("--folds", f"cross-validation needs at least 2 folds, got {folds}")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise InputError("--samples", f"only one class ({classes[0]!r}) in the samples; a classifier needs at least two")
    if groups is not None:
        counts = np.array([len(np.unique(groups[labels == c])) for c in classes])
    short = [(c, n) for c, n in zip(classes, counts) if n < folds]
    if short:
        unit = "points" if groups is not None else "samples"
        listed = ", ".join(f"{c!r}: {n}" for c, n in short[:5])
        raise InputError("--folds", f"too few {unit} to validate with {folds} folds in class {listed}; add samples to these classes or lower --folds (each class needs at least {folds})")


def cross_validate(estimator, X: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int = 0) -> dict:
    """Stratified k-fold (grouped by point when a point has several years) -> metrics."""
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict

    check_folds(labels, groups, folds)
    if groups is not None:
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(clone(estimator), X, labels, groups=groups, cv=cv)
    classes = np.unique(labels)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    return _jsonable({
        "folds": folds,
        "grouped_by_point": groups is not None,
        "samples": len(labels),
        "overall_accuracy": float(accuracy_score(labels, predicted)),
        "classes": classes,
        "per_class": {str(c): {"precision": p, "recall": r, "f1": f, "support": s} for c, p, r, f, s in zip(classes, precision, recall, f1, support)},
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes),
    })


def format_metrics(metrics: dict) -> str:
    """Overall accuracy, per-class precision/recall, and the confusion matrix (rows = truth)."""
    names = [str(c) for c in metrics["classes"]]
    width = max(8, *(len(n) for n in names))
    lines = [f"cross-validation: {metrics['folds']}-fold stratified{' (grouped by point)' if metrics['grouped_by_point'] else ''}, {metrics['samples']} samples",
             f"overall accuracy: {metrics['overall_accuracy']:.4f}", "",
             f"{'class':<{width}}  precision  recall  f1      support"]
    for name in names:
        m = metrics["per_class"][name]
        lines.append(f"{name:<{width}}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:6.4f}  {m['support']:7d}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted)", " " * width + "  " + " ".join(f"{n[:8]:>8}" for n in names)]
    for name, row in zip(names, metrics["confusion_matrix"]):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:>8d}" for v in row))
    return "\n".join(lines)
