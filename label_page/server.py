"""The labelling page's HTTP server: the page (static/, package data) and a small JSON API.

    GET  /                      the page; GET /static/<file> its script and style (nothing from a CDN)
    GET  /api/info              the store's grid, the classes and their colours, the current points
    GET  /api/image?row0&col0&rows&cols&step[&bands=A01,A16,A09]
                                a window as RGBA PNG (PCA false colour without `bands`); the window
                                actually read (clamped, stride raised to the cap) in X-EFM-Window
    POST /api/preview           {window, points} -> the k-NN preview of the window (class indices,
                                base64 uint8, 255 = no data); the points become the session's
    POST /api/classes           {name} -> add a class
    POST /api/save              {points} -> write the GeoJSON output

Bound to 127.0.0.1 only: the page can write a file, so it is not offered to the network. It
answers only its own page (docs/label.md, "Security"): `Host` must be 127.0.0.1:PORT or
localhost:PORT (DNS rebinding), `Origin` when sent must be the page's, `Sec-Fetch-Site:
cross-site` is refused, every /api/ call carries the run's secret token (`X-EFM-Token`, put into
the page when it is served), POST bodies are `application/json` of a declared length up to
MAX_BODY_BYTES, and every field is checked for type and range before anything runs: a bad request
is a 4xx with {"error": "<field>: <what>"}, never a 500.
"""

from __future__ import annotations

import base64
import hmac
import http.server
import importlib.resources
import json
import logging
import re
import secrets
import socket
import threading
import urllib.parse

from label_page import points as pointlib
from label_page.view import StoreView, ZoomIn
from transforms.storage import outputs

STATIC = {"index.html": "text/html", "label.js": "text/javascript", "label.css": "text/css"}
TOKEN_HEADER = "X-EFM-Token"
TOKEN_SLOT = b"{{EFM_TOKEN}}"  # in static/index.html: replaced by the run's token when served
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
# The largest request is a preview or Save carrying every point. A point as the page sends it
# (JSON.stringify: no spaces, UTF-8) is at most
#   {"id":"<32>","label":"<100 chars x 4 bytes>","row":<10 digits>,"col":<10 digits>},
# = 7 + 32 + 11 + 400 + 7 + 10 + 7 + 10 + 2 = 486 bytes; MAX_POINTS (50,000) of them are 24.3 MB,
# under 24 MiB = 25.17 MB with the window to spare (tested). A typical point ("c12", "forest") is
# about 60 bytes: a 50,000-point Save is some 3 MB.
MAX_BODY_BYTES = 24 * 1024 * 1024
MAX_COORD = 2**31 - 1  # rows, columns, window offsets and sizes
MAX_STEP = 2**20
MAX_CLASSES = 250  # the preview stores a class per byte (255 = no data)
ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
QUERY_INT = re.compile(r"-?[0-9]{1,10}")
DRAIN_BYTES, DRAIN_SECONDS = 1 << 20, 2.0  # an unread body, read and dropped after a refusal
log = logging.getLogger(__name__)


class BadRequest(ValueError):
    pass


# ---------------------------------------------------------------- typed validation (pure)


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _object(value, field: str, required: tuple, optional: tuple = ()) -> dict:
    if type(value) is not dict:
        raise BadRequest(f"{field}: expected an object, got {_kind(value)}")
    for key in value:
        if key not in required and key not in optional:
            known = ", ".join(required + optional)
            raise BadRequest(f"{field}: unknown key {str(key)[:40]!r} (known: {known})")
    for key in required:
        if key not in value:
            raise BadRequest(f"{_join(field, key)}: missing")
    return value


def _join(field: str, key: str) -> str:
    return key if field == "body" else f"{field}.{key}"


def _int(value, field: str, lo: int, hi: int) -> int:
    if type(value) is not int:  # bool is an int subclass: refused here too
        raise BadRequest(f"{field}: expected an integer, got {_kind(value)}")
    if not lo <= value <= hi:
        shown = (
            str(value) if abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
        )
        raise BadRequest(f"{field}: must be {lo}..{hi}, got {shown}")
    return value


