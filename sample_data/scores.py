"""The demo's figures, scored against what was generated: held-out accuracy of the class maps,
R² of the biomass map, similarity contrast, change recall and precision, and the per-field table,
as the summary rows `efm demo` prints."""

from __future__ import annotations

import dataclasses
import json
import os

from sample_data import fields as sample_fields
from sample_data import generate as sample_data
from sample_data import truth as sample_truth


def open_store(path: str):
    import xarray as xr

    return xr.open_zarr(path, consolidated=True, mask_and_scale=False)


def grid_of(ds):
    """(crs, transform, shape) of a store's grid."""
    import affine

    x, y = ds["x"].values, ds["y"].values
    dx, dy = float(x[1] - x[0]), float(y[0] - y[1])
    return (
        ds.attrs["crs"],
        affine.Affine(dx, 0.0, float(x[0]) - dx / 2, 0.0, -dy, float(y[0]) + dy / 2),
        (len(y), len(x)),
    )


def class_map_scores(classes_path: str, data: sample_data.SampleData) -> dict[int, dict]:
    """Held-out accuracy of each year's map against the ground truth (labelled pixels, and
    pixels whose land cover changed between the years, left out)."""
    import numpy as np

    ds = open_store(classes_path)
    crs, transform, shape = grid_of(ds)
    truth, names = sample_truth.truth_on_grid(data.ground_truth, crs, transform, shape)
    exclude = sample_truth.point_pixels(data.points, crs, transform, shape)
    change_truth = os.path.join(data.output, "change_truth.tif")
    if os.path.exists(change_truth):
        exclude |= (
            sample_fields.read_on_grid(
                change_truth, crs, transform, shape, sample_fields.CHANGE_NODATA
            )
            == 1
        )
    labels = [str(v) for v in ds["class"].attrs["class_labels"]]
    fill = int(ds["class"].attrs.get("fill_value", 255))
    scores = {}
    for t, time_value in enumerate(ds["time"].values):
        predicted = np.asarray(ds["class"].isel(time=t).values)
        scores[int(str(time_value)[:4])] = sample_truth.score(
            predicted, labels, fill, truth, names, exclude
        )
    return scores


@dataclasses.dataclass
class FieldScores:
    """The regression, similarity and change figures, and the arrays the picture shows (first year)."""

    year: int
    regression: dict
    similarity: dict
    change: dict | None
    arrays: dict


def field_scores(out: str, data: sample_data.SampleData) -> FieldScores:
    """R² of the biomass map on pixels under no GEDI point, mean similarity of the reference
    class vs the other classes (reference points left out), recall and precision of `changed`."""
    import numpy as np

    prediction = open_store(os.path.join(out, "biomass.zarr"))
    crs, transform, shape = grid_of(prediction)
    fields = json.load(open(data.manifest))["fields"]
    truth_field = sample_fields.read_on_grid(
        os.path.join(data.output, fields["biomass"]), crs, transform, shape, np.nan
    )
    predicted = np.asarray(prediction["prediction"].isel(time=0).values)
    held_out = ~sample_truth.point_pixels(
        os.path.join(data.output, fields["gedi"]), crs, transform, shape
    )
    regression = sample_fields.r2_score(predicted, truth_field, held_out)
    classes, names = sample_truth.truth_on_grid(data.ground_truth, crs, transform, shape)
    similarity = np.asarray(
        open_store(os.path.join(out, "similarity.zarr"))["similarity"].isel(time=0).values
    )
    not_refs = ~sample_truth.point_pixels(
        os.path.join(data.output, fields["refs"]), crs, transform, shape
    )
    contrast = sample_fields.similarity_contrast(
        similarity, classes, names.index(fields["reference_class"]), not_refs
    )
    contrast["class"] = fields["reference_class"]
    arrays = {"truth_field": truth_field, "predicted": predicted, "similarity": similarity}
    change = None
    if "change_truth" in fields:
        store = open_store(os.path.join(out, "change.zarr"))
        changed = np.asarray(store["changed"].values)
        truth = sample_fields.read_on_grid(
            os.path.join(data.output, fields["change_truth"]),
            crs,
            transform,
            shape,
            sample_fields.CHANGE_NODATA,
        )
        change = sample_fields.change_score(
            changed, int(store["changed"].attrs.get("fill_value", 255)), truth
        )
        arrays.update(
            change_similarity=np.asarray(store["similarity"].values),
            changed=changed,
            change_truth=truth,
        )
    return FieldScores(
        int(str(prediction["time"].values[0])[:4]), regression, contrast, change, arrays
    )


def score_rows(
    scores: dict[int, dict], fields: FieldScores, years, threshold: float
) -> list[tuple[str, str]]:
    """The demo summary's figures: each year's held-out accuracy, the lowest class recall, the
    biomass R², the similarity contrast and (with a change map) change recall and precision."""
    rows = [
        (
            f"accuracy {year} (held out)",
            f"{s['accuracy']:.1%} of {s['pixels']:,} pixels against the ground truth",
        )
        for year, s in scores.items()
    ]
    worst = min((v, k) for s in scores.values() for k, v in s["recall"].items())
    rows.append(("lowest class recall", f"{worst[1]} {worst[0]:.1%}"))
    r, sim = fields.regression, fields.similarity
    rows.append(
        (
            f"biomass R² {fields.year} (held out)",
            f"{r['r2']:.3f} (RMSE {r['rmse']:.1f} Mg/ha) on {r['pixels']:,} pixels under no GEDI point",
        )
    )
    rows.append(
        (
            f"similarity {fields.year}",
            f"{sim['reference']:.3f} on {sim['class']} pixels vs {sim['others']:.3f} on the others",
        )
    )
    if fields.change is not None:
        c = fields.change
        rows.append(
            (
                f"change {years[0]}->{years[-1]}",
                f"recall {c['recall']:.1%} of {c['changed']:,} truly changed pixels, "
                f"precision {c['precision']:.1%} (threshold {threshold})",
            )
        )
    return rows


def parcel_rows(table: str) -> list[tuple[str, str]]:
    """The per-field table, in a few lines of the summary."""
    import pandas as pd

    frame = pd.read_parquet(table)
    rows = [
        (
            "per-field table",
            f"{frame['parcel_id'].nunique()} parcels x {frame['year'].nunique()} years, "
            f"{len(frame.columns)} columns ({table})",
        )
    ]
    for _, r in frame.sort_values(["year", "parcel_id"]).head(3).iterrows():
        rows.append(
            (
                f"  parcel {r['parcel_id']} {r['year']}",
                f"{r['crop']}, {int(r['pixel_count'])} px, mean A00 {r['A00']:+.3f}",
            )
        )
    return rows
