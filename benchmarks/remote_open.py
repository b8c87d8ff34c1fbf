"""Benchmark: what opening a remote store costs in round trips, this tree against an earlier one.

A store in the public AEF mosaic's layout (tests/helpers/field_stores.py: `embeddings` int8,
4096 px shards of 256 px inner chunks, x/y/time/band coordinates, EPSG:4326), --width x --height
px, served over HTTP on 127.0.0.1 by a range server that waits --latency-ms before answering each
request (a store across an ocean: ~100 ms). Each tree (this one, and --baseline exported with
`git archive`) runs, in a fresh process with the tree on PYTHONPATH:
  - `store.open_embeddings(URL)` (timed inside the process: the imports are not counted), and
  - `efm similarity --embeddings URL --bbox ... --points ...` (2 reference points, a small area),
wall s and the requests the server answered, best of --repeat after one warm-up, the trees
interleaved.

    PYTHONPATH=$PWD python benchmarks/remote_open.py [--latency-ms 100] [--baseline c94e6ae]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

import trees  # noqa: E402

from tests.helpers import field_stores, range_http  # noqa: E402

OPEN = (
    "import sys, time; from transforms.storage import store; t = time.perf_counter(); "
    "store.open_embeddings(sys.argv[1]); print(time.perf_counter() - t)"
)


def make_store(folder: str, width: int, height: int) -> str:
    path = os.path.join(folder, "aef-mosaic.zarr")
    array = field_stores.aef_mosaic(path, width=width, height=height, years=(2024,))
    rng = np.random.default_rng(1)
    array[:] = rng.integers(-127, 128, size=array.shape, dtype=np.int8)
    return path


def measure(argv: list[str], tree: str, server) -> tuple[float, int, str]:
    """(wall s, requests answered, stdout) of argv run with `tree` on PYTHONPATH."""
    before = len(server.requests_seen)
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=tree, env={**os.environ, "PYTHONPATH": tree}, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed in {tree}:\n{done.stderr[-2000:]}")
    return wall, len(server.requests_seen) - before, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--baseline", default="c94e6ae", help="the earlier tree (a git ref)")
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        make_store(workdir, args.width, args.height)
        points = os.path.join(workdir, "points.csv")
        with open(points, "w") as f:
            f.write("lon,lat\n-122.45,37.95\n-122.40,37.96\n")
        delay = args.latency_ms / 1000
        server, url = range_http.serve(workdir, before=lambda _: time.sleep(delay))
        root = f"{url}/aef-mosaic.zarr"
        baseline = trees.export(args.baseline, os.path.join(workdir, f"efm-{args.baseline}"))
        runs = {"this tree": ROOT, args.baseline: baseline}
        best: dict = {}
        try:
            for what in ("open_embeddings", "efm similarity"):
                for i in range(args.repeat + 1):  # the first: warm-up; the trees interleaved
                    for t, (name, tree) in enumerate(runs.items()):
                        output = os.path.join(workdir, f"similarity-{t}-{i}.zarr")
                        argv = (
                            [sys.executable, "-c", OPEN, root]
                            if what == "open_embeddings"
                            else [
                                sys.executable, "-m", "pipelines.cli", "similarity",
                                "--embeddings", root, "--points", points, "--years", "2024",
                                "--bbox", "-122.49,37.93,-122.36,37.99", "--output", output,
                            ]
                        )  # fmt: skip
                        wall, requests, out = measure(argv, tree, server)
                        if what == "open_embeddings":
                            wall = float(out.strip().splitlines()[-1])
                        key = (name, what)
                        if i and (key not in best or wall < best[key][0]):
                            best[key] = (wall, requests)
                        print(f"{name}: {what} {wall:.2f} s, {requests} requests", flush=True)
        finally:
            server.shutdown()
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    print(
        f"\n`PYTHONPATH=$PWD python benchmarks/remote_open.py --latency-ms {args.latency_ms:g} "
        f"--baseline {args.baseline}` on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {now}, load {os.getloadavg()[0]:.1f}; store "
        f"{args.width} x {args.height} px, {args.latency_ms:g} ms before each answer; best of "
        f"{args.repeat} after a warm-up.\n"
    )
    print("| tree | what | wall s | requests | wall / baseline |")
    print("|---|---|---:|---:|---:|")
    base = {what: wall for (name, what), (wall, _) in best.items() if name == args.baseline}
    for (name, what), (wall, requests) in best.items():
        print(f"| {name} | {what} | {wall:.2f} | {requests} | {wall / base[what]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
