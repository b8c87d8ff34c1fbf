"""`efm train`: a sample table -> a cross-validated classifier (or, with --regressor, a regressor
on the numeric column --label-column names) in a model file + JSON sidecar.

Runs in one process (the samples fit in memory; scikit-learn is the engine): k-fold
cross-validation first (stratified for classes; with --cv spatial, over square blocks of
--block-size: transforms/learning/spatial_cv.py), then a fit on every sample, then the model and
its sidecar (and, with --learning-curve, the curve's PNG).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from pipelines import common, tuning
from transforms.core import checks
from transforms.core.errors import InputError
from transforms.learning import models, skops_trust, spatial_cv, training, training_samples
from transforms.storage import outputs


def build_parser():
    parser = common.make_parser(
        "efm train",
        "Train a classifier (or a regressor, with --regressor) on sampled embeddings, with k-fold "
        "cross-validation.",
        beam_options=False,
    )
    parser.add_argument("--samples", required=True, help="table from `efm sample` (Parquet)")
    parser.add_argument(
        "--classifier", help=f"one of {', '.join(models.CLASSIFIERS)} (default: random-forest)"
    )
    parser.add_argument(
        "--regressor",
        help=f"train a regressor instead, on the numeric column --label-column names (e.g. one "
        f"kept by `efm sample --keep-columns`): one of {', '.join(models.REGRESSORS)}",
    )
    parser.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="estimator parameter, repeatable, e.g. --param n_neighbors=7 (values are Python literals)",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="model file: .skops (safe to share) or .pkl/.joblib (pickle); the sidecar goes to <output>.json",
    )
    parser.add_argument(
        "--label-column",
        default="label",
        help="column of the table to learn: the class label, or with --regressor the numeric "
        "target (default: %(default)s)",
    )
    parser.add_argument(
        "--cv",
        default="random",
        choices=spatial_cv.CV_CHOICES,
        help="random: shuffled k-fold (default); spatial: group k-fold over square blocks of "
        "--block-size, each block tested whole in one fold (honest when nearby samples look alike)",
    )
    parser.add_argument(
        "--block-size",
        help="with --cv spatial: the side of the blocks, e.g. 5km, 500m or 5000 (metres; a bare "
        "number is in the store CRS's units)",
    )
    parser.add_argument(
        "--learning-curve",
        nargs="?",
        const="",
        metavar="PNG",
        help="also score the model trained on 5, 10, 20 ... labels per class (samples, for a "
        "regressor) over the same folds: a table, and a PNG at PNG (default: "
        "<output>.learning-curve.png)",
    )
    common.add_overwrite(parser, "an existing model file (and curve PNG)")
    tuning.add_flag(parser, "train")
    return parser


# --target-column became --label-column (with --regressor it names the numeric target)
MERGED = {"--target-column": "use --label-column (with --regressor it names the numeric target)"}


def refuse_merged(argv: Sequence[str] | None) -> None:
    """A script's `--target-column agbd`: one line saying how to say it now (before parsing, so
    argparse's abbreviation matching cannot take it for another flag)."""
    for token in sys.argv[1:] if argv is None else argv:
        flag = token.partition("=")[0]
        if flag in MERGED:
            raise InputError(flag, MERGED[flag])