def _name(value, field: str) -> str:
    if type(value) is not str:
        raise BadRequest(f"{field}: expected a string, got {_kind(value)}")
    problem = pointlib.name_problem(value)
    if problem:
        raise BadRequest(f"{field}: {problem}")
    return value


WINDOW_KEYS = ("row0", "col0", "rows", "cols", "step")
WINDOW_RANGES = {
    "row0": (-MAX_COORD, MAX_COORD),
    "col0": (-MAX_COORD, MAX_COORD),
    "rows": (1, MAX_COORD),
    "cols": (1, MAX_COORD),
    "step": (1, MAX_STEP),
}


def parse_window(value, field: str = "window") -> tuple[int, int, int, int, int]:
    """{row0, col0, rows, cols, step} -> ints, each checked; raises BadRequest naming the field."""
    _object(value, field, WINDOW_KEYS)
    return tuple(_int(value[k], f"{field}.{k}", *WINDOW_RANGES[k]) for k in WINDOW_KEYS)


def parse_points(value, field: str = "points") -> list[tuple[str, str, int | None, int | None]]:
    """The page's points -> [(id, label, row, col)], types and ranges checked, ids unique; whether
    the label is a class and the pixel in the store is the session's check."""
    if type(value) is not list:
        raise BadRequest(f"{field}: expected a list, got {_kind(value)}")
    if len(value) > pointlib.MAX_POINTS:
        raise BadRequest(f"{field}: {len(value):,} points, {pointlib.MAX_POINTS:,} at most")
    out, seen = [], set()
    for i, item in enumerate(value):
        at = f"{field}[{i}]"
        _object(item, at, ("id", "label", "row", "col"))
        pid = item["id"]
        if type(pid) is not str or not ID.fullmatch(pid):
            raise BadRequest(
                f"{at}.id: expected 1-32 letters, digits, '_' or '-', got {_kind(pid)}"
                + (f" {pid[:40]!r}" if type(pid) is str else "")
            )
        if pid in seen:
            raise BadRequest(f"{at}.id: {pid!r} is given twice")
        seen.add(pid)
        label = _name(item["label"], f"{at}.label")
        rc = [
            None if item[k] is None else _int(item[k], f"{at}.{k}", 0, MAX_COORD)
            for k in ("row", "col")
        ]
        if (rc[0] is None) != (rc[1] is None):
            raise BadRequest(f"{at}: row and col are both numbers or both null")
        out.append((pid, label, rc[0], rc[1]))
    return out


def parse_preview(body) -> tuple[tuple, list]:
    _object(body, "body", ("window", "points"))
    return parse_window(body["window"]), parse_points(body["points"])


def parse_save(body) -> list:
    _object(body, "body", ("points",))
    return parse_points(body["points"])


def parse_class(body) -> str:
    _object(body, "body", ("name",))
    name = _name(body["name"], "name").strip()
    if not name or "," in name:
        raise BadRequest("name: a class needs a name without commas")
    return name


def parse_query(query: str, required: tuple = (), optional: tuple = ()) -> dict:
    """A query string with exactly these keys, each once."""
    try:
        pairs = urllib.parse.parse_qsl(
            query, keep_blank_values=True, max_num_fields=len(required) + len(optional) + 1
        )
    except ValueError:
        raise BadRequest("query: too many parameters") from None
    out = {}
    for key, value in pairs:
        if key not in required and key not in optional:
            raise BadRequest(f"query: unknown parameter {key[:40]!r}")
        if key in out:
            raise BadRequest(f"{key}: given twice")
        out[key] = value
    for key in required:
        if key not in out:
            raise BadRequest(f"{key}: missing")
    return out


