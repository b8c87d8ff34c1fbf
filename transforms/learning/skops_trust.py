"""The scikit-learn types efm trusts in a `.skops` file: loading one through skops' trusted-types
check, and refusing before a fit a `.skops` output that this check would not load."""

from __future__ import annotations

import warnings

import numpy as np

from transforms.core.errors import InputError

PROBE_ROWS = 200  # rows of the trial fit that checks a .skops model will load

# Types skops does not trust by default that our registry's models (and k-means) contain.
TRUSTED_SKOPS_TYPES = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.Interval",
    # k-NN with algorithm=kd_tree/ball_tree (or "auto" on few bands): the fitted spatial index. Its
    # state is numpy arrays (data, index, node bounds) and ints, restored by __setstate__: data only.
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    # The distance metric inside such an index: parameters only (p, weights, a covariance matrix).
    # PyFuncDistance (a user's Python function) is left out on purpose: it holds code.
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.SEuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.metrics._dist_metrics.MahalanobisDistance64",
    "sklearn.metrics._dist_metrics.HaversineDistance64",
    "sklearn.metrics._dist_metrics.CanberraDistance64",
    "sklearn.metrics._dist_metrics.BrayCurtisDistance64",
    # MLP's optimizer state (solver adam or sgd): learning-rate scalars and lists of moment arrays,
    # restored by setting __dict__; no callables.
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
)


def check_skops_loadable(estimator, X: np.ndarray, labels: np.ndarray, output: str) -> None:
    """Before the real fit: fit a copy on a few rows and refuse a .skops output holding types that
    `load_model` would not trust (e.g. a k-NN with a Python-function metric); a pickle can hold them."""
    import skops.io
    from sklearn.base import clone

    # one row of each class, then the first rows (a numeric target: the first rows only)
    first = (
        np.unique(labels, return_index=True)[1]
        if labels.dtype.kind not in "fc"
        else np.empty(0, np.int64)
    )
    rows = np.unique(np.concatenate([first, np.arange(min(len(labels), PROBE_ROWS))]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. ConvergenceWarning on the tiny fit
        probe = clone(estimator)
        params = probe.get_params(deep=False)
        # fewer iterations or trees hold the same types: keep the trial fit quick
        probe.set_params(
            **{
                k: min(params[k], 2)
                for k in ("max_iter", "n_estimators")
                if isinstance(params.get(k), int)
            }
        )
        try:
            probe.fit(X[rows], labels[rows])
        except Exception:  # the real fit will say what is wrong, with all the data
            return
        untrusted = set(skops.io.get_untrusted_types(data=skops.io.dumps(probe)))
    refused = sorted(untrusted - set(TRUSTED_SKOPS_TYPES))
    if refused:
        pickle = output.rsplit(".", 1)[0] + ".pkl"
        raise InputError(
            "--output",
            f"a {type(estimator).__name__} with these parameters holds {', '.join(refused)}, which efm does not load "
            f"from .skops; write a pickle instead (--output {pickle}) and classify with the --model-sha256 that train prints",
        )


def load_skops(data: bytes, path: str, flag: str):
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:
        raise InputError(
            flag,
            f"cannot load {path}: not a valid .skops file ({type(exc).__name__}: {str(exc)[:120]})",
        ) from None
    refused = sorted(set(untrusted) - set(TRUSTED_SKOPS_TYPES))
    if refused:
        raise InputError(
            flag,
            f"{path} contains types that are not trusted: {', '.join(refused)}; efm loads only scikit-learn models built from trusted types",
        )
    try:
        return skops.io.loads(data, trusted=[t for t in untrusted if t in TRUSTED_SKOPS_TYPES])
    except Exception as exc:
        raise InputError(
            flag,
            f"cannot load {path}: not a valid .skops file ({type(exc).__name__}: {str(exc)[:120]})",
        ) from None