def main(argv: Sequence[str] | None = None) -> int:
    refuse_merged(argv)
    args = common.own_args(build_parser(), argv)
    checks.check_seed(args.seed, "--tuning")
    training.check_fold_count(args.folds, "--tuning")
    if args.classifier is not None and args.regressor is not None:
        raise InputError(
            "--regressor",
            "--classifier trains a classifier, --regressor a regressor: give one of them",
        )
    if args.drop_missing_target and args.regressor is None:
        raise InputError(
            "--tuning",
            "drop_missing_target: applies to a regressor's target: add --regressor NAME, or "
            "drop the key",
        )
    args.block = spatial_cv.check_cv_choice(args.cv, args.block_size)
    if args.regressor is not None:
        return train_regressor(args)
    args.classifier = args.classifier or "random-forest"
    model_format = models.model_format(args.output, "--output")
    outputs.check_output(
        args.output, "model", inputs={"--samples": args.samples}, overwrite=args.overwrite
    )
    curve_png = _check_curve_png(args)
    estimator = models.make_classifier(args.classifier, models.parse_params(args.param))
    X, labels, groups, bands, table_meta, used = training_samples.load_samples(
        args.samples, args.label_column, rows=True
    )
    blocks = _blocks(args, used, table_meta, groups)
    if model_format == "skops":
        skops_trust.check_skops_loadable(estimator, X, labels, args.output)
    with common.Stopwatch() as cv_clock:
        metrics = training.cross_validate(
            estimator,
            X,
            labels,
            groups,
            args.folds,
            args.seed,
            blocks=blocks,
            curve=curve_png is not None,
            folds_flag="--tuning",
        )
    print(training.format_metrics(metrics))
    with common.Stopwatch() as fit_clock:
        estimator.fit(X, labels)
    sidecar = models.save_model(
        estimator,
        args.output,
        {
            "kind": "classifier",
            "classifier": args.classifier,
            "classes": estimator.classes_,
            "samples": {
                "path": args.samples,
                "rows": len(labels),
                "label_column": args.label_column,
            },
            **_fitted_fields(estimator, bands, table_meta, metrics),
        },
    )
    _write_curve(metrics, curve_png, args)
    print()
    common.print_summary(
        f"efm train: {args.output} written",
        [
            ("classifier", f"{type(estimator).__name__} ({args.classifier})"),
            ("classes", ", ".join(map(str, estimator.classes_))),
            ("samples", f"{len(labels)} x {len(bands)} bands"),
            ("overall accuracy (CV)", f"{metrics['overall_accuracy']:.4f}"),
            ("balanced accuracy (CV)", f"{metrics['balanced_accuracy']:.4f}"),
            ("macro F1 (CV)", f"{metrics['macro_f1']:.4f}"),
            *_cv_rows(metrics, curve_png),
            ("sidecar", models.sidecar_path(args.output)),
            ("sha256", sidecar["sha256"]),
            ("time", f"cross-validation {cv_clock.seconds:.1f} s, fit {fit_clock.seconds:.1f} s"),
            (
                "next",
                f"efm classify --model {args.output}"
                + (
                    ""
                    if sidecar["model_format"] == "skops"
                    else f" --model-sha256 {sidecar['sha256']}"
                )
                + " --embeddings ... --output ...",
            ),
        ],
    )
    return 0


def _check_curve_png(args) -> str | None:
    """Where the learning curve's PNG goes (None: no curve); checked before anything is written."""
    if args.learning_curve is None:
        return None
    path = args.learning_curve or spatial_cv.curve_png_path(args.output)
    if not path.lower().endswith(".png"):
        raise InputError(
            "--learning-curve", f"writes a PNG: give a path ending in .png, got {path}"
        )
    if os.path.abspath(path) in {
        os.path.abspath(p) for p in (args.output, models.sidecar_path(args.output), args.samples)
    }:
        raise InputError("--learning-curve", f"{path} is the model, its sidecar or the samples")
    outputs.check_output(
        path,
        "png",
        inputs={"--samples": args.samples},
        overwrite=args.overwrite,
        flag="--learning-curve",
    )
    return path


def _blocks(args, used, table_meta: dict, groups):
    """The spatial blocks of the rows training uses (None for --cv random)."""
    if args.block is None:
        return None
    size, unit = args.block
    return spatial_cv.make_blocks(
        used, table_meta, size, unit, groups, args.folds, args.samples, folds_flag="--tuning"
    )


