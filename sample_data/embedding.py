"""Synthetic embeddings for the sample data: class directions, texture, noise, drift, quantisation.

Each class is a direction on the unit sphere in 64-d (distinct, not orthogonal: they share a
common component), moved within a class by spatially smooth texture fields, plus per-pixel
noise, and drifting a little from year to year; pixels on class edges mix their classes.
Each vector is normalised to unit length, then quantised to int8 with the mirror's formula.
"""

from __future__ import annotations

import math

import numpy as np

from transforms.core import quantize

N_BANDS = 64
BANDS = tuple(f"A{i:02d}" for i in range(N_BANDS))


def class_directions(
    n_classes: int, rng: np.random.Generator, similarity: float, n_bands: int = N_BANDS
) -> np.ndarray:
    """(classes, bands) unit vectors, pairwise cosine ~ `similarity`: distinct, not orthogonal."""
    common = rng.standard_normal(n_bands)
    common /= np.linalg.norm(common)
    own = rng.standard_normal((n_classes, n_bands))
    own -= np.outer(own @ common, common)  # orthogonal to the common part
    q, _ = np.linalg.qr(own.T)  # and to each other
    own = q.T[:n_classes]
    directions = math.sqrt(similarity) * common + math.sqrt(1 - similarity) * own
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def year_directions(
    base: np.ndarray, drift_dirs: np.ndarray, year_offset: int, drift: float
) -> np.ndarray:
    moved = base + drift * year_offset * drift_dirs
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def mixing_weights(classes: np.ndarray, n_classes: int, sigma_px: float) -> np.ndarray:
    """(classes, rows, cols) float32 weights summing to 1: the one-hot classes blurred by
    `sigma_px`, so that pixels on a class edge mix the two classes, as real pixels do."""
    from scipy import ndimage

    weights = np.stack(
        [
            ndimage.gaussian_filter((classes == k).astype(np.float32), sigma_px, mode="nearest")
            for k in range(n_classes)
        ]
    )
    weights /= weights.sum(axis=0, keepdims=True)
    return weights


def embedding_codes(
    classes: np.ndarray,
    weights: np.ndarray,
    texture: np.ndarray,
    valid: np.ndarray,
    directions: np.ndarray,
    texture_dirs: np.ndarray,
    noise: float,
    rng: np.random.Generator,
    persistent_rng: np.random.Generator | None = None,
    persistence: float = 0.0,
) -> np.ndarray:
    """int8 codes (rows, cols, bands): mixed class directions + texture + noise, unit length, quantised.

    classes (rows, cols) uint8; weights (classes, rows, cols) mixing weights; texture (T, rows,
    cols); valid (rows, cols) bool; directions (classes, bands); texture_dirs (T, classes, bands).
    A share `persistence` of the noise variance comes from `persistent_rng` (the same draw
    every year: a pixel keeps its character), the rest from `rng` (this year's).
    """
    rows, cols = classes.shape
    planes = np.empty((directions.shape[1], rows, cols), dtype=np.int8)
    # A band of rows at a time: the float temporaries stay small (in cache, no page faults) and
    # each generator is drawn in the same order as one whole-tile draw, so the codes are the same.
    # The mixing is one product over the whole tile: BLAS rounds differently for other shapes.
    mixed = np.tensordot(np.moveaxis(weights, 0, -1), directions.astype(np.float32), axes=1)
    step = max(1, _CHUNK_VALUES // max(cols * directions.shape[1], 1))
    for r0 in range(0, rows, step):
        part = slice(r0, min(r0 + step, rows))
        codes = _codes(
            classes[part],
            mixed[part],
            texture[:, part],
            valid[part],
            texture_dirs,
            noise,
            rng,
            persistent_rng,
            persistence,
        )
        planes[:, part] = np.moveaxis(codes, -1, 0)
    # stored band by band (what rasterio's write takes: no whole-tile transpose there), seen pixel by pixel
    return np.moveaxis(planes, 0, -1)


_CHUNK_VALUES = 1 << 20  # floats per band of rows (4 MB in float32)


def _codes(
    classes, vectors, texture, valid, texture_dirs, noise, rng, persistent_rng, persistence
) -> np.ndarray:
    """The codes of a band of rows; `vectors` (float32, the mixed class directions) is added to in place."""
    c = np.where(valid, classes, 0).astype(np.intp)
    for t in range(texture.shape[0]):
        vectors += texture[t][..., np.newaxis] * texture_dirs[t].astype(np.float32)[c]
    if persistent_rng is not None and persistence > 0:
        vectors += persistent_rng.standard_normal(vectors.shape, dtype=np.float32) * np.float32(
            noise * math.sqrt(persistence)
        )
        vectors += rng.standard_normal(vectors.shape, dtype=np.float32) * np.float32(
            noise * math.sqrt(1 - persistence)
        )
    else:
        vectors += rng.standard_normal(vectors.shape, dtype=np.float32) * np.float32(noise)
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    codes = quantize.quantize(vectors)
    codes[~valid] = quantize.NODATA_CODE
    return codes
