"""``EarthEngineEmulatorProcess``: the emulator in a subprocess, for benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from typing import Any

from emulators.earthengine import pixels
from emulators.earthengine.catalog import save_images

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class EarthEngineEmulatorProcess:
    """Starts ``python -m emulators.earthengine`` on the given images; a context manager.

    ``images`` are add_image keyword dicts (e.g. from ``make_embedding_collection``);
    they are written to a temporary directory that the server memory-maps.
    """

    def __init__(
        self,
        images: Sequence[dict[str, Any]] = (),
        *,
        max_in_flight: int = 40,
        latency_s: float = 0.0,
        latency_per_mb_s: float = 0.0,
        error_rates: dict[str, float] | None = None,
        truncate_rate: float = 0.0,
        seed: int = 0,
        max_request_bytes: int = pixels.DEFAULT_MAX_REQUEST_BYTES,
        fault_kinds: Sequence[str] = ("computePixels",),
        python: str = sys.executable,
    ):
        self.images = list(images)
        self.args = [
            "--max-in-flight",
            str(max_in_flight),
            "--latency",
            str(latency_s),
            "--latency-per-mb",
            str(latency_per_mb_s),
            "--error-rates",
            json.dumps(error_rates or {}),
            "--truncate-rate",
            str(truncate_rate),
            "--seed",
            str(seed),
            "--max-request-bytes",
            str(max_request_bytes),
            "--fault-kinds",
            ",".join(fault_kinds),
        ]
        self.python = python
        self.url: str | None = None
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def start(self) -> EarthEngineEmulatorProcess:
        self._tmp = tempfile.TemporaryDirectory(prefix="ee-emulator-")
        save_images(self.images, self._tmp.name)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO_ROOT, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [
                self.python,
                "-m",
                "emulators.earthengine",
                "--port",
                "0",
                "--images",
                self._tmp.name,
                *self.args,
            ],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        line = self._proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the emulator subprocess did not start (first line: {line!r})")
        self.url = line
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout:
                self._proc.stdout.close()
            self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EarthEngineEmulatorProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _call(self, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/_emulator/{route}", data=data, method="GET" if body is None else "POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """Counts by kind and status, max_in_flight_seen, in_flight, bytes_out, requests."""
        return self._call("stats")

    def count(self, kind: str, status: int | None = None) -> int:
        by_status = self.stats()["counts"].get(kind, {})
        return sum(by_status.values()) if status is None else by_status.get(str(status), 0)

    def reset_stats(self) -> None:
        self._call("reset", {})

    def configure(self, **knobs: Any) -> None:
        self._call("config", knobs)
