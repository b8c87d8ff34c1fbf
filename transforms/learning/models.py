"""Model files: the classifier and regressor registries, saving with a JSON sidecar, and loading safely.

A model file is a pickle (`.pkl`, `.pickle`, `.joblib`, written with joblib) or a `.skops`
file. Next to it, `<model file>.json` (the sidecar) records the class labels (a regressor's
target column and units instead), the band names, the store the samples came from, the
scikit-learn version, the metrics, and the file's sha256.

Loading is where the danger is: a pickle is code, and unpickling a file from a bucket runs
whatever it holds on every worker. So:
* a `.skops` file loads through skops' trusted-types check, with the default trusted set
  plus an explicit list of scikit-learn types we produce (skops_trust.py's `TRUSTED_SKOPS_TYPES`);
* a pickle loads only when its sha256 equals `--model-sha256`, or with `--trust-pickle`;
  the bytes are hashed and unpickled from the same buffer (no swap between check and load).
Workers load again from the path and the sha256 the driver checked, so they never unpickle
a file the driver did not see.
The sidecar's kind, classes and bands are also stored inside the model file and checked
against it on load (transforms/learning/model_sidecar.py): an edited sidecar is refused.
What a loaded model expects (classes, bands) is read by transforms/learning/model_inputs.py.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import hashlib
import importlib
import io
import json
import warnings

import fsspec

from transforms.core import atomic
from transforms.core.errors import InputError, first_line
from transforms.learning import model_sidecar
from transforms.learning.model_inputs import model_bands, model_classes
from transforms.learning.model_sidecar import (
    COVERED_FIELDS,
    EMBEDDED_ATTR,
    embedded_fields,
    jsonable,
)
from transforms.learning.skops_trust import load_skops

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
SKOPS_SUFFIXES = (".skops",)
SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = "efm-model/1"

# name -> (module, class, defaults); --param k=v override the defaults.
CLASSIFIERS: dict[str, tuple[str, str, dict]] = {
    "knn": ("sklearn.neighbors", "KNeighborsClassifier", {"n_neighbors": 5}),
    "random-forest": (
        "sklearn.ensemble",
        "RandomForestClassifier",
        {"n_estimators": 100, "n_jobs": -1, "random_state": 0},
    ),
    "extra-trees": (
        "sklearn.ensemble",
        "ExtraTreesClassifier",
        {"n_estimators": 100, "n_jobs": -1, "random_state": 0},
    ),
    "gradient-boosting": (
        "sklearn.ensemble",
        "HistGradientBoostingClassifier",
        {"random_state": 0},
    ),
    "logistic-regression": ("sklearn.linear_model", "LogisticRegression", {"max_iter": 1000}),
    "ridge": (
        "sklearn.linear_model",
        "RidgeClassifier",
        {},
    ),  # a linear probe, as the AlphaEarth evaluations use
    "svm": ("sklearn.svm", "SVC", {}),
    "mlp": (
        "sklearn.neural_network",
        "MLPClassifier",
        {"hidden_layer_sizes": (64,), "max_iter": 500, "random_state": 0},
    ),
}

# The same, for `efm train --target-column` (a numeric target).
REGRESSORS: dict[str, tuple[str, str, dict]] = {
    "knn": ("sklearn.neighbors", "KNeighborsRegressor", {"n_neighbors": 5}),
    "random-forest": (
        "sklearn.ensemble",
        "RandomForestRegressor",
        {"n_estimators": 100, "n_jobs": -1, "random_state": 0},
    ),
    "extra-trees": (
        "sklearn.ensemble",
        "ExtraTreesRegressor",
        {"n_estimators": 100, "n_jobs": -1, "random_state": 0},
    ),
    "gradient-boosting": ("sklearn.ensemble", "HistGradientBoostingRegressor", {"random_state": 0}),
    "ridge": ("sklearn.linear_model", "Ridge", {}),
    "linear": ("sklearn.linear_model", "LinearRegression", {}),
    "svr": ("sklearn.svm", "SVR", {}),
    "mlp": (
        "sklearn.neural_network",
        "MLPRegressor",
        {"hidden_layer_sizes": (64,), "max_iter": 500, "random_state": 0},
    ),
}


# ---------------------------------------------------------------- building estimators


def parse_params(items: list[str] | None, flag: str = "--param") -> dict:
    """["n_neighbors=7", "weights=distance"] -> {"n_neighbors": 7, "weights": "distance"} (Python literals typed)."""
    params = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InputError(flag, f"expected NAME=VALUE, e.g. n_neighbors=7, got {item!r}")
        text = text.strip()
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = {"none": None, "true": True, "false": False}.get(text.lower(), text)
        params[key] = value
    return params


def make_classifier(name: str, params: dict | None = None, flag: str = "--classifier"):
    return _make(CLASSIFIERS, "classifier", name, params, flag)


def make_regressor(name: str, params: dict | None = None, flag: str = "--regressor"):
    return _make(REGRESSORS, "regressor", name, params, flag)


def _make(registry: dict, kind: str, name: str, params: dict | None, flag: str):
    if name not in registry:
        raise InputError(flag, f"unknown {kind} {name!r}; choose from {', '.join(registry)}")
    module, cls, defaults = registry[name]
    estimator_class = getattr(importlib.import_module(module), cls)
    valid = estimator_class().get_params()
    params = dict(params or {})
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise InputError(
            "--param", f"{cls} has no parameter {unknown[0]!r}; it takes {', '.join(sorted(valid))}"
        )
    try:
        estimator = estimator_class(**{**defaults, **params})
        # scikit-learn checks parameter types and ranges only at fit: check them now, before any work
        validate = getattr(estimator, "_validate_params", None)
        if validate is not None:
            validate()
    except (TypeError, ValueError) as exc:
        raise InputError("--param", f"{cls}: {first_line(exc)}") from None
    return estimator


# ---------------------------------------------------------------- files


def sidecar_path(model_path: str) -> str:
    return model_path + SIDECAR_SUFFIX


def model_format(path: str, flag: str = "--model") -> str:
    lower = path.lower()
    if lower.endswith(SKOPS_SUFFIXES):
        return "skops"
    if lower.endswith(PICKLE_SUFFIXES):
        return "pickle"
    raise InputError(
        flag,
        f"{path}: model files end in {', '.join(PICKLE_SUFFIXES + SKOPS_SUFFIXES)} (pickle via joblib, or skops)",
    )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: str, flag: str) -> bytes:
    try:
        with fsspec.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(flag, f"{path} does not exist") from None
    except OSError as exc:
        raise InputError(flag, f"cannot read {path}: {exc}") from None


def save_model(model, path: str, sidecar: dict, flag: str = "--output") -> dict:
    """Write the model (joblib pickle or skops by suffix) and its sidecar; returns the sidecar."""
    import sklearn

    fmt = model_format(path, flag)
    embed_fields(
        model, sidecar
    )  # saved with the model: what the sidecar says, covered by the file's hash
    buffer = io.BytesIO()
    if fmt == "skops":
        import skops.io

        data = skops.io.dumps(model)
    else:
        import joblib

        joblib.dump(model, buffer)
        data = buffer.getvalue()
    meta = {
        "format": SIDECAR_FORMAT,
        "model_file": path.rstrip("/").rsplit("/", 1)[-1],
        "model_format": fmt,
        "estimator": f"{type(model).__module__}.{type(model).__qualname__}",
        **jsonable(sidecar),
        "sklearn_version": sklearn.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sha256": sha256_bytes(data),
    }
    # Both whole or both old: a full disk never leaves a truncated model or a mismatched pair
    # (transforms/core/atomic.py).
    atomic.write_pair(path, data, sidecar_path(path), json.dumps(meta, indent=2).encode())
    return meta


def embed_fields(model, sidecar: dict) -> None:
    """Record the sidecar's kind / classes / target / bands inside the model (transforms/learning/model_sidecar.py)."""
    setattr(
        model,
        EMBEDDED_ATTR,
        {k: jsonable(sidecar[k]) for k in COVERED_FIELDS if sidecar.get(k) is not None},
    )