def parse_image_query(query: str) -> tuple[tuple, list[str] | None]:
    q = parse_query(query, WINDOW_KEYS, ("bands",))
    for key in WINDOW_KEYS:
        if not QUERY_INT.fullmatch(q[key]):
            raise BadRequest(f"{key}: expected an integer, got {q[key][:40]!r}")
    window = parse_window({k: int(q[k]) for k in WINDOW_KEYS}, "query")
    bands = q["bands"].split(",") if q.get("bands") else None
    if bands is not None and (len(bands) != 3 or any(len(b) > 64 for b in bands)):
        raise BadRequest(f"bands: expected three band names, got {q['bands'][:80]!r}")
    return window, bands


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes):
    """A request body -> its JSON value (strict UTF-8; NaN, Infinity and deep nesting refused)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest("body: nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"body: not JSON: {str(exc)[:200]}") from None


class Session:
    """What one `efm label` run holds: the view, the classes, the points the page last sent."""

    def __init__(
        self,
        view: StoreView,
        classes: list[str],
        loaded: list[pointlib.Point],
        output: str,
        *,
        overwrite: bool,
        rgb: list[str],
        meta: dict,
        colours: dict | None = None,
    ):
        from transforms.products.export import class_colors

        self.view, self.classes, self.output, self.overwrite, self.rgb, self.meta = (
            view,
            list(classes),
            output,
            overwrite,
            rgb,
            meta,
        )
        self._palette = class_colors
        self.chosen_colours = dict(colours or {})  # --colors: label -> "#rrggbb"
        self.loaded = {p.id: p for p in loaded}
        self.points = list(loaded)
        self.saved = None  # points count of the last save
        self.wrote = False  # this session wrote the output (so later saves may replace it)
        self.lock = threading.Lock()

    def colours(self) -> list[str]:
        palette = [
            "#{:02x}{:02x}{:02x}".format(*rgb)
            for rgb in self._palette(list(range(len(self.classes)))).values()
        ]
        return [
            self.chosen_colours.get(name, colour) for name, colour in zip(self.classes, palette)
        ]

    def info(self) -> dict:
        i = self.view.info
        return {
            "store": i.path,
            "year": self.view.year,
            "years": list(i.years),
            "width": i.width,
            "height": i.height,
            "crs": i.crs,
            "transform": list(i.transform),
            "chunk_rows": i.chunk_rows,
            "chunk_cols": i.chunk_cols,
            "bands": list(i.bands),
            "rgb": self.rgb,
            "output": self.output,
            "classes": [{"name": n, "color": c} for n, c in zip(self.classes, self.colours())],
            "points": [
                {"id": p.id, "label": p.label, "row": p.row, "col": p.col} for p in self.points
            ],
            "max_points": pointlib.MAX_POINTS,
            "max_decoded_bytes": self.view.max_decoded_bytes,
            "chunk_bytes": self.view.chunk_bytes,
        }

    def to_points(self, items: list) -> list[pointlib.Point]:
        """parse_points' tuples -> Points: labels among the classes, pixels in the store."""
        out = []
        for i, (pid, label, row, col) in enumerate(items):
            if label not in self.classes:
                raise BadRequest(
                    f"points[{i}].label: {label[:40]!r} is not a class ({', '.join(self.classes)[:200]})"
                )
            if pid in self.loaded and self.loaded[pid].label == label:
                out.append(self.loaded[pid])  # as read: its own coordinates are written back
                continue
            if row is None:
                raise BadRequest(f"points[{i}]: a point placed on the page needs a row and a col")
            if not (row < self.view.info.height and col < self.view.info.width):
                raise BadRequest(
                    f"points[{i}]: ({row}, {col}) is outside the store "
                    f"({self.view.info.height} x {self.view.info.width} px)"
                )
            out.append(pointlib.Point(pid, label, row, col))
        return out

    def window(self, window: tuple):
        return self.view.clamp(*window)

    def preview(self, body: dict) -> dict:
        window, items = parse_preview(body)
        w = self.window(window)
        with self.lock:
            self.points = self.to_points(items)
            pts = [
                (p.row, p.col, self.classes.index(p.label))
                for p in self.points
                if p.row is not None
            ]
        result = self.view.preview(w, pts)
        answer = {"window": window_dict(result.get("window", w)), "skipped": result["skipped"]}
        if result["classes"] is None:
            return {**answer, "classes": None, "reason": result["reason"]}
        h, wd = result["classes"].shape
        return {
            **answer,
            "height": h,
            "width": wd,
            "k": result["k"],
            "server_ms": round(result["seconds"] * 1000, 1),
            "classes": base64.b64encode(result["classes"].tobytes()).decode("ascii"),
        }

    def add_class(self, body: dict) -> dict:
        name = parse_class(body)
        with self.lock:
            if len(self.classes) >= MAX_CLASSES:
                raise BadRequest(
                    f"name: {MAX_CLASSES} classes at most (the preview stores a class per byte)"
                )
            if name in self.classes:
                raise BadRequest(f"class {name!r} exists already")
            self.classes.append(name)
        return self.info()

    def save(self, body: dict) -> dict:
        with self.lock:
            pts = self.to_points(parse_save(body))
            found = outputs.inspect(self.output, "points")
            if not found.empty and (found.kind != "points" or not (self.wrote or self.overwrite)):
                raise BadRequest(
                    f"{self.output} was changed by someone else since efm label started; nothing written (restart with another --output)"
                )
            pointlib.write(self.output, pointlib.feature_collection(pts, self.view.info, self.meta))
            self.points, self.saved, self.wrote = pts, len(pts), True
        return {"path": self.output, "count": len(pts)}


