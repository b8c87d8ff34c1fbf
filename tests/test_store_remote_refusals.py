"""Remote roots that cannot be read, through the real CLI in a subprocess (so that what Python
prints at exit is seen too): one line naming the root, exit 2, nothing written, no botocore /
aiohttp / gcsfs traceback or log line, and an answer in seconds, not minutes.

Servers on 127.0.0.1: a closed port (https://, s3:// via AWS_ENDPOINT_URL, gs:// via
STORAGE_EMULATOR_HOST), a server answering 403 to everything, a server that accepts the
connection and never answers (EFM_REMOTE_TIMEOUT=2), and moto's S3 with a private bucket read
without credentials. The time each refusal took is printed (`pytest -s`), never asserted.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("s3fs", reason="the [s3] extra")
pytest.importorskip("gcsfs", reason="the [gcs] extra")
pytest.importorskip("moto.server", reason="moto[server], in the [test] extra")

from tests.helpers import field_stores, s3  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Forbidden(http.server.BaseHTTPRequestHandler):
    def _answer(self, body: bool):
        self.send_response(403)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "9")
        self.end_headers()
        if body:
            self.wfile.write(b"forbidden")

    def do_GET(self):  # noqa: N802
        self._answer(True)

    def do_HEAD(self):  # noqa: N802
        self._answer(False)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    forbidden = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=forbidden.serve_forever, daemon=True).start()
    silent = socket.socket()  # accepts connections (the kernel's backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    mosaic = str(tmp_path_factory.mktemp("pub") / "aef-mosaic.zarr")
    field_stores.aef_mosaic(mosaic, width=40, height=30)
    with s3.moto_server(str(tmp_path_factory.mktemp("aws"))) as endpoint:
        s3.upload_folder(mosaic, "private", "aef-mosaic.zarr", public=False)
        yield {
            "forbidden": f"http://127.0.0.1:{forbidden.server_address[1]}",
            "silent": f"http://127.0.0.1:{silent.getsockname()[1]}",
            "moto": endpoint,
        }
    forbidden.shutdown()
    silent.close()


def _cases(servers) -> dict:
    """name -> (root, extra environment, what the line must say)."""
    closed = _closed_port()
    return {
        "https-closed-port": (f"https://127.0.0.1:{closed}/x.zarr", {}, ("cannot reach",)),
        "http-403": (f"{servers['forbidden']}/x.zarr", {}, ("was denied", "HTTP 403")),
        "http-silent": (
            f"{servers['silent']}/x.zarr",
            {"EFM_REMOTE_TIMEOUT": "2"},
            ("cannot reach", "no answer within 2 s", "EFM_REMOTE_TIMEOUT"),
        ),
        "s3-refused-endpoint": (
            "s3://bucket/x.zarr",
            {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed}"},
            ("cannot reach", "AWS_ENDPOINT_URL"),
        ),
        "s3-private-bucket": (
            "s3://private/aef-mosaic.zarr",
            {"AWS_ENDPOINT_URL": servers["moto"]},
            ("was denied", "credentials"),
        ),
        "gs-refused-endpoint": (
            "gs://bucket/x.zarr",
            {
                "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{closed}",
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            },
            ("cannot reach", "STORAGE_EMULATOR_HOST"),
        ),
    }


def _env(extra: dict, scratch) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in s3.CREDENTIAL_VARS}
    nowhere = str(scratch / "none")
    env.update(
        {
            "AWS_SHARED_CREDENTIALS_FILE": nowhere,
            "AWS_CONFIG_FILE": nowhere,
            "AWS_DEFAULT_REGION": "us-west-2",
            "EFM_LOG_DIR": str(scratch),
            **extra,
        }
    )
    env.pop("STORAGE_EMULATOR_HOST", None) if "STORAGE_EMULATOR_HOST" not in extra else None
    return env


def _argv(command: str, root: str, out: str, refs: str) -> list[str]:
    if command == "export":
        return ["export", "--input", root, "--band", "A01", "--output", out]
    if command == "label":
        return [
            "label",
            "--embeddings",
            root,
            "--output",
            out,
            "--classes",
            "a,b",
            "--tuning",
            "port=0",
        ]
    return [command, "--embeddings", root, "--points", refs, "--output", out]


def _check(name, command, code, err, root, fragments, out) -> list[str]:
    lines = err.strip().splitlines()
    flag = "--input" if command == "export" else "--embeddings"
    failures = []
    if not (
        code == 2
        and len(lines) == 1
        and lines[0].startswith(f"efm {command}: error: {flag}: ")
        and root in lines[0]
        and all(f in lines[0] for f in fragments)
    ):
        failures.append(f"{name}: exit {code}, stderr {lines[:8]}")
    if os.path.exists(out):
        failures.append(f"{name}: {out} was written")
    return failures


@pytest.mark.parametrize("command", ["similarity", "export", "label"])
def test_an_unreachable_or_denied_root_is_one_line_in_seconds(
    servers, tmp_path, capsys, monkeypatch, command
):
    """In this process: every case, for three commands; the time each refusal takes is printed."""
    from pipelines import cli

    refs = tmp_path / "refs.csv"
    refs.write_text("lon,lat\n-122.4999,37.9999\n")
    out_ext = {"export": "tif", "label": "geojson"}.get(command, "zarr")
    failures = []
    for name, (root, extra, fragments) in _cases(servers).items():
        out = str(tmp_path / f"{name}.{out_ext}")
        with monkeypatch.context() as env:
            for key, value in extra.items():
                env.setenv(key, value)
            s3.fresh_state()
            t0 = time.monotonic()
            code = cli.main(_argv(command, root, out, str(refs)))
            seconds = time.monotonic() - t0
        s3.fresh_state()
        failures += _check(name, command, code, capsys.readouterr().err, root, fragments, out)
        with capsys.disabled():
            print(f"efm {command}, {name}: refused in {seconds:.2f} s")
    assert not failures, "\n".join(failures)


def test_nothing_is_printed_at_exit_either(servers, tmp_path):
    """The real CLI in subprocesses (run side by side): nothing after the line, at exit (Zarr's
    concurrent first reads used to leave "Exception ignored" tracebacks behind on S3)."""
    refs = tmp_path / "refs.csv"
    refs.write_text("lon,lat\n-122.4999,37.9999\n")
    started = {}
    for name, (root, extra, fragments) in _cases(servers).items():
        out = str(tmp_path / f"{name}.zarr")
        argv = [sys.executable, "-m", "pipelines.cli", *_argv("similarity", root, out, str(refs))]
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=_env(extra, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[name] = (process, root, fragments, out)
    failures = []
    for name, (process, root, fragments, out) in started.items():
        try:
            _, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            failures.append(f"{name}: still running after 120 s")
            continue
        failures += _check(name, "similarity", process.returncode, err, root, fragments, out)
    assert not failures, "\n".join(failures)
