"""`efm demo`: the whole workflow, offline, on generated data, in a few minutes on a laptop.

    make-sample-data -> extract --source cog -> sample -> train (k-NN) -> classify -> export
    -> sample --keep-columns agbd (GEDI-like points) -> train --regressor knn -> predict
    -> similarity (forest reference points) -> change (first year -> last year)
    -> held-out accuracy, R², similarity contrast and change recall against what was
       generated, and a side-by-side picture

Every step is the real entry point (`pipelines.<step>.run`), run on Beam's in-process
FnApiRunner: no network, no credentials. The steps' own summaries go to <output>/demo.log;
the demo prints the time of each step, the accuracy and every path it wrote. The scoring and
the picture are sample_data/scores.py's and sample_data/figure.py's: this module only composes.
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

from pipelines import common, failures, tuning
from sample_data import figure as demo_figure
from sample_data import generate as sample_data
from sample_data import scores as demo_scores
from transforms.core.errors import EfmError, InputError
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
        "--dtype",
        choices=["int8", "float32"],
        default="int8",
        help="embedding store dtype (default: %(default)s, the mirror's own codes)",
    )
    tuning.add_flag(parser, "demo")  # small=true: a small area for a quick check
    common.add_overwrite(parser, "the outputs of an earlier demo in --output")
    return parser


@dataclasses.dataclass
class Step:
    name: str
    seconds: float
    wrote: list[str]


class StepFailed(EfmError, RuntimeError):
    """A step of the demo failed: its own lines follow the first."""

    def line(self) -> str:
        return str(self).strip()


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
        data = sample_data.read(data_dir)
        years = ",".join(str(y) for y in data.spec.years)
        embeddings = os.path.join(out, "embeddings.zarr")
        step(
            "extract",
            extract.run,
            [
                "--source",
                "cog",
                "--source-root",
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
                "--tuning",
                f"chunk_size={chunk},max_concurrent_requests=4",
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
        step(
            "export",
            export.run,
            [
                "--input",
                classes,
                "--output",
                os.path.join(out, "land_cover.tif"),
                "--png",
                "--tuning",
                f"colors={demo_figure.palette(classes, data)}",
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
        scores = demo_scores.class_map_scores(classes, data)
        fields = demo_scores.field_scores(out, data)
        figure = demo_figure.comparison_figure(
            classes, data, scores, os.path.join(out, "comparison.png"), fields
        )
        steps.append(Step("score", time.perf_counter() - start, [figure]))
        print(f"  {'score':<17} {steps[-1].seconds:6.1f} s", flush=True)

    total = sum(s.seconds for s in steps)
    rows = demo_scores.score_rows(scores, fields, data.spec.years, CHANGE_THRESHOLD)
    rows += demo_scores.parcel_rows(parcels)
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
            f"--source-root={data.mirror}",
            f"--bbox={','.join(repr(v) for v in data.bbox)}",
            "--tuning=split_zones=true",
            f"--years={years}",
            f"--output={area}",
            f"--dtype={dtype}",
            f"--tuning=chunk_size={chunk},max_concurrent_requests=4",
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
            "--regressor",
            "knn",
            "--label-column",
            "agbd",
            "--tuning",
            "target_units=Mg/ha",
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
                "--years",
                f"{years[0]},{years[-1]}",
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