def window_dict(w) -> dict:
    return {"row0": w.row0, "col0": w.col0, "rows": w.rows, "cols": w.cols, "step": w.step}


class Handler(http.server.BaseHTTPRequestHandler):
    session: Session  # set on the subclass `make_server` builds
    server_version = "efm-label"
    timeout = 30  # seconds a client may stall mid-request (a body announced and never sent)

    def log_message(self, format, *args):  # noqa: A002  (the page polls; keep the terminal quiet)
        log.debug(format, *args)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _guard(self, work) -> None:
        try:
            work()
        except BadRequest as exc:
            self._json(400, {"error": str(exc)})
        except ZoomIn as exc:
            self._json(409, {"error": str(exc)})
        except Exception as exc:  # the page shows the line; the server keeps serving
            log.exception("efm label: request failed")
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    # ------------------------------------------------------------ who may ask
    def _refusal(self, api: bool) -> str | None:
        """Why this request is not from the page (None: it may be). Every request: Host is this
        server's by name (not a rebound DNS name), Origin (when sent) is the page's, the browser
        does not call it cross-site. /api/: also the run's token and not another port's page."""
        port = self.server.server_address[1]
        hosts = [h.strip().lower() for h in self.headers.get_all("Host") or []]
        if len(hosts) != 1 or hosts[0] not in (f"127.0.0.1:{port}", f"localhost:{port}"):
            return f"Host must be 127.0.0.1:{port} or localhost:{port}"
        origins = self.headers.get_all("Origin") or []
        if origins and [o.strip().lower() for o in origins] != [f"http://{hosts[0]}"]:
            return f"Origin {origins[0][:80]!r} is not this page's (http://{hosts[0]})"
        site = (self.headers.get("Sec-Fetch-Site") or "").strip().lower()
        if site == "cross-site" or (api and site == "same-site"):
            return f"Sec-Fetch-Site: {site}: only the page itself may call efm label"
        if api:
            given = self.headers.get_all(TOKEN_HEADER) or []
            want = self.server.token.encode("ascii")
            if len(given) != 1 or not hmac.compare_digest(
                given[0].encode("latin-1", "replace"), want
            ):
                return f"missing or wrong {TOKEN_HEADER}: reload the page efm label printed"
        return None

    def _refuse(self, status: int, message: str, unread: int = 0) -> None:
        """Answer without reading the body; then drop what the client sends (a bounded amount,
        for a bounded time) so that it reads the answer instead of a connection reset."""
        self.close_connection = True
        self._json(status, {"error": message})
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(DRAIN_SECONDS)
            dropped = 0
            while dropped < DRAIN_BYTES:
                piece = self.connection.recv(65536)
                if not piece:
                    break
                dropped += len(piece)
        except OSError:
            pass

    # ------------------------------------------------------------ routes
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        api = url.path.startswith("/api/")
        refused = self._refusal(api)
        if refused:
            return self._json(403, {"error": refused})
        if url.path in ("/", "/index.html"):
            return self._static("index.html")
        if url.path.startswith("/static/"):
            return self._static(url.path[len("/static/") :])
        if url.path == "/api/info":
            return self._guard(lambda: self._info(url.query))
        if url.path == "/api/image":
            return self._guard(lambda: self._image(url.query))
        self._json(404, {"error": f"no such page: {url.path[:200]}"})

    def do_POST(self):
        routes = {
            "/api/preview": self.session.preview,
            "/api/classes": self.session.add_class,
            "/api/save": self.session.save,
        }
        refused = self._refusal(api=True)
        if refused:
            return self._refuse(403, refused)
        route = routes.get(urllib.parse.urlsplit(self.path).path)
        if route is None:
            return self._refuse(404, f"no such endpoint: {self.path[:200]}")
        ctype = self.headers.get_all("Content-Type") or []
        mime, params = (ctype[0].split(";", 1) + [""])[:2] if len(ctype) == 1 else ("", "")
        charset = params.strip().lower().replace(" ", "")
        if mime.strip().lower() != "application/json" or charset not in ("", "charset=utf-8"):
            return self._refuse(
                415, "Content-Type must be application/json (UTF-8): efm label takes JSON only"
            )
        if self.headers.get("Transfer-Encoding"):
            return self._refuse(411, "send the body with a Content-Length, not chunked")
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) != 1 or not re.fullmatch(r"[0-9]+", lengths[0].strip()):
            return self._refuse(411, "a request body needs one Content-Length")
        digits = lengths[0].strip().lstrip("0") or "0"
        size = int(digits) if len(digits) <= 18 else MAX_BODY_BYTES + 1
        if size > MAX_BODY_BYTES:
            return self._refuse(
                413,
                f"body of {digits[:40]} bytes; {MAX_BODY_BYTES} at most "
                f"(what {pointlib.MAX_POINTS} points take)",
            )
        raw = self.rfile.read(size)
        if len(raw) != size:
            return self._refuse(400, f"body: {len(raw)} bytes, not the {size} announced")
        self._guard(lambda: self._json(200, route(parse_json(raw))))

    def _static(self, name: str) -> None:
        if name not in STATIC:
            return self._json(404, {"error": f"no such file: {name[:200]}"})
        data = importlib.resources.files("label_page").joinpath("static", name).read_bytes()
        if name == "index.html":
            if TOKEN_SLOT not in data:
                raise RuntimeError("label_page/static/index.html has no token slot")
            data = data.replace(TOKEN_SLOT, self.server.token.encode("ascii"))
        self._send(200, data, STATIC[name] + "; charset=utf-8")

    def _info(self, query: str) -> None:
        parse_query(query)  # none expected
        self._json(200, self.session.info())

    def _image(self, query: str) -> None:
        window, names = parse_image_query(query)
        w = self.session.window(window)
        bands = None
        if names is not None:
            known = list(self.session.view.info.bands)
            if any(n not in known for n in names):
                raise BadRequest(f"bands: expected three of the store's bands, got {names!r}")
            bands = [known.index(n) for n in names]
        self._send(
            200,
            self.session.view.png(w, bands),
            "image/png",
            {"X-EFM-Window": json.dumps(window_dict(w))},
        )


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    token: str  # this run's secret: in the page, and required on every /api/ call


def make_server(session: Session, port: int, host: str = "127.0.0.1") -> Server:
    handler = type("LabelHandler", (Handler,), {"session": session})
    server = Server((host, port), handler)
    server.token = secrets.token_urlsafe(32)
    return server
