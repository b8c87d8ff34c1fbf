"""HTTP front of the Earth Engine emulator: the REST routes the real ``ee`` client calls.

Routes (any ``v1``/``v1alpha``/``v1beta`` prefix): ``GET /$discovery/rest``,
``GET /v1/projects/{p}/algorithms``, ``GET /v1/projects/{p}/assets/{id}`` (and
``{id}:listAssets``), ``POST /v1/projects/{p}/value:compute``,
``POST /v1/projects/{p}/image:computePixels``, plus control routes under ``/_emulator/``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import random
import re
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from emulators.earthengine import pixels
from emulators.earthengine.catalog import Catalog
from emulators.earthengine.evaluator import EvaluationError, Evaluator, to_info

LIMITED_KINDS = ("computePixels", "compute")  # the kinds that count against max_in_flight
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_FAULT_MESSAGES = {
    429: "Quota exceeded (injected by the emulator).",
    500: "An internal error has occurred (injected by the emulator).",
    503: "The service is currently unavailable (injected by the emulator).",
    400: "Invalid request (a hard failure injected by the emulator).",
}
_ROUTES = [
    ("GET", re.compile(r"/\$discovery/rest"), "discovery"),
    ("GET", re.compile(r"/v1\w*/projects/([^/]+)/algorithms"), "algorithms"),
    ("GET", re.compile(r"/v1\w*/projects/([^/]+)/assets/(.+):listAssets"), "listAssets"),
    ("GET", re.compile(r"/v1\w*/projects/([^/]+)/assets/(.+)"), "getAsset"),
    ("POST", re.compile(r"/v1\w*/projects/([^/]+)/value:compute"), "compute"),
    ("POST", re.compile(r"/v1\w*/projects/([^/]+)/image:computePixels"), "computePixels"),
]


@dataclasses.dataclass
class RequestRecord:
    method: str
    path: str
    kind: str
    body: Any
    status: int
    started: float
    finished: float
    bytes_out: int
    delay_s: float = 0.0  # the latency the emulator slept for this request (base + size term)


@dataclasses.dataclass
class _Reply:
    status: int
    payload: bytes
    content_type: str = "application/json"
    truncate: bool = False
    delay_s: float = 0.0


def _json_reply(obj: Any, status: int = 200) -> _Reply:
    return _Reply(status, json.dumps(obj).encode())


def error_reply(status: int, message: str) -> _Reply:
    """A Google API error body, which googleapiclient turns into HttpError(reason=message)."""
    return _json_reply(
        {
            "error": {
                "code": status,
                "message": message,
                "status": _STATUS_NAMES.get(status, "UNKNOWN"),
            }
        },
        status,
    )


@functools.lru_cache(maxsize=1)
def _ee_test_data_dir() -> str:
    spec = importlib.util.find_spec("ee")  # locate the wheel's files without importing the client
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "earthengine-api is not installed; the emulator serves files from its wheel"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "tests")


@functools.lru_cache(maxsize=1)
def _algorithms_bytes() -> bytes:
    with open(os.path.join(_ee_test_data_dir(), "algorithms.json"), "rb") as fh:
        return fh.read()


def discovery_document(base_url: str) -> bytes:
    """The wheel's discovery document, pointed at the emulator and at the v1 paths."""
    with open(
        os.path.join(_ee_test_data_dir(), "cloud_api_discovery_document.json"), encoding="utf-8"
    ) as fh:
        text = fh.read().replace('"v1alpha/', '"v1/')
    doc = json.loads(text)
    doc.update(rootUrl=base_url + "/", baseUrl=base_url + "/", version="v1", id="earthengine:v1")
    # The wheel's 2020 document predates listAssets' filter/view parameters, which listImages sends.
    projects = doc["resources"]["projects"]
    for method in (
        projects["methods"]["listAssets"],
        projects["resources"]["assets"]["methods"]["listAssets"],
    ):
        for name in ("filter", "view"):
            method["parameters"].setdefault(
                name, {"description": "", "location": "query", "type": "string"}
            )
    return json.dumps(doc).encode()


