"""Run with EFM_PYTHON (the Airflow environment has no xarray nor scikit-learn): compares the stores the
regression/map DAG wrote with references computed here, independently of efm, on the whole arrays.

    python map_reference.py <json: embeddings, model, prediction, similarity, change, refs, threshold>

Prints one JSON line: the largest differences and what was compared. Reference per product:
  prediction  = the model file loaded with skops, .predict on every pixel with data (float32 store values)
  similarity  = per year, the plain mean of the embeddings at the reference points' pixels, dotted with every pixel
  change      = the dot product of the two years' vectors; `changed` = similarity < threshold
"""

from __future__ import annotations

import json
import sys

import geopandas
import numpy as np
import skops.io
import xarray as xr


def open_store(path: str) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=True, mask_and_scale=False)


def max_diff(got: np.ndarray, want: np.ndarray) -> float:
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        return float("inf")  # no-data where there is data, or the other way round
    ok = ~np.isnan(want)
    return float(np.abs(got[ok].astype(np.float64) - want[ok]).max())


def main(spec: dict) -> dict:
    emb = open_store(spec["embeddings"])
    # (time, y, x, band) float32, NaN = no data, whatever order the store keeps (by dim names)
    values = np.asarray(emb["embedding"].transpose("time", "y", "x", "band").values)
    assert values.dtype == np.float32
    nodata = np.isnan(values).any(axis=-1)
    filled = np.nan_to_num(values).astype(np.float64)

    model = skops.io.load(spec["model"], trusted=skops.io.get_untrusted_types(file=spec["model"]))
    flat = values.reshape(-1, values.shape[-1])
    want_pred = np.full(flat.shape[0], np.nan)
    want_pred[~nodata.ravel()] = model.predict(flat[~nodata.ravel()])
    want_pred = want_pred.reshape(nodata.shape)
    pred = open_store(spec["prediction"])
    got_pred = np.asarray(pred["prediction"].values)

    refs = geopandas.read_file(spec["refs"]).to_crs(emb["spatial_ref"].attrs["crs_wkt"])
    x, y = emb["x"].values, emb["y"].values
    scale = float(x[1] - x[0])
    cols = np.floor((refs.geometry.x.values - (x[0] - scale / 2)) / scale).astype(int)
    rows = np.floor(
        ((y[0] - float(y[1] - y[0]) / 2) - refs.geometry.y.values) / abs(float(y[1] - y[0]))
    ).astype(int)
    inside = (rows >= 0) & (rows < len(y)) & (cols >= 0) & (cols < len(x))
    rows, cols = rows[inside], cols[inside]
    want_sim = np.full(nodata.shape, np.nan)
    used = []
    for t in range(values.shape[0]):
        at = values[t, rows, cols].astype(np.float64)
        at = at[~np.isnan(at).any(axis=1)]
        used.append(len(at))
        want_sim[t] = np.einsum("yxb,b->yx", filled[t], at.mean(axis=0))
    want_sim[nodata] = np.nan
    got_sim = np.asarray(open_store(spec["similarity"])["similarity"].values)

    change = open_store(spec["change"])
    want_change = np.einsum("yxb,yxb->yx", filled[0], filled[-1])
    want_change[nodata[0] | nodata[-1]] = np.nan
    got_change = np.asarray(change["similarity"].values)
    got_mask = np.asarray(change["changed"].values)
    want_mask = np.where(np.isnan(want_change), 255, got_change < spec["threshold"]).astype(
        np.uint8
    )  # from the stored map: no flips at T

    return {
        "prediction": max_diff(got_pred, want_pred),
        "prediction_range": [float(np.nanmin(want_pred)), float(np.nanmax(want_pred))],
        "prediction_attrs": {k: str(pred["prediction"].attrs.get(k)) for k in ("target", "units")},
        "similarity": max_diff(got_sim, want_sim),
        "reference_pixels": used,
        "change": max_diff(got_change, want_change),
        "mask_equal": bool(np.array_equal(got_mask, want_mask)),
        "changed_share": float((got_mask == 1).sum() / max((got_mask != 255).sum(), 1)),
        "status": [
            open_store(spec[k]).attrs["efm_status"] for k in ("prediction", "similarity", "change")
        ],
        "pixels": int((~nodata).sum()),
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
