"""Benchmark: `efm change` / `efm similarity` vs a plain numpy pass over the same chunks.

On the demo's data at 4x its area (`efm make-sample-data --size 2048x2560`, then
`efm extract --source cog` as `efm demo` runs it: int8 store, 512-px chunks, 2 years), side by
side in one run, after the same warm-up (one unmeasured numpy pass reading every chunk of both
years, so the store is in the page cache for every measured run):
  (a) the CLI as users run it (`python -m pipelines.change|similarity`, default flags: the local
      DirectRunner), and again with `--direct_num_workers=2 --direct_running_mode=multi_processing`;
  (b) a plain numpy pass in its own process: open the zarr array, loop over its chunks, read,
      de-quantise (the same 256-entry table), the same float32 einsum (NaN in any band -> NaN),
      write the result to a zarr array of the same chunking: read + compute + write.
Every run is a fresh process (interpreter start and imports included), measured from start to
exit: wall seconds and CPU seconds (user + system) of the whole process tree (psutil, children
sampled every 50 ms, and the rusage of the root and the children it waited for: benchmarks/process_tree.py).
The numpy outputs are compared with efm's (equal NaN positions, |diff| <= 1e-6).

    python benchmarks/similarity_change_vs_numpy.py [--size 2048x2560] [--workdir /tmp/efm-bench9] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_SIZE = "2048x2560"  # 4x the demo's default 1024x1280
LABEL = "forest"


def efm(args: list[str], log: str) -> None:
    with open(log, "a") as f:
        subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            check=True,
        )


def make_store(workdir: str, size: str = DEMO_SIZE) -> tuple[str, str]:
    """The demo's own generator and extract step at 4x the area; reused if already there."""
    data, emb, log = (
        os.path.join(workdir, "data"),
        os.path.join(workdir, "emb.zarr"),
        os.path.join(workdir, "setup.log"),
    )
    if not os.path.exists(os.path.join(data, "sample_data.json")):
        efm(["make-sample-data", "--output", data, "--size", size], log)
    manifest = json.load(open(os.path.join(data, "sample_data.json")))
    if not os.path.exists(emb):
        efm(
            [
                "extract",
                "--source",
                "cog",
                "--cog-root",
                os.path.join(data, "mirror"),
                f"--bbox={','.join(repr(v) for v in manifest['bbox'])}",
                "--crs",
                manifest["crs"],
                "--years",
                ",".join(map(str, manifest["spec"]["years"])),
                "--output",
                emb,
                "--dtype",
                "int8",
                "--tuning",
                "chunk_size=512",
                "--tuning",
                "max_concurrent_requests=4",
                "--runner=FnApiRunner",
            ],
            log,
        )
    return emb, os.path.join(data, "labels.geojson")


def measured(argv: list[str]) -> dict:
    """Run argv from ROOT; wall s and CPU s of the process tree."""
    from process_tree import measure

    run = measure(argv, ROOT)
    return {"s": run["s"], "cpu": run["cpu"], "out": run["out"]}


# ---- (b) the numpy pass, run in its own process by `--numpy-pass` ---------------------------


def numpy_pass(embeddings: str, output: str, product: str, reference_json: str | None) -> None:
    import zarr

    array = zarr.open_group(embeddings, mode="r")["embedding"]  # (time, y, x, band)
    n_time, height, width, _ = array.shape
    rows, cols = array.chunks[1], array.chunks[2]
    if (
        array.dtype == np.int8
    ):  # the store's quantisation: (code / 127.5)^2 * sign(code), -128 = no data
        codes = np.arange(-128, 128, dtype=np.float64)
        table = (np.square(codes / 127.5) * np.sign(codes)).astype(np.float32)
        table[0] = np.nan
        table = np.roll(table, -128)  # indexed by the code's bits as uint8

        def as_float(block):
            return table[block.view(np.uint8)]
    else:

        def as_float(block):
            return block

    if product == "change":
        steps, shape, chunks = [(0, 1)], (height, width), (rows, cols)
    else:
        refs = np.asarray(json.loads(reference_json), dtype=np.float32)
        steps, shape, chunks = (
            [(t,) for t in range(n_time)],
            (n_time, height, width),
            (1, rows, cols),
        )
    out = zarr.open_array(
        output,
        mode="w-",
        shape=shape,
        chunks=chunks,
        dtype="float32",
        fill_value=np.nan,
        zarr_format=2,
    )
    for t, step in enumerate(steps):
        for r in range(0, height, rows):
            for c in range(0, width, cols):
                w = [as_float(array[i, r : r + rows, c : c + cols, :]) for i in step]
                if product == "change":
                    out[r : r + rows, c : c + cols] = np.einsum(
                        "ijk,ijk->ij", w[0], w[1], dtype=np.float32
                    )
                else:
                    out[t, r : r + rows, c : c + cols] = np.einsum(
                        "ijk,k->ij", w[0], refs[t], dtype=np.float32
                    )


# ---- the comparison ------------------------------------------------------------------------


