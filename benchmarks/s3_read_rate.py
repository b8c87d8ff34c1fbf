"""Benchmark: how fast an S3 server on loopback serves bytes, and what s3fs costs to receive them.

Issue 17's (c) runs read a store over S3 on 127.0.0.1 (benchmarks/store_formats.py). This script
measures the two halves of that path apart, on --mb MiB of random bytes in one object
(incompressible, like float32 shards), served by moto (the tests' server) and by `rclone serve s3`
(benchmarks/loopback_s3.py), each in a process of its own:
  - the object read as ranges of --range-mib (an inner chunk's size) with
    `s3fs.S3FileSystem.cat_ranges`, as efm's shard reader does (transforms/storage/shard_windows.py);
  - (rclone) the object read whole, in one request: s3fs' own way (`cat_file`: a HEAD, then
    50 MiB pieces copied into one buffer) and as the range "0-";
  - wall s and MiB/s (the server's rate), the client's CPU s (this process: s3fs, aiobotocore,
    aiohttp) and MiB per client CPU s;
  - for scale, the same ranges read from a local file (page cache).
Best of --repeat after one warm-up.

    python benchmarks/s3_read_rate.py [--mb 192] [--range-mib 6] [--repeat 3]

Needs the bench extra (rclone): pip install -c constraints.txt -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _best(read, total: int, repeat: int) -> tuple[float, float]:
    read()  # warm-up
    best = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), _cpu()
        got = read()
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
        assert sum(len(g) for g in got) == total, "short read"
        best = (wall, cpu) if best is None or wall < best[0] else best
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=192, help="object size, MiB (%(default)s)")
    parser.add_argument("--range-mib", type=int, default=6, help="range size, MiB (%(default)s)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import numpy as np
    import s3fs
    from loopback_s3 import moto_s3, rclone_s3

    size, step = args.mb * 2**20, args.range_mib * 2**20
    blob = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    starts = list(range(0, size - step + 1, step))
    total = step * len(starts)
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        os.makedirs(os.path.join(scratch, "efm-bench"))
        with open(os.path.join(scratch, "efm-bench", "object"), "wb") as f:
            f.write(blob)
        os.environ.update({"AWS_DEFAULT_REGION": "us-east-1"})
        for name, serve in (("moto", moto_s3), ("rclone", lambda: rclone_s3(scratch))):
            with serve() as endpoint:
                fs = s3fs.S3FileSystem(
                    key="bench", secret="bench", endpoint_url=endpoint, skip_instance_cache=True
                )
                if name == "moto":
                    fs.mkdir("efm-bench")
                    fs.pipe("efm-bench/object", blob)
                rows[f"{name}: cat_ranges, {args.range_mib} MiB ranges"] = _best(
                    lambda fs=fs: fs.cat_ranges(
                        ["efm-bench/object"] * len(starts), starts, [s + step for s in starts]
                    ),
                    total,
                    args.repeat,
                )
                if name == "rclone":
                    for label, start in (("cat_file (HEAD, 50 MiB pieces)", None), ("range 0-", 0)):
                        rows[f"{name}: whole object, {label}"] = _best(
                            lambda start=start, fs=fs: [
                                fs.cat_file("efm-bench/object", start=start)[:total]
                            ],
                            total,
                            args.repeat,
                        )

        def local():
            with open(os.path.join(scratch, "efm-bench", "object"), "rb") as g:
                return [(g.seek(s), g.read(step))[1] for s in starts]

        rows["local file (page cache)"] = _best(local, total, args.repeat)
    mb = total / 2**20
    print(
        f"{mb:.0f} MiB in {len(starts)} ranges of {args.range_mib} MiB; {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, s3fs {s3fs.__version__}"
    )
    print("| server: read | wall s | MiB/s | client CPU s | MiB per client CPU s |")
    print("|---|---:|---:|---:|---:|")
    for name, (wall, cpu) in rows.items():
        print(f"| {name} | {wall:.2f} | {mb / wall:.0f} | {cpu:.2f} | {mb / max(cpu, 1e-9):.0f} |")


if __name__ == "__main__":
    main()
