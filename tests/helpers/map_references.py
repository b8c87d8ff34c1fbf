"""The map products' references: numpy / scikit-learn on a whole embedding store read with xarray
(not efm's reader), and a written map compared with them."""

from __future__ import annotations

import numpy as np
import xarray as xr

REF_ATOL = 1e-5  # float32 dot products of 64-band unit vectors against float64


def gcs_embeddings(path: str) -> np.ndarray:
    """(time, y, x, band) float64 of an embedding store on gs://, read whole with xarray (not efm's reader)."""
    with xr.open_zarr(path, consolidated=True) as ds:
        return ds["embedding"].transpose("time", "y", "x", "band").values.astype(np.float64)


def reference_prediction(model, values: np.ndarray) -> np.ndarray:
    """model.predict on every pixel with data at once (float64 in, float32 out); NaN where there is no data."""
    flat = values.reshape(-1, values.shape[-1])
    valid = ~np.isnan(flat).any(axis=1)
    out = np.full(flat.shape[0], np.nan)
    out[valid] = model.predict(flat[valid])
    return out.reshape(values.shape[:-1]).astype(np.float32)


def reference_similarity(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Per year: the plain mean of the embeddings at the points' pixels (no-data pixels skipped), dotted with every pixel."""
    out = np.full(values.shape[:-1], np.nan)
    for t in range(values.shape[0]):
        at_points = values[t, rows, cols]
        reference = at_points[~np.isnan(at_points).any(axis=1)].mean(axis=0)
        nodata = np.isnan(values[t]).any(axis=-1)
        out[t] = np.einsum("yxb,b->yx", np.nan_to_num(values[t]), reference)
        out[t][nodata] = np.nan
    return out


def reference_change(values: np.ndarray, t0: int, t1: int) -> np.ndarray:
    a, b = values[t0], values[t1]
    out = np.einsum("yxb,yxb->yx", np.nan_to_num(a), np.nan_to_num(b))
    out[np.isnan(a).any(axis=-1) | np.isnan(b).any(axis=-1)] = np.nan
    return out


def assert_map_equals(path: str, variable: str, expected: np.ndarray, **tolerance) -> xr.Dataset:
    ds = xr.open_zarr(path, consolidated=True, mask_and_scale=False)
    got = ds[variable].values
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, **tolerance)
    assert ds.attrs["efm_status"] == "complete"
    return ds
