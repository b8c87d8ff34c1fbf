"""`efm demo`: the whole workflow, offline, on generated data, in a few minutes on a laptop.

    make-sample-data -> extract --source cog -> sample -> train (k-NN) -> classify -> export
    -> sample --keep-columns agbd (GEDI-like points) -> train --regressor knn -> predict
    -> similarity (forest reference points) -> change (first year -> last year)
    -> held-out accuracy, R², similarity contrast and change recall against what was
       generated, and a side-by-side picture

Every step is the real entry point (`pipelines.<step>.run`), run on Beam's in-process
FnApiRunner: no network, no credentials. The steps' own summaries go to <output>/demo.log;
the demo prints the time of each step, the accuracy and every path it wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

from pipelines import common, failures
from sample_data import fields as sample_fields
from sample_data import generate as sample_data
from sample_data import truth as sample_truth
from transforms.core import atomic
from transforms.core.errors import InputError
from transforms.storage import kinds, outputs

RUNNER = ["--runner=FnApiRunner"]
# what the demo writes under --output (and all that --overwrite removes)
OUTPUTS = tuple(kinds.DEMO_ENTRIES)
CHANGE_THRESHOLD = 0.8  # unchanged pixels' year-to-year dot product is ~0.9, changed ones' ~0.6


def build_parser():
    parser = common.make_parser(
        "efm demo",
        "Run the whole workflow offline on generated data: sample data -> extract (COG source) -> sample -> train -> classify -> export, then regression (sample -> train --regressor -> predict), similarity and change -> accuracy, R², similarity contrast, change recall.",
        beam_options=False,
    )
    parser.add_argument(
        "--output",
        default="demo-output",
        help="folder to write everything to (default: %(default)s)",
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help="a small area (256 x 320 px) for a quick check (about 30 s)",
    )
    parser.add_argument(
        "--dtype",
        choices=["int8", "float32"],
        default="int8",
        help="embedding store dtype (default: %(default)s, the mirror's own codes)",
    )
    common.add_overwrite(parser, "the outputs of an earlier demo in --output")
    return parser


@dataclasses.dataclass
class Step:
    name: str
    seconds: float
    wrote: list[str]


class StepFailed(RuntimeError):
    pass


def prepare_output(path: str, overwrite: bool) -> str:
    """Returns where the folder really is (a link to a demo folder: that folder, the link kept)."""
    if "://" in path:
        raise InputError("--output", f"{path}: the demo writes to a local folder")
    # Only a folder the demo made (its marker) is replaced, and only the demo's files in it.
    found = outputs.check_output(path, "demo", overwrite=overwrite)
    if found.kind:
        outputs.remove(found.path, "demo", found=found)
    outputs.mark_folder(found.path, "demo")
    return found.path


def run_step(name: str, entry: Callable[[list[str]], int], argv: list[str], log) -> float:
    """One pipeline entry point, its output to the log; a failure stops the demo, saying where."""
    print(f"\n$ efm {name} {' '.join(argv)}", file=log)
    buffer = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        rc = entry(argv)
    seconds = time.perf_counter() - start
    log.write(buffer.getvalue())
    log.flush()
    if rc == failures.EXIT_INTERRUPTED:  # Ctrl-C inside the step: the demo reports it, in one line
        raise KeyboardInterrupt
    if rc != 0:
        raise StepFailed(f"step `efm {name}` failed (exit {rc}):\n{buffer.getvalue().strip()}")
    return seconds


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


def comparison_figure(
    classes_path: str,
    data: sample_data.SampleData,
    scores: dict[int, dict],
    path: str,
    fields: FieldScores | None = None,
) -> str:
    """Ground truth next to each year's classified map, in the same colours; with `fields`, a
    second row: the true and predicted biomass, the similarity to the reference class, and change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    truth, _, _, names = sample_truth.read_ground_truth(data.ground_truth)
    colours = json.load(open(data.colors))
    ds = open_store(classes_path)
    labels = [str(v) for v in ds["class"].attrs["class_labels"]]
    fill = int(ds["class"].attrs.get("fill_value", 255))
    cmap = ListedColormap([colours[n] for n in names])
    years = list(scores)
    n_cols = 1 + len(years) + (1 if fields is not None else 0)
    n_rows = 2 if fields is not None else 1
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(5.2 * n_cols, (4.4 if fields is not None else 5.2) * n_rows),
        constrained_layout=True,
        squeeze=False,
    )
    top = axes[0]
    shown = np.ma.masked_equal(truth, sample_truth.NODATA_CLASS)
    top[0].imshow(shown, cmap=cmap, vmin=0, vmax=len(names) - 1, interpolation="nearest")
    top[0].set_title("ground truth")
    to_truth = np.array([names.index(label) for label in labels] + [0] * (256 - len(labels)))
    for ax, (t, year) in zip(top[1:], enumerate(years)):
        predicted = np.asarray(ds["class"].isel(time=t).values)
        image = np.ma.masked_where(predicted == fill, to_truth[predicted])
        ax.imshow(image, cmap=cmap, vmin=0, vmax=len(names) - 1, interpolation="nearest")
        ax.set_title(f"k-NN map {year}: held-out accuracy {scores[year]['accuracy']:.1%}")
    if fields is not None:
        field_panels(fig, top[-1], axes[1], fields)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.legend(
        handles=[Patch(color=colours[n], label=n) for n in names],
        loc="lower center",
        ncol=len(names),
        frameon=False,
        bbox_to_anchor=(0.5, -0.03 if fields is not None else -0.06),
    )
    with atomic.local_path(path) as temp:  # whole or the old one (transforms/core/atomic.py)
        fig.savefig(temp, format="png", dpi=90 if fields is None else 72, bbox_inches="tight")
    plt.close(fig)
    return path


