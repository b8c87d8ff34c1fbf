"""Where to label next, and how good the points are (pure: arrays in, arrays out).

uncertainty   d1 / d2 per pixel: d1 the distance to the nearest labelled embedding, d2 to the
              nearest one of another class than that one's. 0: far nearer one class than any
              other; 1: as near two classes (the k-NN's boundary). Defined from one point of
              each of two classes on (a vote margin is not: with k = 1 every vote is unanimous).
suggest       the n most uncertain pixels, spread out: greedily the most uncertain pixel not
              within `spacing` store pixels of a labelled point or an earlier suggestion.
block_cv      spatial cross-validation: the store cut in square blocks of `block` pixels, the
              blocks the groups of scikit-learn's GroupKFold (5 folds, fewer with fewer blocks),
              the preview's k-NN trained on the other folds' points: accuracy of every held-out
              point. Points in one block (a polygon's samples) never test each other.
"""

from __future__ import annotations

import time

import numpy as np

MAX_CV_POINTS = 5000  # more: a fixed random subset is cross-validated (said on the page)
FOLDS = 5


def _sq_distances(train: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(points, pixels) squared euclidean distances, float32, clipped at 0."""
    train = train.astype(np.float32)
    d = train @ values.T
    d *= -2
    d += np.einsum("ij,ij->i", train, train)[:, None]
    d += np.einsum("ij,ij->i", values, values)[None, :]
    return np.maximum(d, 0, out=d)


def uncertainty(train: np.ndarray, labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """d1 / d2 (module doc) per row of `values`, float32 in [0, 1]; needs two classes in `labels`."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("uncertainty needs points of two classes")
    if not len(values):
        return np.zeros(0, dtype=np.float32)
    d = _sq_distances(train, values)
    per_class = np.stack([d[labels == k].min(axis=0) for k in classes])  # (classes, pixels)
    two = np.partition(per_class, 1, axis=0)[:2]  # nearest class, then the nearest other one
    d1, d2 = np.sqrt(two[0]), np.sqrt(two[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(d2 > 0, d1 / d2, 1.0)
    return u.astype(np.float32)


def suggest(
    rows: np.ndarray,
    cols: np.ndarray,
    u: np.ndarray,
    n: int,
    spacing: float,
    taken: list[tuple[int, int]] = (),
) -> list[int]:
    """Indices into rows/cols/u: the n most uncertain, each at least `spacing` store pixels from
    every labelled pixel (`taken`) and every earlier pick."""
    order = np.argsort(-u, kind="stable")
    picked: list[int] = []
    near_r = np.array([r for r, _ in taken], dtype=np.float64)
    near_c = np.array([c for _, c in taken], dtype=np.float64)
    s2 = float(spacing) ** 2
    for i in order:
        if len(picked) >= n:
            break
        if len(near_r) and ((near_r - rows[i]) ** 2 + (near_c - cols[i]) ** 2).min() < s2:
            continue
        picked.append(int(i))
        near_r, near_c = np.append(near_r, rows[i]), np.append(near_c, cols[i])
    return picked


def block_of(rows: np.ndarray, cols: np.ndarray, block: int, width: int) -> np.ndarray:
    """The block (group) id of each pixel: blocks of block x block pixels, row-major."""
    per_row = -(-width // block)
    return (np.asarray(rows) // block) * per_row + np.asarray(cols) // block


def default_block(height: int, width: int) -> int:
    """The CV's block side in pixels: a fifth of the store's shorter side (5 x 5 blocks and more),
    at least 8 pixels."""
    return max(8, min(height, width) // 5)


def block_cv(
    vectors: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    block: int,
    width: int,
    seed: int = 0,
) -> dict:
    """Spatial k-fold accuracy of the preview's k-NN on these points (module doc)."""
    from sklearn.model_selection import GroupKFold

    from label_page.view import neighbours
    from transforms.learning import models

    started = time.perf_counter()
    labels = np.asarray(labels)
    n_all = len(labels)
    if n_all > MAX_CV_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(n_all, MAX_CV_POINTS, replace=False))
        vectors, labels, rows, cols = vectors[keep], labels[keep], rows[keep], cols[keep]
    groups = block_of(rows, cols, block, width)
    n_groups = len(np.unique(groups))
    out = {"points": int(n_all), "tested": 0, "accuracy": None, "block_px": int(block)}
    if len(np.unique(labels)) < 2 or n_groups < 2:
        out["reason"] = "points of two classes in two blocks are needed"
        return out
    folds = min(FOLDS, n_groups)
    right = tested = 0
    for train, test in GroupKFold(n_splits=folds).split(vectors, labels, groups):
        if len(np.unique(labels[train])) < 2:
            continue  # one class left to train on: this fold tests nothing
        k = neighbours(labels[train].tolist())
        model = models.make_classifier("knn", {"n_neighbors": k}).fit(vectors[train], labels[train])
        right += int((model.predict(vectors[test]) == labels[test]).sum())
        tested += len(test)
    out.update(
        folds=folds,
        tested=tested,
        accuracy=(right / tested) if tested else None,
        ms=round((time.perf_counter() - started) * 1000, 1),
    )
    if not tested:
        out["reason"] = "every fold leaves a single class to train on"
    return out
