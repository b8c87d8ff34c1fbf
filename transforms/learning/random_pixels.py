"""Uniform random pixels of a store (for k-means): each chunk keys its valid pixels with i.i.d.
uniform keys and the k smallest keys over all chunks are the sample, whatever the split."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np

from transforms.core.metrics import METRICS_NAMESPACE
from transforms.storage.readers import StoreInfo, StoreReader, valid_mask


def bottom_k(keys: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k entries with the smallest keys (all of them if fewer)."""
    if len(keys) <= k:
        return keys, vectors
    part = np.argpartition(keys, k - 1)[:k]
    return keys[part], vectors[part]


class BottomK(beam.CombineFn):
    """Combines (keys, vectors) pairs, keeping the k smallest keys: with i.i.d. uniform keys,
    a uniform random sample without replacement over everything seen, whatever the split."""

    def __init__(self, k: int, bands: int):
        self.k, self.bands = k, bands

    def create_accumulator(self):
        return np.empty(0, np.float64), np.empty((0, self.bands), np.float32)

    def add_input(self, acc, element):
        return self.merge_accumulators([acc, element])

    def merge_accumulators(self, accs):
        accs = list(accs)
        return bottom_k(
            np.concatenate([a[0] for a in accs]), np.concatenate([a[1] for a in accs]), self.k
        )

    def extract_output(self, acc):
        return acc


class _RandomPixelsFn(beam.DoFn):
    def __init__(self, info: StoreInfo, k: int, seed: int, cell=None, salt=None):
        self.reader = StoreReader(info.path)
        self.info, self.k, self.seed, self.cell, self.salt = info, k, seed, cell, salt
        self.valid = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "valid_pixels")

    def process(self, spec):
        values = self.reader.read(self.info.time_index(spec.year), spec.window)
        flat = values.reshape(-1, values.shape[-1])
        ok = valid_mask(flat)
        if self.cell is not None:  # a collection's member: only the pixels its cell counts
            from transforms.learning.collection_points import owned

            mask = owned(self.info, spec.window, self.cell)
            ok = ok if mask is None else ok & mask.ravel()
        valid = np.flatnonzero(ok)
        self.valid.inc(len(valid))
        if len(valid):
            seed = (
                [self.seed, spec.index] if self.salt is None else [self.seed, self.salt, spec.index]
            )
            keys = np.random.default_rng(seed).random(len(valid))  # reproducible per chunk
            keys, rows = bottom_k(keys, valid, self.k)
            yield keys, flat[rows]


@dataclasses.dataclass
class RandomPixels(beam.PTransform):
    """ChunkSpecs -> one (keys, vectors) pair: `k` valid pixels drawn uniformly from all chunks.

    `cell` (a collection's member): only pixels whose centre is in the cell, with keys salted by
    `salt` (the member's position), so that the members' draws combine into one uniform sample."""

    info: StoreInfo
    k: int
    seed: int = 0
    cell: object = None
    salt: int | None = None

    def __post_init__(self):
        super().__init__()

    def expand(self, specs):
        return (
            specs
            | "ChunkSample"
            >> beam.ParDo(_RandomPixelsFn(self.info, self.k, self.seed, self.cell, self.salt))
            | "KeepSmallestKeys" >> beam.CombineGlobally(BottomK(self.k, len(self.info.bands)))
        )