def field_panels(fig, truth_ax, row, fields: FieldScores) -> None:
    """True biomass (above), then predicted biomass, similarity, change similarity, and change found."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    a = fields.arrays
    top = float(np.nanpercentile(a["truth_field"], 99))
    image = truth_ax.imshow(
        a["truth_field"], cmap="YlGn", vmin=0, vmax=top, interpolation="nearest"
    )
    truth_ax.set_title("true biomass (synthetic)")
    fig.colorbar(image, ax=truth_ax, shrink=0.8, label="Mg/ha")
    image = row[0].imshow(a["predicted"], cmap="YlGn", vmin=0, vmax=top, interpolation="nearest")
    r = fields.regression
    row[0].set_title(f"k-NN biomass {fields.year}: held-out R² {r['r2']:.2f}")
    fig.colorbar(image, ax=row[0], shrink=0.8, label="Mg/ha")
    image = row[1].imshow(a["similarity"], cmap="magma", interpolation="nearest")
    s = fields.similarity
    row[1].set_title(
        f"similarity to {s['class']} points: {s['reference']:.2f} vs {s['others']:.2f}"
    )
    fig.colorbar(image, ax=row[1], shrink=0.8, label="dot product")
    if fields.change is None:
        for ax in row[2:]:
            ax.set_visible(False)
        return
    image = row[2].imshow(
        a["change_similarity"], cmap="RdYlBu", vmin=0.4, vmax=1, interpolation="nearest"
    )
    row[2].set_title("year-to-year similarity (1 = unchanged)")
    fig.colorbar(image, ax=row[2], shrink=0.8, label="dot product")
    if len(row) > 3:
        # 0 neither, 1 found (true), 2 missed, 3 false alarm; masked where there is no data
        found, true = a["changed"] == 1, a["change_truth"] == 1
        code = np.where(found & true, 1, np.where(true, 2, np.where(found, 3, 0)))
        shown = np.ma.masked_where(
            (a["change_truth"] == sample_fields.CHANGE_NODATA) | (a["changed"] > 1), code
        )
        row[3].imshow(
            shown,
            cmap=ListedColormap(["#eeeeee", "#1a9850", "#d73027", "#fc8d59"]),
            vmin=0,
            vmax=3,
            interpolation="nearest",
        )
        c = fields.change
        row[3].set_title(
            f"changed: found (green) {c['recall']:.0%}, missed (red),\nfalse alarms (orange); precision {c['precision']:.0%}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    from pipelines import classify, export, extract, make_sample_data, sample, train

    args = common.own_args(build_parser(), argv)  # records --output: a failure's advice names it
    out = prepare_output(args.output, args.overwrite)  # where it really is (links resolved)
    small = args.small
    chunk = "128" if small else "512"
    steps: list[Step] = []
    with open(os.path.join(out, "demo.log"), "w") as log:

        def step(name, entry, argv, wrote):
            steps.append(Step(name, run_step(name, entry, argv, log), wrote))
            print(f"  {name:<17} {steps[-1].seconds:6.1f} s", flush=True)

        print(f"efm demo: writing to {os.path.abspath(out)}", flush=True)
        data_dir = os.path.join(out, "sample-data")
        step(
            "make-sample-data",
            make_sample_data.run,
            ["--output", data_dir, "--size", "small" if small else "default"],
            [data_dir],
        )
        with open(os.path.join(data_dir, "sample_data.json")) as f:
            manifest = json.load(f)
        data = sample_data.SampleData(
            output=data_dir,
            mirror=os.path.join(data_dir, sample_data.MIRROR_DIR),
            ground_truth=os.path.join(data_dir, "ground_truth.tif"),
            points=os.path.join(data_dir, "labels.geojson"),
            colors=os.path.join(data_dir, "colors.json"),
            manifest=os.path.join(data_dir, "sample_data.json"),
            index={},
            files=manifest["files"],
            bbox=tuple(manifest["bbox"]),
            crs=manifest["crs"],
            n_points=manifest["points"],
            spec=sample_data.SampleSpec(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in manifest["spec"].items()}
            ),
        )
        years = ",".join(str(y) for y in data.spec.years)
        embeddings = os.path.join(out, "embeddings.zarr")
        step(
            "extract",
            extract.run,
            [
                "--source",
                "cog",
                "--cog-root",
                data.mirror,
                f"--bbox={','.join(repr(v) for v in data.bbox)}",
                "--crs",
                data.crs,
                "--years",
                years,
                "--output",
                embeddings,
                "--dtype",
                args.dtype,
                "--chunk-size",
                chunk,
                "--tuning",
                "max_concurrent_requests=4",
                *RUNNER,
            ],
            [embeddings],
        )
        samples = os.path.join(out, "samples.parquet")
        step(
            "sample",
            sample.run,
            [
                "--embeddings",
                embeddings,
                "--points",
                data.points,
                "--label-column",
                "label",
                "--output",
                samples,
                *RUNNER,
            ],
            [samples],
        )
        model = os.path.join(out, "model.skops")
        step(
            "train",
            train.run,
            ["--samples", samples, "--classifier", "knn", "--output", model],
            [model, model + ".json"],
        )
        classes = os.path.join(out, "classes.zarr")
        step(
            "classify",
            classify.run,
            ["--embeddings", embeddings, "--model", model, "--output", classes, *RUNNER],
            [classes],
        )
        import xarray as xr

        labels = [
            str(v) for v in xr.open_zarr(classes, consolidated=True)["class"].attrs["class_labels"]
        ]
        colours = json.load(open(data.colors))
        palette = ",".join(f"{label}={colours[label]}" for label in labels if label in colours)
        step(
            "export",
            export.run,
            [
                "--input",
                classes,
                "--output",
                os.path.join(out, "land_cover.tif"),
                "--png",
                "--colors",
                palette,
            ],
            [],
        )
        steps[-1].wrote = sorted(
            glob.glob(os.path.join(out, "land_cover_*.tif"))
            + glob.glob(os.path.join(out, "land_cover_*.png"))
        )

        steps[-1].wrote = run_field_steps(
            step, out, data, embeddings
        )  # the exported maps: the last step's
        parcels = run_zone_steps(step, out, data, years, args.dtype, chunk)

        start = time.perf_counter()
        scores = class_map_scores(classes, data)
        fields = field_scores(out, data)
        figure = comparison_figure(
            classes, data, scores, os.path.join(out, "comparison.png"), fields
        )
        steps.append(Step("score", time.perf_counter() - start, [figure]))
        print(f"  {'score':<17} {steps[-1].seconds:6.1f} s", flush=True)

    total = sum(s.seconds for s in steps)
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
                f"change {data.spec.years[0]}->{data.spec.years[-1]}",
                f"recall {c['recall']:.1%} of {c['changed']:,} truly changed pixels, "
                f"precision {c['precision']:.1%} (threshold {CHANGE_THRESHOLD})",
            )
        )
    rows += parcel_rows(parcels)
    rows += [(f"time: {s.name}", f"{s.seconds:.1f} s") for s in steps] + [
        ("time: total", f"{total:.1f} s")
    ]
    rows += [("wrote", p) for s in steps for p in s.wrote]
    rows += [
        ("ground truth", data.ground_truth),
        ("labelled points", data.points),
        ("step log", os.path.join(out, "demo.log")),
    ]
    common.print_summary(f"efm demo: done in {total:.0f} s", rows)
    return 0


def run_zone_steps(step, out: str, data, years: str, dtype: str, chunk: str) -> str:
    """The area again, as a collection (one store per UTM zone: the sample data spans two), and
    the embeddings per field parcel over it (`efm zonal`: parcels across the zones' seam are
    combined). Returns the per-parcel table's path."""
    from pipelines import extract, zonal

    area = os.path.join(out, "area.collection")
    step(
        "extract (zones)",
        extract.run,
        [
            "--source=cog",
            f"--cog-root={data.mirror}",
            f"--bbox={','.join(repr(v) for v in data.bbox)}",
            "--tuning=split_zones=true",
            f"--years={years}",
            f"--output={area}",
            f"--dtype={dtype}",
            f"--chunk-size={chunk}",
            "--tuning=max_concurrent_requests=4",
            *RUNNER,
        ],
        [area],
    )
    table = os.path.join(out, "parcels.parquet")
    step(
        "zonal (parcels)",
        zonal.run,
        [
            f"--embeddings={area}",
            f"--polygons={os.path.join(data.output, 'parcels.geojson')}",
            "--id-column=parcel_id",
            "--stat=mean,count",
            f"--output={table}",
            *RUNNER,
        ],
        [table],
    )
    return table


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


