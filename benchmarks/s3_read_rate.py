"""Benchmark: how fast moto's S3 server on loopback serves bytes, and what s3fs costs to receive them.

Issue 17's (c) runs read a store from moto's S3 server on 127.0.0.1 (benchmarks/store_formats.py).
This script measures the two halves of that path apart, on --mb MiB of random bytes in one object
(incompressible, like float32 shards), read as ranges of --range-mib (an inner chunk's size) with
`s3fs.S3FileSystem.cat_ranges`, as efm's shard reader does (transforms/storage/shard_windows.py):
  - wall s and MB/s: the server's rate (moto runs in its own process here, one Python server);
  - the client's CPU s (this process: s3fs, aiobotocore, aiohttp) and MB per CPU s;
  - for scale, the same ranges read from a local file (page cache).
Best of --repeat after one warm-up.

    python benchmarks/s3_read_rate.py [--mb 192] [--range-mib 6] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom moto import server\n"
            f"server.ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False).start()\n"
            "time.sleep(86400)",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # the server is up when it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        import s3fs

        fs = s3fs.S3FileSystem()
        fs.mkdir("efm-bench")
        size, step = args.mb * 2**20, args.range_mib * 2**20
        blob = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
        fs.pipe("efm-bench/object", blob)
        starts = list(range(0, size - step + 1, step))
        total = step * len(starts)
        rows = {}
        rows["s3fs cat_ranges from moto (loopback)"] = _best(
            lambda: fs.cat_ranges(
                ["efm-bench/object"] * len(starts), starts, [s + step for s in starts]
            ),
            total,
            args.repeat,
        )
        with tempfile.NamedTemporaryFile() as f:
            f.write(blob)
            f.flush()

            def local():
                with open(f.name, "rb") as g:
                    return [(g.seek(s), g.read(step))[1] for s in starts]

            rows["local file (page cache)"] = _best(local, total, args.repeat)
    finally:
        server.kill()
    mb = total / 2**20
    print(
        f"{mb:.0f} MiB in {len(starts)} ranges of {args.range_mib} MiB; {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, s3fs {s3fs.__version__}"
    )
    print("| read | wall s | MiB/s | client CPU s | MiB per client CPU s |")
    print("|---|---:|---:|---:|---:|")
    for name, (wall, cpu) in rows.items():
        print(f"| {name} | {wall:.2f} | {mb / wall:.0f} | {cpu:.2f} | {mb / max(cpu, 1e-9):.0f} |")


if __name__ == "__main__":
    main()
