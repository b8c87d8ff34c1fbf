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

Bound to 127.0.0.1 only: the page can write a file, so it is not offered to the network.
"""

from __future__ import annotations

import base64
import http.server
import importlib.resources
import json
import logging
import threading
import urllib.parse

from label_page import points as pointlib
from label_page.view import StoreView, ZoomIn
from transforms.storage import outputs

STATIC = {"index.html": "text/html", "label.js": "text/javascript", "label.css": "text/css"}
log = logging.getLogger(__name__)


class BadRequest(ValueError):
    pass


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
            "max_decoded_bytes": self.view.max_decoded_bytes,
            "chunk_bytes": self.view.chunk_bytes,
        }

    def parse_points(self, items) -> list[pointlib.Point]:
        if not isinstance(items, list):
            raise BadRequest("points must be a list")
        out = []
        for item in items:
            pid, label = str(item.get("id", "")), item.get("label")
            if label not in self.classes:
                raise BadRequest(f"unknown class {label!r}")
            if pid in self.loaded and self.loaded[pid].label == label:
                out.append(self.loaded[pid])  # as read: its own coordinates are written back
                continue
            row, col = int(item["row"]), int(item["col"])
            if not (0 <= row < self.view.info.height and 0 <= col < self.view.info.width):
                raise BadRequest(f"point ({row}, {col}) is outside the store")
            out.append(pointlib.Point(pid, label, row, col))
        return out

    def window(self, query: dict):
        try:
            return self.view.clamp(
                *(int(query[k]) for k in ("row0", "col0", "rows", "cols", "step"))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"bad window: {exc}") from None

    def preview(self, body: dict) -> dict:
        w = self.window(body.get("window") or {})
        with self.lock:
            self.points = self.parse_points(body.get("points", []))
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
        name = str(body.get("name", "")).strip()
        if not name or "," in name:
            raise BadRequest("a class needs a name without commas")
        if len(self.classes) >= 250:
            raise BadRequest("250 classes at most (the preview stores a class per byte)")
        with self.lock:
            if name in self.classes:
                raise BadRequest(f"class {name!r} exists already")
            self.classes.append(name)
        return self.info()

    def save(self, body: dict) -> dict:
        with self.lock:
            pts = self.parse_points(body.get("points", []))
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

    def log_message(self, format, *args):  # noqa: A002  (the page polls; keep the terminal quiet)
        log.debug(format, *args)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
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

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if url.path in ("/", "/index.html"):
            return self._static("index.html")
        if url.path.startswith("/static/"):
            return self._static(url.path[len("/static/") :])
        if url.path == "/api/info":
            return self._guard(lambda: self._json(200, self.session.info()))
        if url.path == "/api/image":
            return self._guard(lambda: self._image(query))
        self._json(404, {"error": f"no such page: {url.path}"})

    def do_POST(self):
        routes = {
            "/api/preview": self.session.preview,
            "/api/classes": self.session.add_class,
            "/api/save": self.session.save,
        }
        route = routes.get(urllib.parse.urlsplit(self.path).path)
        if route is None:
            return self._json(404, {"error": f"no such endpoint: {self.path}"})

        def work():
            try:
                body = json.loads(
                    self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"
                )
            except ValueError as exc:
                raise BadRequest(f"body is not JSON: {exc}") from None
            self._json(200, route(body))

        self._guard(work)

    def _static(self, name: str) -> None:
        if name not in STATIC:
            return self._json(404, {"error": f"no such file: {name}"})
        data = importlib.resources.files("label_page").joinpath("static", name).read_bytes()
        self._send(200, data, STATIC[name] + "; charset=utf-8")

    def _image(self, query: dict) -> None:
        w = self.session.window(query)
        bands = None
        if query.get("bands"):
            names = query["bands"].split(",")
            known = list(self.session.view.info.bands)
            if len(names) != 3 or any(n not in known for n in names):
                raise BadRequest(
                    f"bands must be three of the store's bands, got {query['bands']!r}"
                )
            bands = [known.index(n) for n in names]
        self._send(
            200,
            self.session.view.png(w, bands),
            "image/png",
            {"X-EFM-Window": json.dumps(window_dict(w))},
        )


def make_server(
    session: Session, port: int, host: str = "127.0.0.1"
) -> http.server.ThreadingHTTPServer:
    handler = type("LabelHandler", (Handler,), {"session": session})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
