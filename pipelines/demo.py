"""`efm demo`: the whole workflow, offline, on generated data, in a few minutes on a laptop.

    make-sample-data -> extract --source cog -> sample -> train (k-NN) -> classify -> export
    -> held-out accuracy against the ground truth, and a side-by-side picture

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
from typing import Callable, Sequence

from pipelines import common
from transforms import outputs, sample_data, sample_truth
from transforms.errors import InputError

RUNNER = ["--runner=FnApiRunner"]
# what the demo writes under --output (and all that --overwrite removes)
OUTPUTS = tuple(outputs.DEMO_ENTRIES)


def build_parser():
    parser = common.make_parser("efm demo", "Run the whole workflow offline on generated data: sample data -> extract (COG source) -> sample -> train -> classify -> export -> accuracy.", beam_options=False)
    parser.add_argument("--output", default="demo-output", help="folder to write everything to (default: %(default)s)")
    parser.add_argument("--small", action="store_true", help="a small area (256 x 320 px) for a quick check (about 30 s)")
    parser.add_argument("--dtype", choices=["int8", "float32"], default="int8", help="embedding store dtype (default: %(default)s, the mirror's own codes)")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier demo in --output")
    return parser


@dataclasses.dataclass
class Step:
    name: str
    seconds: float
    wrote: list[str]


class StepFailed(RuntimeError):
    pass


def prepare_output(path: str, overwrite: bool) -> None:
    if "://" in path:
        raise InputError("--output", f"{path}: the demo writes to a local folder")
    # Only a folder the demo made (its marker) is replaced, and only the demo's files in it.
    if outputs.check_output(path, "demo", overwrite=overwrite).kind:
        outputs.remove(path, "demo")
    outputs.mark_folder(path, "demo")


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
    if rc != 0:
        raise StepFailed(f"step `efm {name}` failed (exit {rc}):\n{buffer.getvalue().strip()}")
    return seconds


def class_map_scores(classes_path: str, data: sample_data.SampleData) -> dict[int, dict]:
    """Held-out accuracy of each year's map against the ground truth (labelled pixels left out)."""
    import affine
    import numpy as np
    import xarray as xr

    ds = xr.open_zarr(classes_path, consolidated=True, zarr_format=2, mask_and_scale=False)
    x, y = ds["x"].values, ds["y"].values
    dx, dy = float(x[1] - x[0]), float(y[0] - y[1])
    transform = affine.Affine(dx, 0.0, float(x[0]) - dx / 2, 0.0, -dy, float(y[0]) + dy / 2)
    crs = ds.attrs["crs"]
    shape = (len(y), len(x))
    truth, names = sample_truth.truth_on_grid(data.ground_truth, crs, transform, shape)
    exclude = sample_truth.point_pixels(data.points, crs, transform, shape)
    labels = [str(v) for v in ds["class"].attrs["class_labels"]]
    fill = int(ds["class"].attrs.get("fill_value", 255))
    scores = {}
    for t, time_value in enumerate(ds["time"].values):
        predicted = np.asarray(ds["class"].isel(time=t).values)
        scores[int(str(time_value)[:4])] = sample_truth.score(predicted, labels, fill, truth, names, exclude)
    return scores