class EarthEngineEmulator:
    """An Earth Engine REST service on 127.0.0.1 for the real ``ee`` client and ``xee``."""

    def __init__(
        self,
        max_in_flight: int = 40,
        latency_s: float = 0.0,
        latency_per_mb_s: float = 0.0,
        error_rates: dict[str, float] | None = None,
        truncate_rate: float = 0.0,
        seed: int = 0,
        max_request_bytes: int = pixels.DEFAULT_MAX_REQUEST_BYTES,
        fault_kinds: Sequence[str] = ("computePixels",),
        port: int = 0,
        host: str = "127.0.0.1",
        record_requests: bool = True,
    ):
        self.catalog = Catalog()
        self.host, self.port = host, port
        self.record_requests = record_requests
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.max_in_flight = max_in_flight
        self.latency_s = latency_s  # base latency of every computePixels/compute request
        # + this many seconds per MB (1e6 bytes) of a successful computePixels reply: a request that
        # carries more pixels takes longer to compute and send (docs/earthengine-emulator.md, "Latency")
        self.latency_per_mb_s = latency_per_mb_s
        self.error_rates: dict[str, float] = {"429": 0.0, "500": 0.0, "503": 0.0}
        self.error_rates.update({str(k): float(v) for k, v in (error_rates or {}).items()})
        self.truncate_rate = truncate_rate
        self.max_request_bytes = max_request_bytes
        self.fault_kinds = tuple(fault_kinds)
        self.fail_once_after: int | None = (
            None  # answer the request after this many with a (non-retryable) 400, once
        )
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self.generation = (
            0  # bumped by reset_stats(); requests count in the generation they arrived in
        )
        self.reset_stats()

    # ---- catalog ----
    def add_image(
        self,
        collection: str | None,
        image_id: str,
        data: np.ndarray,
        band_names: Sequence[str],
        crs: str,
        transform: Sequence[float],
        start: Any = None,
        end: Any = None,
        properties: dict[str, Any] | None = None,
        data_type: str | None = None,
        nodata: float | None = None,
    ) -> None:
        """Registers an image (data: (bands, H, W); float NaN = masked; data_type overrides EE's type)."""
        self.catalog.add_image(
            collection=collection,
            image_id=image_id,
            data=data,
            band_names=band_names,
            crs=crs,
            transform=transform,
            start=start,
            end=end,
            properties=properties,
            data_type=data_type,
            nodata=nodata,
        )

    def add_images(self, images: Sequence[dict[str, Any]]) -> None:
        for kwargs in images:
            self.add_image(**kwargs)

    def add_collection(self, collection_id: str, properties: dict[str, Any] | None = None) -> None:
        self.catalog.add_collection(collection_id, properties)

    def add_collection_alias(self, alias: str, collection_id: str) -> None:
        self.catalog.add_collection_alias(alias, collection_id)

    # ---- knobs and statistics ----
    def configure(self, **knobs: Any) -> None:
        """Changes latency_s, latency_per_mb_s, error_rates, truncate_rate, max_in_flight, max_request_bytes, fault_kinds, seed, fail_once_after."""
        with self._lock:
            for key, value in knobs.items():
                if key == "error_rates":
                    self.error_rates.update({str(k): float(v) for k, v in value.items()})
                elif key == "seed":
                    self._rng = random.Random(value)
                elif key == "fault_kinds":
                    self.fault_kinds = tuple(value)
                elif key in (
                    "latency_s",
                    "latency_per_mb_s",
                    "truncate_rate",
                    "max_in_flight",
                    "max_request_bytes",
                    "fail_once_after",
                ):
                    setattr(self, key, value)
                else:
                    raise ValueError(f"unknown emulator setting {key!r}")

    def reset_stats(self) -> None:
        """Forgets requests so far; requests still in flight will not be counted either."""
        with self._lock:
            self.generation += 1
            self.requests: list[RequestRecord] = []
            self._counts: dict[str, dict[int, int]] = {}
            self._bytes_out = 0
            self._delay_s = 0.0
            self._by_kind: dict[str, list[float]] = {}  # kind -> [bytes out, seconds slept]
            self.max_in_flight_seen = self._in_flight  # live requests keep their slots

    def count(self, kind: str, status: int | None = None) -> int:
        with self._lock:
            by_status = self._counts.get(kind, {})
            return sum(by_status.values()) if status is None else by_status.get(status, 0)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": {k: {str(s): n for s, n in v.items()} for k, v in self._counts.items()},
                "max_in_flight_seen": self.max_in_flight_seen,
                "in_flight": self._in_flight,
                "bytes_out": self._bytes_out,
                "delay_s": self._delay_s,
                "bytes_out_by_kind": {k: int(v[0]) for k, v in self._by_kind.items()},
                "delay_s_by_kind": {k: v[1] for k, v in self._by_kind.items()},
                "requests": sum(sum(v.values()) for v in self._counts.values()),
            }

    # ---- lifecycle ----
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running (use `with emulator:` or start())")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> EarthEngineEmulator:
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.request_queue_size = 256  # a burst of connections must not be refused by the kernel
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="ee-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)  # type: ignore[union-attr]
            self._server = None

    def __enter__(self) -> EarthEngineEmulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- request handling ----
    def _admit(self) -> bool:
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                return False
            self._in_flight += 1
            self.max_in_flight_seen = max(self.max_in_flight_seen, self._in_flight)
            return True

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _draw_fault(self, kind: str) -> int | str | None:
        with self._lock:
            if kind not in self.fault_kinds:
                return None
            if self.fail_once_after is not None:
                self.fail_once_after -= 1
                if self.fail_once_after < 0:
                    self.fail_once_after = None
                    return 400
            draw = self._rng.random()
            for code in ("429", "500", "503"):
                draw -= self.error_rates.get(code, 0.0)
                if draw < 0:
                    return int(code)
            return "truncate" if draw < self.truncate_rate else None

    def _record(self, record: RequestRecord, generation: int) -> None:
        with self._lock:
            if generation != self.generation:
                return  # arrived before the last reset_stats()
            by_status = self._counts.setdefault(record.kind, {})
            by_status[record.status] = by_status.get(record.status, 0) + 1
            self._bytes_out += record.bytes_out
            self._delay_s += record.delay_s
            totals = self._by_kind.setdefault(record.kind, [0, 0.0])
            totals[0] += record.bytes_out
            totals[1] += record.delay_s
            if self.record_requests:
                self.requests.append(record)

    def handle(self, method: str, target: str, raw_body: bytes) -> tuple[_Reply, str, Any]:
        """Answers one request: returns the reply, its kind and the parsed body."""
        parts = urlsplit(target)
        path, query = unquote(parts.path), parse_qs(parts.query)
        if path.startswith("/_emulator/"):
            return self._control(method, path, raw_body), "control", None
        route = next(
            (
                (match, kind)
                for route_method, pattern, kind in _ROUTES
                if route_method == method and (match := pattern.fullmatch(path))
            ),
            None,
        )
        if route is None:
            return (
                error_reply(404, f"The emulator has no route for {method} {path}."),
                "other",
                None,
            )
        match, kind = route
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            return error_reply(400, "Request body is not valid JSON."), kind, None
        if kind not in LIMITED_KINDS:
            return self._answer(kind, match, query, body), kind, body
        if not self._admit():
            return error_reply(429, "Too many concurrent requests."), kind, body
        try:
            fault = self._draw_fault(kind)
            if isinstance(fault, int):
                reply = error_reply(fault, _FAULT_MESSAGES[fault])
            else:
                reply = self._answer(kind, match, query, body)
                reply.truncate = fault == "truncate" and reply.status == 200
            # Slept after answering (the size term needs the reply's size); the slot stays taken meanwhile.
            reply.delay_s = self.latency_s
            if kind == "computePixels" and reply.status == 200:
                reply.delay_s += self.latency_per_mb_s * len(reply.payload) / 1e6
            if reply.delay_s:
                time.sleep(reply.delay_s)
            return reply, kind, body
        finally:
            self._release()

    def _answer(self, kind: str, match: re.Match, query: dict[str, list[str]], body: Any) -> _Reply:
        try:
            if kind == "discovery":
                return _Reply(200, discovery_document(self.url))
            if kind == "algorithms":
                return _Reply(200, _algorithms_bytes())
            if kind == "getAsset":
                asset_id = f"projects/{match.group(1)}/assets/{match.group(2)}"
                asset = self.catalog.asset(asset_id)
                if asset is None:
                    return error_reply(
                        404,
                        f"Asset '{match.group(2)}' not found "
                        "(does not exist or caller does not have access).",
                    )
                return _json_reply(asset)
            if kind == "listAssets":
                return self._list_assets(
                    f"projects/{match.group(1)}/assets/{match.group(2)}", query
                )
            if kind == "compute":
                expression = (body or {}).get("expression")
                return _json_reply(
                    {"result": to_info(Evaluator(self.catalog).evaluate(expression))}
                )
            payload, content_type = pixels.compute_pixels(
                self.catalog, body, self.max_request_bytes
            )
            return _Reply(200, payload, content_type)
        except EvaluationError as exc:
            return error_reply(400, str(exc))
        except Exception as exc:  # pylint: disable=broad-except  (a bug must reach the client as a 500)
            traceback.print_exc(file=sys.stderr)
            return error_reply(500, f"Emulator error: {type(exc).__name__}: {exc}")

    def _list_assets(self, parent: str, query: dict[str, list[str]]) -> _Reply:
        try:
            assets = self.catalog.list_images(parent, query.get("filter", [""])[0])
        except KeyError:
            return error_reply(
                404, f"Asset '{parent}' not found (does not exist or caller does not have access)."
            )
        except ValueError as exc:
            return error_reply(400, str(exc))
        start = int(query.get("pageToken", ["0"])[0] or 0)
        size = int(query.get("pageSize", ["1000"])[0] or 1000)
        out: dict[str, Any] = {"assets": assets[start : start + size]}
        if start + size < len(assets):
            out["nextPageToken"] = str(start + size)
        return _json_reply(out)

    def _control(self, method: str, path: str, raw_body: bytes) -> _Reply:
        if path == "/_emulator/stats" and method == "GET":
            return _json_reply(self.stats())
        if path == "/_emulator/reset" and method == "POST":
            self.reset_stats()
            return _json_reply({})
        if path == "/_emulator/config" and method == "POST":
            try:
                self.configure(**json.loads(raw_body or b"{}"))
            except (ValueError, TypeError) as exc:
                return error_reply(400, str(exc))
            return _json_reply({})
        return error_reply(404, f"Unknown control route {method} {path}.")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = (
        "HTTP/1.1"  # keep-alive: clients reuse connections like with the real service
    )
    disable_nagle_algorithm = (
        True  # headers and body are separate writes; Nagle + delayed ACK = +40 ms each
    )

    def _serve(self) -> None:
        emulator: EarthEngineEmulator = self.server.emulator  # type: ignore[attr-defined]
        started = time.time()
        generation = emulator.generation
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        reply, kind, body = emulator.handle(self.command, self.path, raw_body)
        sent = len(reply.payload) // 2 if reply.truncate else len(reply.payload)
        record = None
        if (
            kind != "control"
        ):  # recorded before replying, so a client never sees a reply not yet counted
            record = RequestRecord(
                self.command,
                urlsplit(self.path).path,
                kind,
                body,
                reply.status,
                started,
                time.time(),
                sent,
                reply.delay_s,
            )
            emulator._record(record, generation)  # pylint: disable=protected-access
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.payload)))
        if reply.truncate:
            self.send_header("Connection", "close")
            self.close_connection = True  # the client sees a body shorter than Content-Length
        self.end_headers()
        try:
            self.wfile.write(memoryview(reply.payload)[:sent])
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        if record is not None:
            record.finished = time.time()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
        pass  # one line per request would flood test output
