"""Benchmark: where (c) spends its time over (b) in `efm similarity` (benchmarks/store_formats.py).

Needs the stores `store_formats.py --keep` left in --workdir (b-<dtype>.zarr, points.csv). Runs,
interleaved, each in a fresh process, best of --repeat after one warm-up:
  - the start-up alone: `collection.is_collection` then `store.open_embeddings` (imports not
    counted), on the local store (b) and over `rclone serve s3` on 127.0.0.1 (c);
  - the whole `efm similarity` of store_formats.py on (b) and on (c) with each remote part size
    of --parts (`shard_windows.PART_BYTES` MiB : `IN_FLIGHT`, patched in the command's process),
    with the command's user and system CPU seconds (rusage of the child).

    PYTHONPATH=$PWD python benchmarks/s3_overhead.py [--workdir /tmp/efm-store-formats] [--parts 2:16,8:8,32:4]

Needs the bench extra (rclone): pip install -c constraints.txt -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

START_UP = """
import sys, time
from transforms.storage import collection, store
t0 = time.perf_counter()
collection.is_collection(sys.argv[1])
t1 = time.perf_counter()
store.open_embeddings(sys.argv[1])
print(t1 - t0, time.perf_counter() - t1)
"""
PATCHED = (
    "import sys, transforms.storage.shard_windows as s; s.PART_BYTES = int(sys.argv[1]) * 2**20; "
    "s.IN_FLIGHT = int(sys.argv[2]); from pipelines import cli; sys.exit(cli.main(sys.argv[3:]))"
)


def run(argv: list[str], env: dict) -> tuple[float, float, float, str]:
    """(wall s, user s, system s, stdout) of argv in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:5])} failed:\n{done.stderr[-2000:]}")
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/efm-store-formats")
    parser.add_argument("--dtype", default="int8")
    parser.add_argument("--parts", default="2:16,8:8,32:4")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from loopback_s3 import anonymous_env, rclone_s3
    from store_formats import product_argv

    local = os.path.join(args.workdir, f"b-{args.dtype}.zarr")
    points = os.path.join(args.workdir, "points.csv")
    if not os.path.exists(local) or not os.path.exists(points):
        raise SystemExit(f"no {local} or {points}: run store_formats.py --keep first")
    served = os.path.join(args.workdir, "served")
    os.makedirs(os.path.join(served, "bench"), exist_ok=True)
    link = os.path.join(served, "bench", f"b-{args.dtype}.zarr")
    if not os.path.exists(link):
        os.symlink(local, link)
    remote = f"s3://bench/b-{args.dtype}.zarr"
    parts = [tuple(int(v) for v in p.split(":")) for p in args.parts.split(",")]
    output = os.path.join(args.workdir, "s3-overhead-out.zarr")
    start_up: dict = {}
    commands: dict = {}
    with rclone_s3(served) as endpoint:
        envs = {
            "b": {**os.environ, "PYTHONPATH": ROOT},
            "c": {**anonymous_env(endpoint, args.workdir), "PYTHONPATH": ROOT},
        }
        for i in range(args.repeat + 1):  # the first: warm-up
            for key, store in (("b", local), ("c", remote)):
                _, _, _, out = run([sys.executable, "-c", START_UP, store], envs[key])
                check, opened = (float(v) for v in out.split())
                if i:
                    start_up.setdefault(key, []).append((check, opened))
            runs = [("(b) local", None, local)] + [
                (f"(c) S3, {p} MiB x {f}", (p, f), remote) for p, f in parts
            ]
            for name, patch, store in runs:
                argv = product_argv("similarity", store, output, "", points, "EPSG:32610")
                if patch is not None:
                    argv = [sys.executable, "-c", PATCHED, *map(str, patch), *argv[3:]]
                wall, user, system, _ = run(argv, envs["c" if patch else "b"])
                print(
                    f"{name} round {i}: {wall:.2f} s, user {user:.2f}, sys {system:.2f}", flush=True
                )
                if i:
                    commands.setdefault(name, []).append((wall, user, system))
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    print(
        f"\n`PYTHONPATH=$PWD python benchmarks/s3_overhead.py --workdir {args.workdir} --dtype "
        f"{args.dtype} --parts {args.parts} --repeat {args.repeat}` on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {now}, load "
        f"{os.getloadavg()[0]:.1f}; best of {args.repeat} after a warm-up, interleaved.\n"
    )
    print("| start-up | is_collection s | open_embeddings s |\n|---|---:|---:|")
    for key, values in start_up.items():
        print(f"| ({key}) | {min(v[0] for v in values):.2f} | {min(v[1] for v in values):.2f} |")
    print("\n| efm similarity | wall s | user s | sys s | wall / (b) |\n|---|---:|---:|---:|---:|")
    base = min(v[0] for v in commands["(b) local"])
    for name, values in commands.items():
        wall = min(v[0] for v in values)
        user, system = min(v[1] for v in values), min(v[2] for v in values)
        print(f"| {name} | {wall:.2f} | {user:.2f} | {system:.2f} | {wall / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
