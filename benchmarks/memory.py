"""Peak memory of `efm extract`, `sample`, `classify` and `cluster` at 1x, 4x and 16x the area.

Each command runs as a subprocess with default flags (float32 store, chunk 1024, cap 40,
worker_memory_gb=2); the summed RSS of its process tree is sampled every 0.2 s. The Earth
Engine emulator serves the procedural collection (emulators/earthengine/procedural.py:
values computed per request, so it holds nothing however large the area) from its own
process, not counted, with a fixed latency per request. Targets (issue 8): peak RSS at 16x
within 1.2x of 1x, and under 2 GiB.

    python benchmarks/memory.py                      # 1x = 2048 x 2048 px (4 chunks), 4x, 16x
    python benchmarks/memory.py --base 1024 --scales 1,4 --keep /tmp/mem   # smaller, keep the stores
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("EFM_EE_ACCESS_TOKEN", "benchmark-token")
os.environ.setdefault("NO_GCE_CHECK", "True")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyproj  # noqa: E402

from emulators.earthengine import procedural  # noqa: E402

GIB = 2**30


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(argv: list[str], log: str) -> tuple[int, float]:
    """Runs argv; returns (peak summed RSS of its process tree, wall seconds). Fails loudly."""
    env = {**os.environ, "PYTHONPATH": REPO}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        watched = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, tree_rss(watched))
            except psutil.Error:
                pass
            time.sleep(0.2)
    if proc.returncode != 0:
        sys.exit(
            f"{' '.join(argv[:3])} failed ({proc.returncode}); see {log}:\n{open(log).read()[-3000:]}"
        )
    return peak, time.perf_counter() - start


def start_emulator(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulators.earthengine",
            "--procedural",
            "--latency",
            str(latency),
            "--max-in-flight",
            "40",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        sys.exit(f"the emulator did not start: {url!r}")
    return proc, url


def write_points(path: str, side: int, n: int, seed: int = 0) -> None:
    """n labelled points spread uniformly over the side x side px area (lon/lat CSV)."""
    rng = np.random.default_rng(seed)
    margin = 1000 * procedural.SCALE
    x = procedural.X0 + margin + rng.uniform(0, side * procedural.SCALE, n)
    y = procedural.Y0 - margin - rng.uniform(0, side * procedural.SCALE, n)
    lon, lat = pyproj.Transformer.from_crs(procedural.CRS, "EPSG:4326", always_xy=True).transform(
        x, y
    )
    labels = np.where((np.floor(x / 5000) + np.floor(y / 5000)) % 2 == 0, "field", "forest")
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["lon", "lat", "label"])
        writer.writerows(zip(lon, lat, labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base",
        type=int,
        default=2048,
        help="side of the 1x area in pixels (default: %(default)s)",
    )
    parser.add_argument("--scales", default="1,4,16", help="area multiples (default: %(default)s)")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.3,
        help="emulator seconds per request (default: %(default)s)",
    )
    parser.add_argument(
        "--points-per-base",
        type=int,
        default=2000,
        help="labelled points per 1x area (default: %(default)s)",
    )
    parser.add_argument("--commands", default="extract,sample,classify,cluster")
    parser.add_argument(
        "--keep", help="folder for the stores (default: a temporary one, deleted at the end)"
    )
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    commands = args.commands.split(",")
    work = args.keep or tempfile.mkdtemp(prefix="efm-memory-")
    os.makedirs(work, exist_ok=True)
    efm = [sys.executable, "-m", "pipelines.cli"]  # what the `efm` console script runs
    emulator, url = start_emulator(args.latency)
    rows = []
    try:
        model = None
        for k in scales:
            side = int(round(args.base * k**0.5))
            store = os.path.join(work, f"emb_{k}x.zarr")
            points = os.path.join(work, f"points_{k}x.csv")
            samples = os.path.join(work, f"samples_{k}x.parquet")
            write_points(points, side, args.points_per_base * k)
            steps = {
                "extract": [
                    "extract",
                    "--bbox",
                    procedural.bbox(side, side),
                    "--crs",
                    procedural.CRS,
                    "--years",
                    "2021",
                    "--output",
                    store,
                    "--tuning",
                    f"ee_api_url={url}",
                    "--tuning",
                    "ee_project=bench",
                ],
                "sample": [
                    "sample",
                    "--embeddings",
                    store,
                    "--points",
                    points,
                    "--label-column",
                    "label",
                    "--output",
                    samples,
                ],
                "classify": [
                    "classify",
                    "--embeddings",
                    store,
                    "--model",
                    "MODEL",
                    "--output",
                    os.path.join(work, f"map_{k}x.zarr"),
                ],
                "cluster": [
                    "cluster",
                    "--embeddings",
                    store,
                    "--output",
                    os.path.join(work, f"kmeans_{k}x.skops"),
                ],
            }
            for name in [c for c in ("extract", "sample", "classify", "cluster") if c in commands]:
                argv = steps[name]
                if name == "classify":
                    if model is None:  # one model for every area: trained on the 1x sample
                        model = os.path.join(work, "model.skops")
                        subprocess.run(
                            [
                                *efm,
                                "train",
                                "--samples",
                                samples,
                                "--classifier",
                                "logistic-regression",
                                "--output",
                                model,
                                "--tuning",
                                "folds=2",
                            ],
                            check=True,
                            env={**os.environ, "PYTHONPATH": REPO},
                            cwd=REPO,
                            stdout=subprocess.DEVNULL,
                        )
                    argv = [a if a != "MODEL" else model for a in argv]
                peak, seconds = run_measured([*efm, *argv], os.path.join(work, f"{name}_{k}x.log"))
                px = _store_px(store)
                rows.append((name, k, px, peak, seconds))
                print(
                    f"{name:9s} {k:3d}x {px:>13,d} px  peak {peak / GIB:6.2f} GiB  {seconds:7.1f} s",
                    flush=True,
                )
                if name == "extract":
                    with open(os.path.join(work, f"{name}_{k}x.log")) as fh:
                        print(
                            "          "
                            + "".join(line for line in fh if "peak open chunks" in line).strip(),
                            flush=True,
                        )
    finally:
        emulator.terminate()
        emulator.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| command | area | px | peak RSS | ratio to 1x | wall |")
    print("|---|---|---|---|---|---|")
    base = {name: peak for name, k, _, peak, _ in rows if k == scales[0]}
    for name, k, px, peak, seconds in rows:
        print(
            f"| efm {name} | {k}x | {px:,d} | {peak / GIB:.2f} GiB | {peak / base[name]:.2f} | {seconds:.0f} s |"
        )


def _store_px(store: str) -> int:
    import xarray as xr

    ds = xr.open_zarr(store, consolidated=True)
    return int(ds.sizes["y"] * ds.sizes["x"] * ds.sizes["time"])


if __name__ == "__main__":
    main()