def run_all(emb: str, points: str, workdir: str) -> list[dict]:
    import xarray as xr
    import zarr

    ds = xr.open_zarr(emb, consolidated=None)
    years = [int(str(t)[:4]) for t in ds["time"].values]
    multi = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    products = {
        "change": [
            "change",
            "--embeddings",
            emb,
            "--years",
            f"{years[0]},{years[1]}",
        ],
        "similarity": [
            "similarity",
            "--embeddings",
            emb,
            "--points",
            points,
            "--label",
            f"label={LABEL}",
        ],
    }
    out = lambda name: os.path.join(workdir, f"{name}.zarr")  # noqa: E731
    me = [sys.executable, os.path.abspath(__file__)]
    # Warm-up, unmeasured and the same for every row: a numpy pass reads every chunk of both years.
    shutil.rmtree(out("warm"), ignore_errors=True)
    measured([*me, "--numpy-pass", "change", "--embeddings", emb, "--output", out("warm")])
    # Start-up alone: the interpreter and the imports, which every run pays once (efm: Beam, xarray, zarr...).
    start = {
        "efm": measured([sys.executable, "-m", "pipelines.cli", "change", "--help"]),
        "numpy": measured([sys.executable, "-c", "import numpy, zarr"]),
    }
    print("start-up", {k: {"s": v["s"], "cpu": v["cpu"]} for k, v in start.items()}, flush=True)
    rows = []
    for product, argv in products.items():
        row = {"product": product, "start": start}
        for key, extra in [("efm", []), ("efm2", multi)]:
            shutil.rmtree(out(f"{product}-{key}"), ignore_errors=True)
            row[key] = measured(
                [
                    sys.executable,
                    "-m",
                    "pipelines.cli",
                    *argv,
                    "--output",
                    out(f"{product}-{key}"),
                    *extra,
                ]
            )
            print(product, key, {k: v for k, v in row[key].items() if k != "out"}, flush=True)
        got = xr.open_zarr(out(f"{product}-efm"), consolidated=True, zarr_format=2)
        ref = json.dumps(got.attrs["reference_vectors"]) if product == "similarity" else None
        shutil.rmtree(out(f"{product}-numpy"), ignore_errors=True)
        row["numpy"] = measured(
            [
                *me,
                "--numpy-pass",
                product,
                "--embeddings",
                emb,
                "--output",
                out(f"{product}-numpy"),
                *(["--reference", ref] if ref else []),
            ]
        )
        print(product, "numpy", {k: v for k, v in row["numpy"].items() if k != "out"}, flush=True)
        a = got["similarity"].values
        b = zarr.open_array(out(f"{product}-numpy"), mode="r")[...]
        a2 = xr.open_zarr(out(f"{product}-efm2"), consolidated=True, zarr_format=2)[
            "similarity"
        ].values
        same_nan = np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(
            np.isnan(a2), np.isnan(b)
        )
        row["maxdiff"] = float(max(np.nanmax(np.abs(a - b)), np.nanmax(np.abs(a2 - b))))
        row["same"] = same_nan and row["maxdiff"] <= 1e-6
        row["pixels"] = int(np.count_nonzero(~np.isnan(b)))
        row["shape"] = b.shape
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| product | output | run | wall s | CPU s | Mpx/CPU s | numpy CPU / efm CPU (target >= 0.8) | numpy wall / efm wall "
        "| CPU ratio, start-up taken off (per process) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        shape = " x ".join(map(str, r["shape"]))
        for key, name in [
            ("efm", "efm, default flags (DirectRunner)"),
            ("efm2", "efm, --direct_num_workers=2 multi_processing"),
            ("numpy", "plain numpy pass"),
        ]:
            m, n = r[key], r["numpy"]
            processes = {"efm": 1, "efm2": 3}.get(
                key
            )  # efm processes that import everything: driver (+ 2 workers)
            net = (
                f"{(n['cpu'] - r['start']['numpy']['cpu']) / max(m['cpu'] - processes * r['start']['efm']['cpu'], 1e-9):.2f}"
                if processes
                else "-"
            )
            lines.append(
                f"| {r['product']} | {shape}, equal: {'yes' if r['same'] else 'NO'} (max diff {r['maxdiff']:.1e}) | {name} "
                f"| {m['s']:.1f} | {m['cpu']:.1f} | {r['pixels'] / 1e6 / m['cpu']:.2f} | {n['cpu'] / m['cpu']:.2f} | {n['s'] / m['s']:.2f} | {net} |"
            )
    st = rows[0]["start"]
    lines.append(
        f"\nStart-up alone (interpreter + imports, measured apart): efm `change --help` {st['efm']['s']:.1f} s wall, "
        f"{st['efm']['cpu']:.1f} CPU s; `python -c 'import numpy, zarr'` {st['numpy']['s']:.1f} s wall, {st['numpy']['cpu']:.1f} CPU s. "
        "The multi-process rows pay efm's start-up 3 times (driver + 2 workers): the last column takes it off 3 times there."
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/efm-bench9")
    parser.add_argument(
        "--size",
        default=DEMO_SIZE,
        help="area ROWSxCOLS for make-sample-data (default: %(default)s = 4x the demo's)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the generated data and store for another run"
    )
    parser.add_argument("--numpy-pass", choices=["change", "similarity"], help=argparse.SUPPRESS)
    parser.add_argument("--embeddings", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.numpy_pass:
        numpy_pass(args.embeddings, args.output, args.numpy_pass, args.reference)
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    t = time.perf_counter()
    emb, points = make_store(args.workdir, args.size)
    print(f"store {emb} ready in {time.perf_counter() - t:.0f} s", flush=True)
    load_before = os.getloadavg()
    rows = run_all(emb, points, args.workdir)
    print()
    print(table(rows))
    print(
        f"\nload average (1, 5 min) before: {load_before[0]:.1f}, {load_before[1]:.1f}; after: {os.getloadavg()[0]:.1f}, "
        f"{os.getloadavg()[1]:.1f} ({os.cpu_count()} cores)"
    )
    # Only what this script wrote: the outputs, and without --keep the data and store it made.
    ours = [f"{p}-{k}.zarr" for p in ("change", "similarity") for k in ("efm", "efm2", "numpy")] + [
        "warm.zarr"
    ]
    ours += [] if args.keep else ["data", "emb.zarr", "setup.log"]
    for name in ours:
        path = os.path.join(args.workdir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
