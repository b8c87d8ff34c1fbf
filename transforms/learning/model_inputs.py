"""What a model expects: its classes, its bands (checked against a store's), probabilities or not."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from transforms.core.errors import InputError
from transforms.learning import model_sidecar
from transforms.learning.model_sidecar import embedded_fields, jsonable

if TYPE_CHECKING:
    from transforms.learning.models import LoadedModel


def model_classes(model, sidecar: dict) -> list | None:
    """The class labels (cluster numbers for a clusterer); None for a regressor."""
    kind = embedded_fields(model).get("kind") or model_sidecar.intrinsic_fields(model).get("kind")
    if kind == "regressor":
        return None
    if (
        embedded_fields(model).get("classes") is not None
    ):  # equal to the sidecar's when both exist (check_sidecar)
        return list(embedded_fields(model)["classes"])
    if sidecar.get("classes") is not None:
        return list(sidecar["classes"])
    if hasattr(model, "classes_"):
        return jsonable(np.asarray(model.classes_))
    if hasattr(model, "cluster_centers_"):
        return list(range(len(model.cluster_centers_)))
    raise InputError(
        "--model",
        f"cannot tell the classes of a {type(model).__name__}: it has no classes_ and no sidecar",
    )


def model_bands(model, sidecar: dict) -> list[str] | None:
    if embedded_fields(model).get("bands"):
        return list(embedded_fields(model)["bands"])
    if sidecar.get("bands"):
        return list(sidecar["bands"])
    names = getattr(model, "feature_names_in_", None)
    return [str(n) for n in names] if names is not None else None


def check_bands(
    loaded: LoadedModel, store_bands: list[str], store_path: str, flag: str = "--model"
) -> list[str]:
    """The bands (in the model's order) to feed the model; fails naming both sides on a mismatch."""
    n_features = getattr(loaded.model, "n_features_in_", None)
    bands = loaded.bands
    if bands is None:  # a model from elsewhere, trained on arrays: only the count can be checked
        if n_features is not None and n_features != len(store_bands):
            raise InputError(
                flag,
                f"{loaded.path} expects {n_features} features but {store_path} has {len(store_bands)} bands ({store_bands[0]}…{store_bands[-1]})",
            )
        return list(store_bands)
    if n_features is not None and n_features != len(bands):
        raise InputError(
            flag,
            f"{loaded.path}: its sidecar lists {len(bands)} bands but the model expects {n_features} features",
        )
    if list(bands) != list(store_bands):
        missing = [b for b in bands if b not in store_bands]
        what = (
            f"bands missing from the store: {', '.join(missing[:5])}"
            if missing
            else "the same bands in another order"
        )
        raise InputError(
            flag,
            f"{loaded.path} was trained on {len(bands)} bands {_span(bands)} but {store_path} has {len(store_bands)} bands {_span(store_bands)} ({what})",
        )
    return list(bands)


def _span(bands: list[str]) -> str:
    return (
        f"[{', '.join(bands)}]" if len(bands) <= 4 else f"[{bands[0]}, {bands[1]}, …, {bands[-1]}]"
    )


def has_proba(model) -> bool:
    try:
        return hasattr(model, "predict_proba") and callable(model.predict_proba)
    except AttributeError:  # e.g. SVC(probability=False) raises from the property
        return False
