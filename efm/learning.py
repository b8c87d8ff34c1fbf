"""Train a classifier or regressor on a sample table, as `efm train` does; save it for `efm classify`."""

from __future__ import annotations

import dataclasses
import os

import pandas as pd

from transforms.core import checks
from transforms.core.errors import InputError
from transforms.learning import (
    model_sidecar,
    models,
    skops_trust,
    spatial_cv,
    training,
    training_samples,
)
from transforms.storage import outputs


@dataclasses.dataclass
class Report:
    """What `efm train` prints: cross-validated metrics (``metrics``, a dict) and their text (``str(report)``).

    ``sidecar`` holds the fields `efm.save_model` writes next to the model file.
    """

    kind: str  # "classifier" or "regressor"
    metrics: dict
    text: str
    sidecar: dict

    def __str__(self) -> str:
        return self.text

    def _repr_pretty_(
        self, printer, cycle
    ) -> None:  # IPython / Jupyter show the text, as the CLI prints it
        printer.text(self.text)


def _table(table) -> tuple[pd.DataFrame, dict, str]:
    """(frame, efm metadata, name for messages) of a DataFrame from `efm.sample` or a Parquet path from `efm sample`."""
    if isinstance(table, (str, os.PathLike)):
        frame, meta = training_samples._read_table(os.fspath(table), "table")
        return frame, meta, os.fspath(table)
    if not isinstance(table, pd.DataFrame):
        raise InputError(
            "table",
            f"expected the DataFrame efm.sample returns or a Parquet table from `efm sample`, got {type(table).__name__}",
        )
    return table, dict(table.attrs.get("efm", {})), "the table"


def train(
    table,
    *,
    classifier: str | None = None,
    regressor: str | None = None,
    target_column: str | None = None,
    label_column: str = "label",
    params: dict | None = None,
    target_units: str = "",
    folds: int = 5,
    seed: int = 0,
    drop_missing_target: bool = False,
    cv: str = "random",
    block_size=None,
    learning_curve=False,
):
    """Cross-validate, then fit on every sample -> ``(model, report)``, the same as `efm train`.

    ``classifier``: one of ``knn, random-forest (default), extra-trees, gradient-boosting,
    logistic-regression, ridge, svm, mlp``; or, with ``target_column`` (a numeric column kept by
    `efm.sample`), ``regressor``: ``knn, random-forest (default), extra-trees, gradient-boosting,
    ridge, linear, svr, mlp``. ``params``: estimator parameters, e.g. ``{"n_neighbors": 7}``.
    ``folds`` (an int, at least 2) and ``seed`` (an int in 0..2**32-1) are checked as `efm train`
    checks them; a target that is not a finite number (NaN, inf) is refused unless
    ``drop_missing_target=True``, which trains on the other rows.
    The model is the fitted scikit-learn estimator; it records its kind, classes (or target) and
    bands, which `efm.predict` checks against the store.

    ``cv="spatial"`` with ``block_size`` (``"5km"``, ``"500m"``, or a number in the store CRS's
    units) validates over square blocks of the grid, each block tested whole in one fold, as
    `efm train --cv spatial --block-size` does; ``report.metrics`` then holds ``cv``,
    ``blocks`` and ``fold_sizes``. ``learning_curve=True`` adds
    ``report.metrics["learning_curve"]`` (the score against labels per class over the same
    folds; ``still_rising``); a path ending in ``.png`` also draws it there (never over a file
    efm did not write).

    >>> model, report = efm.train(table, classifier="knn", params={"n_neighbors": 3})   # doctest: +SKIP
    >>> print(report)   # overall / balanced accuracy, per-class scores, confusion matrix  # doctest: +SKIP
    >>> report.metrics["balanced_accuracy"]                                           # doctest: +SKIP
    """
    checks.check_seed(seed, "seed")
    folds = training.check_fold_count(folds, "folds")
    training.check_estimator_choice(classifier, regressor, target_column)
    block = spatial_cv.check_cv_choice(cv, block_size, cv_flag="cv", size_flag="block_size")
    png = _curve_png(learning_curve)
    frame, meta, name = _table(table)
    spatial = dict(folds_flag="folds", params_flag="params", size_flag="block_size")

    def blocks_of(used, groups):
        if block is None:
            return None
        return spatial_cv.make_blocks(
            used,
            meta,
            *block,
            groups,
            folds,
            name,
            cv_flag="cv",
            size_flag="block_size",
            folds_flag="folds",
        )

    if target_column is None:
        classifier = classifier or "random-forest"
        estimator = models.make_classifier(classifier, params, flag="classifier")
        X, labels, groups, bands, meta, used = training_samples.frame_samples(
            frame, meta, label_column, name, flag="table", rows=True
        )
        metrics = training.cross_validate(
            estimator,
            X,
            labels,
            groups,
            folds,
            seed,
            blocks=blocks_of(used, groups),
            curve=bool(learning_curve),
            **spatial,
        )
        text = training.format_metrics(metrics)
        estimator.fit(X, labels)
        sidecar = {
            "kind": "classifier",
            "classifier": classifier,
            "classes": estimator.classes_,
            "samples": {"path": name, "rows": len(labels), "label_column": label_column},
        }
    else:
        regressor = regressor or "random-forest"
        estimator = models.make_regressor(regressor, params, flag="regressor")
        X, y, groups, bands, meta, used = training_samples.frame_target_samples(
            frame,
            meta,
            target_column,
            name,
            flag="table",
            drop_missing=drop_missing_target,
            drop_flag="drop_missing_target=True",
            target_flag="target_column",
            rows=True,
        )
        metrics = training.cross_validate_regression(
            estimator,
            X,
            y,
            groups,
            folds,
            seed,
            blocks=blocks_of(used, groups),
            curve=bool(learning_curve),
            **spatial,
        )
        text = training.format_regression_metrics(metrics, target_column, target_units)
        estimator.fit(X, y)
        sidecar = {
            "kind": "regressor",
            "regressor": regressor,
            "target": target_column,
            "units": target_units,
            "samples": {"path": name, "rows": len(y), "target_column": target_column},
        }
    if png is not None:
        spatial_cv.write_curve_png(
            metrics["learning_curve"], png, f"{folds}-fold {cv} cross-validation"
        )
    sidecar.update(training.fitted_fields(estimator, bands, meta, metrics))
    models.embed_fields(
        estimator, sidecar
    )  # what save_model stores: efm.predict checks the bands against the store
    return estimator, Report(sidecar["kind"], metrics, text, model_sidecar.jsonable(sidecar))


