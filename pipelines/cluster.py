"""`efm cluster`: unsupervised k-means on a uniform random sample of valid pixels -> a model file.

    chunk specs | RandomPixels (bottom-k of uniform keys per chunk, combined) | fit k-means, save

The model file and sidecar are the same kind `efm train` writes (classes 0..K-1, kind
"clusterer"), so `efm classify` applies them unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import apache_beam as beam
import numpy as np

from pipelines import common
from transforms.core import checks
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.core.metrics import metric_totals
from transforms.learning import models, sampling
from transforms.storage import collection, outputs, readers

DEFAULT_CLUSTERS = 10  # as in the original notebook
DEFAULT_SAMPLE_SIZE = 100_000
MAX_CLUSTERS = 32767  # the largest class map `efm classify` writes (int16 codes, -1 = fill)


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
        "--sample-size",
        type=int,
        default=DEFAULT_SAMPLE_SIZE,
        help="valid pixels drawn uniformly to fit on (default: %(default)s)",
    )
    parser.add_argument(
        "--years", help="years to draw from, e.g. 2021,2022 (default: every year of the store)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the sample and of k-means (default: %(default)s)",
    )
    common.add_overwrite(parser, "an existing model file")
    return parser


def fit_kmeans(vectors: np.ndarray, clusters: int, seed: int = 0):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit(vectors)


def kmeans_metrics(model, vectors: np.ndarray, seed: int = 0) -> dict:
    from sklearn.metrics import silhouette_score

    sizes = np.bincount(model.labels_, minlength=model.n_clusters)
    n = min(len(vectors), 5000)
    silhouette = (
        float(silhouette_score(vectors, model.labels_, sample_size=n, random_state=seed))
        if 1 < model.n_clusters < len(vectors)
        else None
    )
    return {
        "inertia": float(model.inertia_),
        "silhouette_sample": silhouette,
        "cluster_sizes": sizes.tolist(),
        "sample_size": len(vectors),
    }


def check_sample(drawn: int, clusters: int, path: str, years: list[int]) -> None:
    """After the sampler, before the fit: a store (in these years) with no valid pixel, or too few."""
    when = ", ".join(map(str, years))
    if drawn == 0:
        raise InputError(
            "--embeddings",
            f"{path} has no valid pixel in {when} (every pixel is no data): nothing to cluster; "
            "choose other --years or another store",
        )
    if drawn < clusters:
        raise InputError(
            "--clusters",
            f"{path} has only {drawn} valid pixels in {when}, fewer than --clusters {clusters}; "
            f"pass --clusters {drawn} or fewer",
        )


def fit_and_save(sample, *, clusters: int, seed: int, output: str, sidecar: dict) -> dict:
    """Runs once, after the sample is combined: fit and write the model file + sidecar."""
    _, vectors = sample
    check_sample(len(vectors), clusters, sidecar["store"]["embeddings"], sidecar["store"]["years"])
    model = fit_kmeans(vectors, clusters, seed)
    return models.save_model(
        model, output, {**sidecar, "metrics": kmeans_metrics(model, vectors, seed)}
    )


def main(argv: Sequence[str] | None = None) -> int:
    args, options = common.split_args(build_parser(), argv)
    checks.check_seed(args.seed)
    if args.clusters < 2:
        raise InputError("--clusters", f"k-means needs at least 2 clusters, got {args.clusters}")
    if args.clusters > MAX_CLUSTERS:
        raise InputError(
            "--clusters",
            f"{args.clusters} clusters cannot be stored in a class map (at most {MAX_CLUSTERS}, int16); k-means on embeddings is "
            "used with tens of clusters: pass e.g. --clusters 10",
        )
    if args.sample_size < args.clusters:
        raise InputError(
            "--sample-size",
            f"{args.sample_size} pixels cannot make {args.clusters} clusters; draw at least as many pixels as clusters",
        )
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
                >> sampling.RandomPixels(
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
                >> beam.CombineGlobally(sampling.BottomK(args.sample_size, len(info.bands)))
            )
        )
        sample | "FitAndSave" >> beam.Map(
            fit_and_save,
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
