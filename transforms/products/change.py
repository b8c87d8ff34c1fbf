"""Change detection and similarity search, per chunk: dot products of unit embedding vectors.

The embeddings are unit vectors, so a dot product is a cosine similarity: 1 = the same vector
(nothing changed / just like the reference), 0 = unrelated, -1 = opposite. Computed in float32
(np.einsum, no BLAS: NaN in any band of a pixel gives NaN, i.e. no data, without a mask pass);
against a float64 computation the difference is below 1e-5 for 64 bands of unit vectors.
"""

from __future__ import annotations

import numpy as np

from transforms.products.chunk_map import ChunkFunction, Variable

MASK_FILL = 255


def pair_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(rows, cols, bands) x2 -> (rows, cols) float32 dot product; NaN where either has no data."""
    return np.einsum("ijk,ijk->ij", a, b, dtype=np.float32)


def reference_similarity(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(rows, cols, bands) . (bands,) -> (rows, cols) float32; NaN where the pixel has no data."""
    return np.einsum(
        "ijk,k->ij", values, reference.astype(np.float32, copy=False), dtype=np.float32
    )


def threshold_mask(similarity: np.ndarray, threshold: float, *, below: bool) -> np.ndarray:
    """uint8: 1 where similarity < threshold (below) or >= threshold (not below), 0 otherwise, 255 = no data."""
    with np.errstate(invalid="ignore"):
        hit = similarity < threshold if below else similarity >= threshold
    return np.where(np.isnan(similarity), MASK_FILL, hit).astype(np.uint8)


def similarity_variable(long_name: str) -> Variable:
    return Variable(
        "similarity",
        "float32",
        float("nan"),
        {"long_name": long_name, "units": "1", "valid_range": [-1.0, 1.0], "fill_value": "NaN"},
    )


def mask_variable(name: str, meaning: str, threshold: float) -> Variable:
    return Variable(
        name,
        "uint8",
        MASK_FILL,
        {
            "long_name": meaning,
            "flag_values": [0, 1],
            "flag_meanings": f"not_{name} {name}",
            "threshold": threshold,
            "fill_value": MASK_FILL,
        },
    )


class ChangeFunction(ChunkFunction):
    """Two years' windows (from, to) -> `similarity` [and `changed` = similarity < threshold]."""

    def __init__(self, threshold: float | None = None):
        self.threshold = threshold

    def __call__(self, windows, time_index):
        similarity = pair_similarity(windows[0], windows[1])
        out = {"similarity": similarity}
        if self.threshold is not None:
            out["changed"] = threshold_mask(similarity, self.threshold, below=True)
        return out


class SimilarityFunction(ChunkFunction):
    """One year's window -> `similarity` to that output year's reference vector [and `similar` = similarity >= threshold]."""

    def __init__(self, references: dict[int, np.ndarray], threshold: float | None = None):
        self.references = {t: np.asarray(v, dtype=np.float32) for t, v in references.items()}
        self.threshold = threshold

    def __call__(self, windows, time_index):
        similarity = reference_similarity(windows[0], self.references[time_index])
        out = {"similarity": similarity}
        if self.threshold is not None:
            out["similar"] = threshold_mask(similarity, self.threshold, below=False)
        return out
