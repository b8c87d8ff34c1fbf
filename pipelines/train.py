"""`efm train`: a sample table -> a cross-validated classifier in a model file + JSON sidecar.

Runs in one process (the samples fit in memory; scikit-learn is the engine): stratified
k-fold cross-validation first, then a fit on every sample, then the model and its sidecar.
"""
from __future__ import annotations

import sys
from typing import Sequence

from pipelines import common
from transforms import models, outputs, training


def build_parser():
    parser = common.make_parser("efm train", "Train a classifier on sampled embeddings, with stratified k-fold cross-validation.")
    parser.add_argument("--samples", required=True, help="table from `efm sample` (Parquet)")
    parser.add_argument("--classifier", default="random-forest", help=f"one of {', '.join(models.CLASSIFIERS)} (default: %(default)s)")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="estimator parameter, repeatable, e.g. --param n_neighbors=7 (values are Python literals)")
    parser.add_argument("--output", required=True, help="model file: .skops (safe to share) or .pkl/.joblib (pickle); the sidecar goes to <output>.json")
    parser.add_argument("--label-column", default="label", help="label column of the table (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold shuffling (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, _ = common.split_args(build_parser(), argv)
    models.model_format(args.output, "--output")
    outputs.check_output(args.output, "model", inputs={"--samples": args.samples}, overwrite=args.overwrite)
    estimator = models.make_classifier(args.classifier, models.parse_params(args.param))
    X, labels, groups, bands, table_meta = training.load_samples(args.samples, args.label_column)
    if models.model_format(args.output, "--output") == "skops":
        models.check_skops_loadable(estimator, X, labels, args.output)
    with common.Stopwatch() as cv_clock:
        metrics = training.cross_validate(estimator, X, labels, groups, args.folds, args.seed)
    print(training.format_metrics(metrics))
    with common.Stopwatch() as fit_clock:
        estimator.fit(X, labels)
    sidecar = models.save_model(estimator, args.output, {
        "kind": "classifier",
        "classifier": args.classifier,
        "params": {k: repr(v) if not isinstance(v, (int, float, str, bool, type(None))) else v for k, v in estimator.get_params(deep=False).items()},
        "classes": estimator.classes_,
        "bands": bands,
        "n_features": len(bands),
        "samples": {"path": args.samples, "rows": len(labels), "label_column": args.label_column},
        "store": {k: table_meta.get(k) for k in ("embeddings", "source", "grid", "years", "store_dtype")},
        "metrics": metrics,
    })
    print()
    common.print_summary(f"efm train: {args.output} written", [
        ("classifier", f"{type(estimator).__name__} ({args.classifier})"),
        ("classes", ", ".join(map(str, estimator.classes_))),
        ("samples", f"{len(labels)} x {len(bands)} bands"),
        ("overall accuracy (CV)", f"{metrics['overall_accuracy']:.4f}"),
        ("sidecar", models.sidecar_path(args.output)),
        ("sha256", sidecar["sha256"]),
        ("time", f"cross-validation {cv_clock.seconds:.1f} s, fit {fit_clock.seconds:.1f} s"),
        ("next", f"efm classify --model {args.output}" + ("" if sidecar["model_format"] == "skops" else f" --model-sha256 {sidecar['sha256']}") + " --embeddings ... --output ..."),
    ])
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm train", main, argv)


if __name__ == "__main__":
    sys.exit(run())