def run_field_steps(step, out: str, data: sample_data.SampleData, embeddings: str) -> list[str]:
    """Regression on the GEDI-like points, similarity to the reference points, change between the years,
    then each map exported as a float GeoTIFF with a PNG quicklook (colour bar, units)."""
    from pipelines import change, export, predict, sample, similarity, train

    fields = json.load(open(data.manifest))["fields"]
    gedi_samples = os.path.join(out, "gedi_samples.parquet")
    step(
        "sample (agbd)",
        sample.run,
        [
            "--embeddings",
            embeddings,
            "--points",
            os.path.join(data.output, fields["gedi"]),
            "--keep-columns",
            "agbd",
            "--output",
            gedi_samples,
            *RUNNER,
        ],
        [gedi_samples],
    )
    model = os.path.join(out, "biomass_model.skops")
    step(
        "train (regressor)",
        train.run,
        [
            "--samples",
            gedi_samples,
            "--target-column",
            "agbd",
            "--regressor",
            "knn",
            "--target-units",
            "Mg/ha",
            "--output",
            model,
        ],
        [model, model + ".json"],
    )
    biomass = os.path.join(out, "biomass.zarr")
    step(
        "predict",
        predict.run,
        ["--embeddings", embeddings, "--model", model, "--output", biomass, *RUNNER],
        [biomass],
    )
    sim = os.path.join(out, "similarity.zarr")
    step(
        "similarity",
        similarity.run,
        [
            "--embeddings",
            embeddings,
            "--points",
            os.path.join(data.output, fields["refs"]),
            "--output",
            sim,
            *RUNNER,
        ],
        [sim],
    )
    years = data.spec.years
    if "change_truth" in fields and len(years) > 1:
        changes = os.path.join(out, "change.zarr")
        step(
            "change",
            change.run,
            [
                "--embeddings",
                embeddings,
                "--from-year",
                str(years[0]),
                "--to-year",
                str(years[-1]),
                "--threshold",
                str(CHANGE_THRESHOLD),
                "--output",
                changes,
                *RUNNER,
            ],
            [changes],
        )
    maps = [
        (store, name)
        for store, name in (
            (biomass, "biomass"),
            (sim, "similarity"),
            (os.path.join(out, "change.zarr"), "change"),
        )
        if os.path.exists(store)
    ]

    def export_maps(argv: Sequence[str]) -> int:
        for store, name in maps:
            status = export.run(
                ["--input", store, "--output", os.path.join(out, f"{name}.tif"), "--png"]
            )
            if status:
                return status
        return 0

    step("export (maps)", export_maps, [], [])
    step_wrote = sorted(
        p
        for _, name in maps
        for p in glob.glob(os.path.join(out, f"{name}*.tif"))
        + glob.glob(os.path.join(out, f"{name}*.png"))
    )
    return step_wrote


def run(argv: Sequence[str] | None = None) -> int:
    try:
        return common.run("efm demo", main, argv)
    except StepFailed as exc:
        print(f"efm demo: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
