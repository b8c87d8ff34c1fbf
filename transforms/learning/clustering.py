"""k-means for `efm cluster`: the checks on K and the sample, the fit, its metrics (inertia, a
subsampled silhouette, cluster sizes) and the model file, a "clusterer" `efm classify` applies."""

from __future__ import annotations

import numpy as np

from transforms.core.errors import InputError
from transforms.learning import models

MAX_CLUSTERS = 32767  # the largest class map `efm classify` writes (int16 codes, -1 = fill)


def check_clusters(clusters: int, sample_size: int, size_flag: str = "--sample-size") -> None:
    """K between 2 and what a class map can store, and at least K pixels to draw (`size_flag`:
    where the sample size was given; `--tuning` on the command line, whose key is named)."""
    if clusters < 2:
        raise InputError("--clusters", f"k-means needs at least 2 clusters, got {clusters}")
    if clusters > MAX_CLUSTERS:
        raise InputError(
            "--clusters",
            f"{clusters} clusters cannot be stored in a class map (at most {MAX_CLUSTERS}, int16); k-means on embeddings is "
            "used with tens of clusters: pass e.g. --clusters 10",
        )
    if sample_size < clusters:
        key = "sample_size: " if size_flag == "--tuning" else ""
        raise InputError(
            size_flag,
            f"{key}{sample_size} pixels cannot make {clusters} clusters; draw at least as many "
            "pixels as clusters",
        )


def fit_kmeans(vectors: np.ndarray, clusters: int, seed: int = 0):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit(vectors)


def kmeans_metrics(model, vectors: np.ndarray, seed: int = 0) -> dict:
    """Inertia, the silhouette of a 5,000-pixel subsample (None for K = 1 or K = n) and sizes."""
    from sklearn.metrics import silhouette_score

    sizes = np.bincount(model.labels_, minlength=model.n_clusters)
    n = min(len(vectors), 5000)
    silhouette = (
        float(silhouette_score(vectors, model.labels_, sample_size=n, random_state=seed))
        if 1 < model.n_clusters < len(vectors)
        else None
    )
    return {
        "inertia": float(model.inertia_),
        "silhouette_sample": silhouette,
        "cluster_sizes": sizes.tolist(),
        "sample_size": len(vectors),
    }


def check_sample(drawn: int, clusters: int, path: str, years: list[int]) -> None:
    """After the sampler, before the fit: a store (in these years) with no valid pixel, or too few."""
    when = ", ".join(map(str, years))
    if drawn == 0:
        raise InputError(
            "--embeddings",
            f"{path} has no valid pixel in {when} (every pixel is no data): nothing to cluster; "
            "choose other --years or another store",
        )
    if drawn < clusters:
        raise InputError(
            "--clusters",
            f"{path} has only {drawn} valid pixels in {when}, fewer than --clusters {clusters}; "
            f"pass --clusters {drawn} or fewer",
        )


def fit_and_save(sample, *, clusters: int, seed: int, output: str, sidecar: dict) -> dict:
    """Runs once, after the sample is combined: fit and write the model file + sidecar."""
    _, vectors = sample
    check_sample(len(vectors), clusters, sidecar["store"]["embeddings"], sidecar["store"]["years"])
    model = fit_kmeans(vectors, clusters, seed)
    return models.save_model(
        model, output, {**sidecar, "metrics": kmeans_metrics(model, vectors, seed)}
    )
