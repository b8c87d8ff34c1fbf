"""`efm cluster`: unsupervised k-means on a uniform random sample of valid pixels -> a model file.

    chunk specs | RandomPixels (bottom-k of uniform keys per chunk, combined)
                | clustering.fit_and_save (k-means, its metrics, the model file)

The model file and sidecar are the same kind `efm train` writes (classes 0..K-1, kind
"clusterer"), so `efm classify` applies them unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import apache_beam as beam

from pipelines import common, tuning
from transforms.core import checks
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.core.metrics import metric_totals
from transforms.learning import clustering, models, random_pixels
from transforms.storage import collection, outputs, readers

DEFAULT_CLUSTERS = 10  # as in the original notebook
DEFAULT_SAMPLE_SIZE = 100_000


def build_parser():
    parser = common.make_parser(
        "efm cluster",
        "Fit k-means on a uniform random sample of valid pixels of an embedding store.",
    )
    parser.add_argument(
        "--embeddings", required=True, help="embedding store (Zarr, local path or gs://)"
    )
    parser.add_argument(
        "--output",
        required=True,
        help="model file: .skops or .pkl/.joblib; the sidecar goes to <output>.json",
    )
    parser.add_argument(
        "--clusters",
        type=int,
        default=DEFAULT_CLUSTERS,
        help="number of clusters K (default: %(default)s)",
    )
    parser.add_argument(
        "--years", help="years to draw from, e.g. 2021,2022 (default: every year of the store)"
    )
    common.add_overwrite(parser, "an existing model file")
    tuning.add_flag(parser, "cluster")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, options = common.split_args(build_parser(), argv)
    checks.check_seed(args.seed, "--tuning")
    clustering.check_clusters(args.clusters, args.sample_size, "--tuning")
    models.model_format(args.output, "--output")
    outputs.check_output(
        args.output, "model", inputs={"--embeddings": args.embeddings}, overwrite=args.overwrite
    )
    # A collection: one sample across its members, each place once (a pixel counts in the member
    # whose cell holds its centre), so one model maps every member with the same cluster ids.
    if collection.is_collection(args.embeddings):
        coll = collection.read(args.embeddings)
        members = [
            (m.zone, readers.store_info(coll.path_of(m), flag="--embeddings")) for m in coll.members
        ]
    else:
        members = [(None, readers.store_info(args.embeddings))]
    info = members[0][1]
    years = readers.select_years(info, gridlib.parse_years(args.years) if args.years else None)
    for _, member in members[1:]:
        readers.select_years(member, years)
        if member.bands != info.bands:
            raise InputError(
                "--embeddings",
                f"{member.path} has other bands than {info.path}; a collection's stores must "
                "share their bands",
            )
    specs = [member.chunk_specs(years) for _, member in members]
    n_specs = sum(len(s) for s in specs)
    grids = [member.grid_summary() for _, member in members]
    sidecar = {
        "kind": "clusterer",
        "classifier": "kmeans",
        "classes": list(range(args.clusters)),
        "bands": list(info.bands),
        "n_features": len(info.bands),
        "params": {"n_clusters": args.clusters, "seed": args.seed, "sample_size": args.sample_size},
        "store": {
            "embeddings": args.embeddings,
            "source": info.source,
            "grid": grids[0] if len(grids) == 1 else {"collection": grids},
            "years": years,
            "store_dtype": info.dtype,
        },
    }

    def build(pipeline: beam.Pipeline) -> None:
        draws = []
        for i, ((cell, member), member_specs) in enumerate(zip(members, specs)):
            name = "" if cell is None else f" {cell.name}"
            draws.append(
                pipeline
                | f"ChunkSpecs{name}" >> beam.Create(member_specs)
                | f"Reshuffle{name}" >> beam.Reshuffle()
                | f"RandomPixels{name}"
                >> random_pixels.RandomPixels(
                    member,
                    args.sample_size,
                    args.seed,
                    cell=cell,
                    salt=None if cell is None else i,
                )
            )
        sample = (
            draws[0]
            if len(draws) == 1
            else (
                tuple(draws)
                | "Members" >> beam.Flatten()
                | "KeepSmallestKeys"
                >> beam.CombineGlobally(random_pixels.BottomK(args.sample_size, len(info.bands)))
            )
        )
        sample | "FitAndSave" >> beam.Map(
            clustering.fit_and_save,
            clusters=args.clusters,
            seed=args.seed,
            output=args.output,
            sidecar=sidecar,
        )

    # No progress lines here (nothing is written before the fit): say what will happen instead.
    print(
        f"efm cluster: drawing {args.sample_size:,} valid pixels uniformly from {n_specs:,} chunks, then k-means with "
        f"{args.clusters} clusters (n_init=4) on them; the model is written at the end",
        file=sys.stderr,
        flush=True,
    )
    with common.Stopwatch() as clock:
        result = common.run_pipeline(build, options)
    meta = models.read_sidecar(args.output)
    metrics = meta.get("metrics", {})
    common.print_summary(
        f"efm cluster: {args.output} written",
        [
            ("store", f"{args.embeddings}, year(s) {', '.join(map(str, years))}"),
            ("valid pixels", metric_totals(result).get("valid_pixels", 0)),
            ("sample", f"{metrics.get('sample_size')} pixels drawn uniformly"),
            ("clusters", f"{args.clusters}, sizes in the sample {metrics.get('cluster_sizes')}"),
            ("inertia", f"{metrics.get('inertia', float('nan')):.2f}"),
            (
                "silhouette (5,000-pixel subsample)",
                f"{metrics['silhouette_sample']:.3f}"
                if metrics.get("silhouette_sample") is not None
                else "n/a",
            ),
            ("sha256", meta.get("sha256")),
            ("wall time", f"{clock.seconds:.1f} s"),
        ],
    )
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm cluster", main, argv)


if __name__ == "__main__":
    sys.exit(run())