def _write_curve(metrics: dict, png: str | None, args) -> None:
    if png is None:
        return
    cv = (
        f"spatial CV, blocks of {metrics['block_size_text']}"
        if metrics.get("cv") == "spatial"
        else "random CV"
    )
    spatial_cv.write_curve_png(
        metrics["learning_curve"], png, f"{os.path.basename(args.output)}: {args.folds}-fold {cv}"
    )


def _cv_rows(metrics: dict, png: str | None) -> list[tuple[str, str]]:
    """The summary's lines on a spatial CV and a learning curve (none for the default)."""
    rows = []
    if metrics.get("cv") == "spatial":
        rows.append(
            (
                "cross-validation",
                f"spatial, {metrics['folds']} folds over {metrics['blocks']} blocks of "
                f"{metrics['block_size_text']}; test folds hold "
                f"{', '.join(map(str, metrics['fold_sizes']))} samples",
            )
        )
    if png is not None:
        curve = metrics["learning_curve"]
        verdict = (
            "still rising (more labels would likely help)"
            if curve["still_rising"]
            else "levelling off"
        )
        rows.append(("learning curve", f"{png}: {verdict}"))
    return rows


def _fitted_fields(estimator, bands: list[str], table_meta: dict, metrics: dict) -> dict:
    """Sidecar fields every trained model has (transforms/learning/training.py; the Python API builds the same)."""
    return training.fitted_fields(estimator, bands, table_meta, metrics)


def train_regressor(args) -> int:
    """`efm train --regressor NAME --label-column C`: the same steps, with a regressor on the
    numeric column C."""
    target = args.label_column
    model_format = models.model_format(args.output, "--output")
    outputs.check_output(
        args.output, "model", inputs={"--samples": args.samples}, overwrite=args.overwrite
    )
    curve_png = _check_curve_png(args)
    estimator = models.make_regressor(args.regressor, models.parse_params(args.param))
    X, y, groups, bands, table_meta, used = training_samples.load_target_samples(
        args.samples,
        target,
        drop_missing=args.drop_missing_target,
        rows=True,
        target_flag="--label-column",
        drop_flag="--tuning drop_missing_target=true",
    )
    blocks = _blocks(args, used, table_meta, groups)
    if model_format == "skops":
        skops_trust.check_skops_loadable(estimator, X, y, args.output)
    with common.Stopwatch() as cv_clock:
        metrics = training.cross_validate_regression(
            estimator,
            X,
            y,
            groups,
            args.folds,
            args.seed,
            blocks=blocks,
            curve=curve_png is not None,
            folds_flag="--tuning",
        )
    print(training.format_regression_metrics(metrics, target, args.target_units))
    with common.Stopwatch() as fit_clock:
        estimator.fit(X, y)
    sidecar = models.save_model(
        estimator,
        args.output,
        {
            "kind": "regressor",
            "regressor": args.regressor,
            "target": target,
            "units": args.target_units,
            "samples": {"path": args.samples, "rows": len(y), "target_column": target},
            **_fitted_fields(estimator, bands, table_meta, metrics),
        },
    )
    _write_curve(metrics, curve_png, args)
    units = f" {args.target_units}" if args.target_units else ""
    print()
    common.print_summary(
        f"efm train: {args.output} written",
        [
            ("regressor", f"{type(estimator).__name__} ({args.regressor})"),
            (
                "target",
                target + (f" ({args.target_units})" if args.target_units else ""),
            ),
            ("samples", f"{len(y)} x {len(bands)} bands"),
            ("R² (CV)", f"{metrics['r2']:.4f}"),
            ("RMSE / MAE (CV)", f"{metrics['rmse']:.4g}{units} / {metrics['mae']:.4g}{units}"),
            *_cv_rows(metrics, curve_png),
            ("sidecar", models.sidecar_path(args.output)),
            ("sha256", sidecar["sha256"]),
            ("time", f"cross-validation {cv_clock.seconds:.1f} s, fit {fit_clock.seconds:.1f} s"),
        ],
    )
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm train", main, argv)


if __name__ == "__main__":
    sys.exit(run())
