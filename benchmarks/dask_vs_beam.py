"""Benchmark: `efm.predict` on a Dask LocalCluster vs `efm classify` on Beam, same store, same cores.

On generated float32 stores (one year; 1x = --size x --size px, and 4x the area, --chunk-size px
chunks; classify_vs_reference.py's generator) and one model per --models (trained on the 1x
store), side by side in one run:
  (a) `efm classify` on DirectRunner, 2 worker processes (multi_processing), end to end;
  (b) `efm.predict(ds, model).to_zarr(...)` on `LocalCluster(n_workers=2, processes=True,
      threads_per_worker=1)`, end to end (process start, cluster start, reading, predicting,
      writing the class map).
Each runs as a subprocess; every process of its tree is sampled every 50 ms: peak RSS of the
largest single process (a worker: what must fit on one machine of a cluster), peak RSS of the
whole tree, CPU seconds (user + system) of the whole tree. The two maps are compared pixel for
pixel. Ratios are (b) over (a): < 1 means Dask used less. Wall times move with the machine's
load (printed before and after); CPU seconds much less.

    python benchmarks/dask_vs_beam.py [--size 2048] [--chunk-size 512] [--models knn] [--workdir /tmp/efm-dask-bench]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

MIB = 2**20


def measure(argv: list[str]) -> dict:
    """Run argv; wall s, CPU s of the tree, peak RSS of the tree and of its largest process."""
    from process_tree import measure as measure_tree

    return measure_tree(argv, ROOT, env={**os.environ, "PYTHONPATH": ROOT})


def run_dask(store: str, model: str, output: str) -> None:
    """(b), in its own process: the class map written by efm.predict on a 2-process LocalCluster."""
    import shutil

    from dask.distributed import Client, LocalCluster

    import efm

    shutil.rmtree(output, ignore_errors=True)
    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        classes = efm.predict(
            efm.open_embeddings(store), model, trust_pickle=True
        )  # a pickle we made (the sha256 is checked in (a))
        classes.to_dataset().to_zarr(output, mode="w", zarr_format=2, consolidated=True)


def beam_argv(store: str, model: str, output: str) -> list[str]:
    from transforms.learning import models

    sha = (
        ["--model-sha256", models.read_sidecar(model)["sha256"]]
        if not model.endswith(".skops")
        else []
    )
    return [
        sys.executable,
        "-m",
        "pipelines.classify",
        "--embeddings",
        store,
        "--model",
        model,
        *sha,
        "--output",
        output,
        "--overwrite",
        "--runner=DirectRunner",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    ]


def same_map(a: str, b: str) -> bool:
    import zarr

    return bool(
        np.array_equal(
            zarr.open_group(a, mode="r")["class"][...], zarr.open_group(b, mode="r")["class"][...]
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        type=int,
        default=2048,
        help="side of the 1x store in pixels (default: %(default)s)",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=512, help="chunk side in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--models", default="knn", help="knn and/or random-forest (default: %(default)s)"
    )
    parser.add_argument("--workdir", default="/tmp/efm-dask-bench")
    parser.add_argument(
        "--dask-run", nargs=3, metavar=("STORE", "MODEL", "OUTPUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.dask_run:
        run_dask(*args.dask_run)
        return 0

    from classify_vs_reference import make_store, train_models

    os.makedirs(args.workdir, exist_ok=True)
    load_before = os.getloadavg()
    stores = {k: os.path.join(args.workdir, f"emb_{k}x.zarr") for k in (1, 4)}
    for k, path in stores.items():
        make_store(path, args.size * (2 if k == 4 else 1), args.chunk_size)
    trained = train_models(stores[1], args.workdir, args.chunk_size, ".pkl")
    rows = []
    for name in args.models.split(","):
        for k, path in stores.items():
            beam_out, dask_out = (
                os.path.join(args.workdir, f"beam_{name}_{k}x.zarr"),
                os.path.join(args.workdir, f"dask_{name}_{k}x.zarr"),
            )
            a = measure(beam_argv(path, trained[name], beam_out))
            b = measure(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--dask-run",
                    path,
                    trained[name],
                    dask_out,
                ]
            )
            row = {"model": name, "k": k, "a": a, "b": b, "same": same_map(beam_out, dask_out)}
            rows.append(row)
            print(
                f"{name} {k}x: beam {a['s']:.1f} s {a['cpu']:.0f} CPU s worker {a['peak_worker'] / MIB:.0f} MiB | "
                f"dask {b['s']:.1f} s {b['cpu']:.0f} CPU s worker {b['peak_worker'] / MIB:.0f} MiB | same {row['same']}",
                flush=True,
            )
    load_after = os.getloadavg()
    side = args.size
    print()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; 1x = {side} x {side} px "
        f"({side * side / 1e6:.1f} Mpx, 1 year, 64 bands float32, {args.chunk_size}-px chunks = {args.chunk_size**2 * 256 / MIB:.0f} MiB each), "
        f"4x = {2 * side} x {2 * side} px; load average (1, 5, 15 min) before {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f}, "
        f"after {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f}"
    )
    print()
    print(
        "| model | area | (a) Beam: wall, CPU | (b) Dask: wall, CPU | (b)/(a) wall | (b)/(a) CPU | peak RSS per worker (a) / (b) "
        "| (b) worker at 4x / at 1x | peak RSS all processes (a) / (b) | (a) = (b) pixel for pixel |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = {r["model"]: r for r in rows if r["k"] == 1}
    for r in rows:
        a, b = r["a"], r["b"]
        growth = b["peak_worker"] / base[r["model"]]["b"]["peak_worker"]
        print(
            f"| {r['model']} | {r['k']}x | {a['s']:.1f} s, {a['cpu']:.0f} s | {b['s']:.1f} s, {b['cpu']:.0f} s | {b['s'] / a['s']:.2f} "
            f"| {b['cpu'] / a['cpu']:.2f} | {a['peak_worker'] / MIB:,.0f} / {b['peak_worker'] / MIB:,.0f} MiB | {growth:.2f} "
            f"| {a['peak_tree'] / MIB:,.0f} / {b['peak_tree'] / MIB:,.0f} MiB | {'yes' if r['same'] else 'NO'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
