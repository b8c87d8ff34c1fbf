"""The model sidecar's fields, covered by the model file: stored inside it, checked against it.

`<model>.json` is plain JSON that anyone can edit, and `--model-sha256` covers the model file
only. Reordered bands (or a regressor's target swapped for another column) in an edited sidecar would feed every pixel's embedding to the model in the
wrong order: a silently wrong map. So `save_model` stores the fields classify relies on (`kind`,
`classes` for classifiers and clusterers, `target` for regressors, `bands`) inside the model file too (`efm_model_`, an attribute of the estimator that
joblib and skops save with it, covered by the file's sha256 when one is given), and `load_model`
refuses a sidecar whose fields differ from the model file's or from the fitted model itself
(`classes_`, `cluster_centers_`, `feature_names_in_`), or that lists bands nothing can check.
"""

from __future__ import annotations

import numpy as np

from transforms.core.errors import InputError

EMBEDDED_ATTR = "efm_model_"
COVERED_FIELDS = ("kind", "classes", "target", "bands")


def embedded_fields(model) -> dict:
    """The kind / classes / target / bands `save_model` stored inside the model file ({} for other models)."""
    fields = getattr(model, EMBEDDED_ATTR, None)
    return fields if isinstance(fields, dict) else {}


def intrinsic_fields(model) -> dict:
    """What the fitted estimator itself says about its kind, classes and bands."""
    out: dict = {}
    if hasattr(model, "classes_"):
        out["kind"], out["classes"] = "classifier", jsonable(np.asarray(model.classes_))
    elif hasattr(model, "cluster_centers_"):
        out["kind"], out["classes"] = "clusterer", list(range(len(model.cluster_centers_)))
    elif _is_regressor(model):
        out["kind"] = "regressor"  # it has no classes
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        out["bands"] = [str(n) for n in names]
    return out


def check_sidecar(model, sidecar: dict, path: str, flag: str = "--model") -> None:
    """Refuse, before any worker starts, a sidecar whose kind / classes / bands differ from the
    model file's, or bands that nothing in the model file can check."""
    from transforms.learning.models import sidecar_path

    embedded, intrinsic = embedded_fields(model), intrinsic_fields(model)
    for field in COVERED_FIELDS:
        if sidecar.get(field) is None:
            continue
        said = jsonable(sidecar[field])
        for source, truth in (
            ("the model file records", embedded.get(field)),
            ("the fitted model has", intrinsic.get(field)),
        ):
            if truth is not None and said != truth:
                raise InputError(
                    flag,
                    f"{sidecar_path(path)} says {field} {_show(said)} but {source} {_show(truth)} (the sidecar was edited "
                    "or belongs to another model); restore it, or delete it: the model file carries its kind, classes, target and bands",
                )
    if sidecar.get("bands") and "bands" not in embedded and "bands" not in intrinsic:
        raise InputError(
            flag,
            f"{sidecar_path(path)} lists bands that the model file does not record, so nothing checks their order; "
            "re-save the model with `efm train` / `efm cluster`, or fit it on a table with band-named columns (feature_names_in_)",
        )


def _is_regressor(model) -> bool:
    from sklearn.base import is_regressor

    try:
        return bool(is_regressor(model))
    except Exception:  # not a scikit-learn estimator: it says nothing
        return False


def _show(value) -> str:
    if isinstance(value, list):
        shown = [str(v) for v in value]
        return (
            f"[{', '.join(shown)}]"
            if len(shown) <= 4
            else f"[{shown[0]}, {shown[1]}, …, {shown[-1]}]"
        )
    return repr(value)


def jsonable(value):
    """numpy scalars and arrays (also inside dicts and lists) -> plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
