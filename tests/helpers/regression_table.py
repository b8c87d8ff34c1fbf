"""A sample table for regression written directly: each point's target a linear function of its embedding."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.helpers.store_factory import BANDS


def regression_table(path, points=60, years=2, seed=0):
    """Each point's target is a linear function of its embedding plus noise; a point has `years` rows."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=64)
    rows = []
    for pid in range(points):
        base = rng.normal(size=64)
        for year in range(years):
            v = (base + rng.normal(scale=0.1, size=64)).astype(np.float32)
            rows.append(
                {
                    "point_id": pid,
                    "label": "any",
                    "agbd": float(v @ weights + rng.normal(scale=0.5)),
                    "year": 2021 + year,
                    **dict(zip(BANDS, v)),
                }
            )
    frame = pd.DataFrame(rows)
    frame.to_parquet(path)
    return frame