@dataclasses.dataclass
class LoadedModel:
    model: object
    sidecar: dict
    sha256: str
    path: str

    @property
    def classes(self) -> list | None:
        """The class labels; None for a regressor (it has no classes)."""
        return model_classes(self.model, self.sidecar)

    @property
    def bands(self) -> list[str] | None:
        return model_bands(self.model, self.sidecar)

    @property
    def is_regressor(self) -> bool:
        from sklearn.base import is_regressor

        return (
            self.kind == "regressor"
            or self.sidecar.get("kind") == "regressor"
            or is_regressor(self.model)
        )

    @property
    def kind(self) -> str | None:
        """ "classifier", "clusterer" or "regressor": the model file's record, else the fitted model's own attributes."""
        return embedded_fields(self.model).get("kind") or model_sidecar.intrinsic_fields(
            self.model
        ).get("kind")


def read_sidecar(path: str) -> dict:
    fs, root = fsspec.core.url_to_fs(sidecar_path(path))
    if not fs.exists(root):
        return {}
    try:
        with fs.open(root, "r") as f:
            meta = json.load(f)
    except (ValueError, OSError) as exc:
        raise InputError(
            "--model",
            f"the sidecar {sidecar_path(path)} is not valid JSON ({exc}); restore it or delete it",
        ) from None
    return meta if isinstance(meta, dict) else {}


def load_model(
    path: str, *, sha256: str | None = None, trust_pickle: bool = False, flag: str = "--model"
) -> LoadedModel:
    """Load a model file after its safety check (see the module docstring). Raises InputError."""
    fmt = model_format(path, flag)
    data = _read(path, flag)
    digest = sha256_bytes(data)
    if sha256 and sha256.strip().lower() != digest:
        raise InputError(
            "--model-sha256",
            f"sha256 of {path} is {digest}, not {sha256.strip().lower()}; refusing to load a model file that is not the one you named",
        )
    if fmt == "pickle":
        if not (sha256 or trust_pickle):
            raise InputError(
                "--model",
                f"{path} is a pickle, which runs code when loaded: pass --model-sha256 with the sha256 that `efm train` printed "
                "when you made it (the file loads only if it matches), or --trust-pickle if you trust where it came from, "
                "or use a .skops model",
            )
        import joblib

        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*Trying to unpickle estimator.*")
                model = joblib.load(io.BytesIO(data))
        except Exception as exc:  # unpickling raises anything
            raise InputError(
                flag,
                f"cannot load {path}: not a valid joblib/pickle model file ({type(exc).__name__}: {str(exc)[:120]})",
            ) from None
    else:
        model = load_skops(data, path, flag)
    if not hasattr(model, "predict"):
        raise InputError(
            flag, f"{path} holds a {type(model).__name__}, not a scikit-learn model with predict()"
        )
    sidecar = read_sidecar(path)
    if sidecar.get("sha256") and sidecar["sha256"] != digest:
        raise InputError(
            flag,
            f"{sidecar_path(path)} describes another file (sha256 {sidecar['sha256'][:12]}…, this one is {digest[:12]}…); copy the model and its sidecar together",
        )
    model_sidecar.check_sidecar(model, sidecar, path, flag)
    return LoadedModel(model, sidecar, digest, path)


def load_verified(path: str, sha256: str):
    """On a worker: load the file the driver checked (same sha256), nothing else."""
    return load_model(path, sha256=sha256).model