def comparison_figure(classes_path: str, data: sample_data.SampleData, scores: dict[int, dict], path: str) -> str:
    """Ground truth next to each year's classified map, in the same colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import xarray as xr
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    truth, _, _, names = sample_truth.read_ground_truth(data.ground_truth)
    colours = json.load(open(data.colors))
    ds = xr.open_zarr(classes_path, consolidated=True, zarr_format=2, mask_and_scale=False)
    labels = [str(v) for v in ds["class"].attrs["class_labels"]]
    fill = int(ds["class"].attrs.get("fill_value", 255))
    cmap = ListedColormap([colours[n] for n in names])
    years = list(scores)
    fig, axes = plt.subplots(1, 1 + len(years), figsize=(5.2 * (1 + len(years)), 5.2), constrained_layout=True)
    shown = np.ma.masked_equal(truth, sample_truth.NODATA_CLASS)
    axes[0].imshow(shown, cmap=cmap, vmin=0, vmax=len(names) - 1, interpolation="nearest")
    axes[0].set_title("ground truth")
    to_truth = np.array([names.index(label) for label in labels] + [0] * (256 - len(labels)))
    for ax, (t, year) in zip(axes[1:], enumerate(years)):
        predicted = np.asarray(ds["class"].isel(time=t).values)
        image = np.ma.masked_where(predicted == fill, to_truth[predicted])
        ax.imshow(image, cmap=cmap, vmin=0, vmax=len(names) - 1, interpolation="nearest")
        ax.set_title(f"k-NN map {year}: held-out accuracy {scores[year]['accuracy']:.1%}")
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.legend(handles=[Patch(color=colours[n], label=n) for n in names], loc="lower center", ncol=len(names), frameon=False,
               bbox_to_anchor=(0.5, -0.06))
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    from pipelines import classify, export, extract, make_sample_data, sample, train

    args = build_parser().parse_args(argv)
    out = args.output
    prepare_output(out, args.overwrite)
    small = args.small
    chunk = "128" if small else "512"
    steps: list[Step] = []
    with open(os.path.join(out, "demo.log"), "w") as log:
        def step(name, entry, argv, wrote):
            steps.append(Step(name, run_step(name, entry, argv, log), wrote))
            print(f"  {name:<17} {steps[-1].seconds:6.1f} s", flush=True)

        print(f"efm demo: writing to {os.path.abspath(out)}", flush=True)
        data_dir = os.path.join(out, "sample-data")
        step("make-sample-data", make_sample_data.run, ["--output", data_dir, "--size", "small" if small else "default"], [data_dir])
        with open(os.path.join(data_dir, "sample_data.json")) as f:
            manifest = json.load(f)
        data = sample_data.SampleData(
            output=data_dir, mirror=os.path.join(data_dir, sample_data.MIRROR_DIR), ground_truth=os.path.join(data_dir, "ground_truth.tif"),
            points=os.path.join(data_dir, "labels.geojson"), colors=os.path.join(data_dir, "colors.json"), manifest=os.path.join(data_dir, "sample_data.json"),
            index={}, files=manifest["files"], bbox=tuple(manifest["bbox"]), crs=manifest["crs"], n_points=manifest["points"],
            spec=sample_data.SampleSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in manifest["spec"].items()}),
        )
        years = ",".join(str(y) for y in data.spec.years)
        embeddings = os.path.join(out, "embeddings.zarr")
        step("extract", extract.run, [
            "--source", "cog", "--cog-root", data.mirror, f"--bbox={','.join(repr(v) for v in data.bbox)}", "--crs", data.crs,
            "--years", years, "--output", embeddings, "--dtype", args.dtype, "--chunk-size", chunk,
            "--max-concurrent-requests", "4", *RUNNER], [embeddings])
        samples = os.path.join(out, "samples.parquet")
        step("sample", sample.run, ["--embeddings", embeddings, "--points", data.points, "--label-column", "label", "--output", samples, *RUNNER], [samples])
        model = os.path.join(out, "model.skops")
        step("train", train.run, ["--samples", samples, "--classifier", "knn", "--output", model], [model, model + ".json"])
        classes = os.path.join(out, "classes.zarr")
        step("classify", classify.run, ["--embeddings", embeddings, "--model", model, "--output", classes, *RUNNER], [classes])
        import xarray as xr

        labels = [str(v) for v in xr.open_zarr(classes, consolidated=True, zarr_format=2)["class"].attrs["class_labels"]]
        colours = json.load(open(data.colors))
        palette = ",".join(f"{label}={colours[label]}" for label in labels if label in colours)
        step("export", export.run, ["--input", classes, "--output", os.path.join(out, "land_cover.tif"), "--png", "--colors", palette],
             [])
        steps[-1].wrote = sorted(glob.glob(os.path.join(out, "land_cover_*.tif")) + glob.glob(os.path.join(out, "land_cover_*.png")))

        start = time.perf_counter()
        scores = class_map_scores(classes, data)
        figure = comparison_figure(classes, data, scores, os.path.join(out, "comparison.png"))
        steps.append(Step("score", time.perf_counter() - start, [figure]))
        print(f"  {'score':<17} {steps[-1].seconds:6.1f} s", flush=True)

    total = sum(s.seconds for s in steps)
    rows = [(f"accuracy {year} (held out)", f"{s['accuracy']:.1%} of {s['pixels']:,} pixels against the ground truth") for year, s in scores.items()]
    worst = min((v, k) for s in scores.values() for k, v in s["recall"].items())
    rows.append(("lowest class recall", f"{worst[1]} {worst[0]:.1%}"))
    rows += [(f"time: {s.name}", f"{s.seconds:.1f} s") for s in steps] + [("time: total", f"{total:.1f} s")]
    rows += [("wrote", p) for s in steps for p in s.wrote]
    rows += [("ground truth", data.ground_truth), ("labelled points", data.points), ("step log", os.path.join(out, "demo.log"))]
    common.print_summary(f"efm demo: done in {total:.0f} s", rows)
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    try:
        return common.run("efm demo", main, argv)
    except StepFailed as exc:
        print(f"efm demo: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
