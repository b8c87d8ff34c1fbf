"""transforms/learning/clustering.py directly: k-means, its metrics and its checks, against numpy and
scikit-learn computed here (not through `efm cluster`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, silhouette_score

from transforms.core.errors import InputError
from transforms.learning import clustering, models

CENTRES = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]], dtype=np.float32)


def blobs(per_cluster: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated blobs (unit-variance noise around CENTRES) and each point's blob."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(CENTRES)), per_cluster)
    vectors = CENTRES[truth] + rng.normal(0, 0.3, (len(truth), CENTRES.shape[1]))
    return vectors.astype(np.float32), truth


def test_kmeans_finds_the_blobs_and_its_metrics_are_the_fits_own():
    vectors, truth = blobs()
    model = clustering.fit_kmeans(vectors, 3, seed=0)
    assert adjusted_rand_score(truth, model.labels_) == 1.0
    # each fitted centre is the mean of its blob, within the noise
    for centre in CENTRES:
        assert np.min(np.linalg.norm(model.cluster_centers_ - centre, axis=1)) < 0.1

    metrics = clustering.kmeans_metrics(model, vectors, seed=0)
    assigned = model.predict(vectors)
    inertia = float(((vectors - model.cluster_centers_[assigned]) ** 2).sum())
    assert metrics["inertia"] == pytest.approx(inertia, rel=1e-4)
    assert metrics["cluster_sizes"] == np.bincount(assigned, minlength=3).tolist()
    assert metrics["sample_size"] == len(vectors)
    # 600 pixels: under the 5,000-pixel subsample, so the silhouette is that of every pixel
    assert metrics["silhouette_sample"] == pytest.approx(silhouette_score(vectors, assigned))


def test_kmeans_silhouette_is_none_when_every_pixel_is_its_own_cluster():
    vectors, _ = blobs(per_cluster=1)
    model = clustering.fit_kmeans(vectors, 3)
    assert clustering.kmeans_metrics(model, vectors)["silhouette_sample"] is None


def test_fit_and_save_writes_a_clusterer_with_its_metrics(tmp_path):
    vectors, truth = blobs(seed=1)
    output = str(tmp_path / "kmeans.skops")
    sidecar = {
        "kind": "clusterer",
        "classes": [0, 1, 2],
        "bands": ["A00", "A01", "A02"],
        "store": {"embeddings": "emb.zarr", "years": [2022]},
    }
    keys = np.random.default_rng(0).random(len(vectors))
    meta = clustering.fit_and_save(
        (keys, vectors), clusters=3, seed=0, output=output, sidecar=sidecar
    )
    with open(output + ".json") as f:
        assert json.load(f) == meta
    assert meta["metrics"]["cluster_sizes"] and sum(meta["metrics"]["cluster_sizes"]) == 600
    loaded = models.load_model(output)
    assert loaded.kind == "clusterer" and loaded.classes == [0, 1, 2]
    assert adjusted_rand_score(truth, loaded.model.predict(vectors)) == 1.0


@pytest.mark.parametrize(
    "clusters, sample_size, flag, message",
    [
        (1, 100, "--clusters", "k-means needs at least 2 clusters, got 1"),
        (40000, 100000, "--clusters", "40000 clusters cannot be stored in a class map"),
        (10, 5, "--sample-size", "5 pixels cannot make 10 clusters"),
    ],
)
def test_cluster_counts_refused(clusters, sample_size, flag, message):
    with pytest.raises(InputError, match=message) as caught:
        clustering.check_clusters(clusters, sample_size)
    assert caught.value.flag == flag
    clustering.check_clusters(2, 2)  # the smallest that works


def test_a_sample_with_no_or_too_few_valid_pixels_is_refused_before_the_fit():
    with pytest.raises(InputError, match="has no valid pixel in 2021, 2022") as caught:
        clustering.check_sample(0, 3, "emb.zarr", [2021, 2022])
    assert caught.value.flag == "--embeddings"
    with pytest.raises(InputError, match="only 2 valid pixels in 2022, fewer than --clusters 3"):
        clustering.check_sample(2, 3, "emb.zarr", [2022])
    clustering.check_sample(3, 3, "emb.zarr", [2022])