def _curve_png(learning_curve) -> str | None:
    """learning_curve=True/False, or a .png path to draw it at (checked before any work)."""
    if isinstance(learning_curve, bool):
        return None
    if not isinstance(learning_curve, (str, os.PathLike)):
        raise InputError(
            "learning_curve",
            f"expected True, False or a .png path, got {type(learning_curve).__name__}",
        )
    path = os.fspath(learning_curve)
    if not path.lower().endswith(".png"):
        raise InputError("learning_curve", f"a path ending in .png, got {path!r}")
    outputs.check_output(path, "png", flag="learning_curve")
    return path


def save_model(model, path: str, report: Report | None = None, *, overwrite: bool = False) -> dict:
    """Write the model as `efm train` does (``.skops``, or a ``.pkl``/``.joblib`` pickle, + JSON
    sidecar), for `efm classify --model PATH` on Beam / Dataflow. Returns the sidecar (its
    ``sha256`` is what ``--model-sha256`` wants for a pickle).

    >>> efm.save_model(model, "landcover.skops", report)                     # doctest: +SKIP
    """
    path = os.fspath(path)
    fmt = models.model_format(path, "path")
    outputs.check_output(path, "model", overwrite=overwrite, flag="path")
    sidecar = dict(report.sidecar) if report is not None else {}
    if (
        fmt == "skops"
    ):  # the same refusal as `efm train --output x.skops`: a type efm would not load back
        untrusted = _untrusted(model)
        if untrusted:
            raise InputError(
                "path",
                f"a {type(model).__name__} holding {', '.join(untrusted)} cannot be loaded from .skops by efm; "
                f"save a pickle instead ({path.rsplit('.', 1)[0]}.pkl)",
            )
    return models.save_model(model, path, sidecar, flag="path")


def _untrusted(model) -> list[str]:
    import skops.io

    return sorted(
        set(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
        - set(skops_trust.TRUSTED_SKOPS_TYPES)
    )
