"""`efm make-sample-data`: a local COG mirror of generated embeddings, with ground truth.

Writes, under --output: `mirror/` (the public int8 COG mirror's layout and index, two
UTM zones, two years), `ground_truth.tif`, `labels.geojson`, `biomass.tif` (a synthetic
field, Mg/ha), `gedi.geojson` (points with `agbd`), `refs.geojson` (forest points),
`change_truth.tif` (where the last year's land cover changed) and `sample_data.json`.
No network, no credentials. See sample_data/generate.py for how the data is made.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

from pipelines import common, tuning
from sample_data import generate as sample_data
from transforms.core import checks
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.storage import outputs

SIZES = {"small": sample_data.SMALL, "default": {}}


def build_parser():
    parser = common.make_parser(
        "efm make-sample-data",
        "Generate a realistic sample of the int8 COG mirror (two UTM zones, two years) with ground truth and labelled points.",
        beam_options=False,
    )
    parser.add_argument("--output", required=True, help="folder to write (local)")
    parser.add_argument(
        "--size",
        default="default",
        help="small | default | ROWSxCOLS in 10 m pixels (default: %(default)s = 1024x1280)",
    )
    parser.add_argument(
        "--years", default="2022,2023", help="years to generate (default: %(default)s)"
    )
    tuning.add_flag(parser, "make-sample-data")
    common.add_overwrite(parser, "an existing output folder")
    return parser


def parse_size(text: str) -> dict:
    if text in SIZES:
        return dict(SIZES[text])
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise InputError(
            "--size", f"expected small, default or ROWSxCOLS such as 1024x1280, got {text!r}"
        )
    rows, cols = int(match[1]), int(match[2])
    if rows < 64 or cols < 64 or rows * cols > 64_000_000:
        raise InputError(
            "--size",
            f"{rows}x{cols} is out of range: at least 64 px a side, at most 64 million pixels",
        )
    return {"rows": rows, "cols": cols}


def spec_from_args(args) -> sample_data.SampleSpec:
    options = parse_size(args.size)
    if args.tile_size is not None:  # a --tuning key: at least 64, checked as it is parsed
        options["tile_size"] = args.tile_size
    years = gridlib.parse_years(args.years)
    if len(years) < 1:
        raise InputError("--years", "give at least one year")
    return sample_data.SampleSpec(
        years=tuple(years),
        bottom_up=not args.top_down,
        seed=checks.check_seed(args.seed, "--tuning: seed"),
        **options,
    )


def prepare_output(path: str, overwrite: bool) -> str:
    """Check, clear (--overwrite: only an efm sample-data folder's own files) and mark the output
    folder; returns where it really is (a link to a sample-data folder: that folder, the link kept)."""
    if "://" in path:
        raise InputError(
            "--output",
            f"{path}: sample data is written to a local folder; copy it to a bucket afterwards (gsutil -m cp -r)",
        )
    found = outputs.check_output(path, "sample-data", overwrite=overwrite)
    if found.kind:
        outputs.remove(found.path, "sample-data", found=found)
    outputs.mark_folder(found.path, "sample-data")
    return found.path


def main(argv: Sequence[str] | None = None) -> int:
    args = common.own_args(build_parser(), argv)
    spec = spec_from_args(args)
    folder = prepare_output(args.output, args.overwrite)
    with common.Stopwatch() as clock:
        data = sample_data.generate(folder, spec)
    common.print_summary(
        f"efm make-sample-data: {args.output}",
        [
            (
                "area",
                f"{spec.rows} x {spec.cols} px at 10 m, zones {spec.zone_a} and {spec.zone_b}, years {', '.join(map(str, spec.years))}",
            ),
            ("bbox (W,S,E,N)", ",".join(f"{v:.6f}" for v in data.bbox)),
            (
                "mirror",
                f"{data.mirror} ({len(data.files)} COG files, index {', '.join(os.path.basename(p) for p in data.index.values())})",
            ),
            ("ground truth", data.ground_truth),
            ("labelled points", f"{data.points} ({data.n_points} points, property 'label')"),
            (
                "biomass field",
                os.path.join(args.output, "biomass.tif")
                + " (Mg/ha; gedi.geojson: points with 'agbd')",
            ),
            (
                "reference points",
                os.path.join(args.output, "refs.geojson") + f" ({sample_data.REFERENCE_CLASS})",
            ),
            ("class colours", data.colors),
            ("manifest", data.manifest),
            ("wall time", f"{clock.seconds:.1f} s"),
        ],
    )
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm make-sample-data", main, argv)


if __name__ == "__main__":
    sys.exit(run())
