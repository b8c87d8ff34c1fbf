"""The labelling page's HTTP server: the page (static/, package data) and a small JSON API.

    GET  /                      the page; GET /static/<file> its script, style and the vendored map
                                library (static/vendor/: Leaflet, Leaflet-Geoman; nothing from a CDN)
    GET  /api/info              the store's grid, the classes and their colours, the current points
    GET  /api/tile/<layer>/<z>/<x>/<y>.png[?bands=A01,A16,A09]
                                a Web Mercator tile (label_page/tiles.py): layer store (false
                                colour), preview (k-NN), uncertainty, image (--image); 204: nothing
    POST /api/update            {points, polygons} -> the page's state after a change: polygons
                                sampled, the k-NN fitted; {rev, k, polygons: [{id, pixels, ...}]}
    POST /api/locate            {lonlat} -> the store pixel under a place and its centre
    POST /api/suggest           {window, n} -> the n most uncertain pixels of a window, spread out
    POST /api/cv                {} -> spatial block cross-validation of the points (guide.py)
    POST /api/classes           {name} -> add a class
    POST /api/save              {points, polygons} -> write the GeoJSON output
    GET  /api/image, POST /api/preview
                                a window as PNG, the k-NN of a window (before the map: for scripts)

Bound to 127.0.0.1 only: the page can write a file, so it is not offered to the network. It
answers only its own page (docs/label.md, "Security"): `Host` must be 127.0.0.1:PORT or
localhost:PORT (DNS rebinding), `Origin` when sent must be the page's, `Sec-Fetch-Site:
cross-site` is refused, every /api/ call carries the run's secret token (`X-EFM-Token`, put into
the page when it is served), POST bodies are `application/json` of a declared length up to
MAX_BODY_BYTES, and every field is checked for type and range before anything runs: a bad request
is a 4xx with {"error": "<field>: <what>"}, never a 500. The page loads images from one other
place only, the --basemap the user named (its origin in the Content-Security-Policy's img-src).
It is never framed, except when efm.label serves it in a notebook (`framable`): then a page of
this machine (Jupyter on localhost / 127.0.0.1) may show it in an IFrame; the API's checks stay.
"""

from __future__ import annotations

import hmac
import http.server
import importlib.resources
import json
import logging
import re
import secrets
import socket
import urllib.parse

from label_page import points as pointlib
from label_page.session import Session, window_dict
from label_page.validate import (  # noqa: F401  (the API's names, as before the split)
    MAX_BODY_BYTES,
    BadRequest,
    parse_class,
    parse_image_query,
    parse_json,
    parse_preview,
    parse_query,
    parse_save,
    parse_tile_path,
)
from label_page.view import ZoomIn

TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css", "png": "image/png"}
STATIC = {
    "index.html",
    "label.js",
    "layers.js",
    "label.css",
    "vendor/leaflet.js",
    "vendor/leaflet.css",
    "vendor/leaflet-geoman.min.js",
    "vendor/leaflet-geoman.css",
    "vendor/images/layers.png",
    "vendor/images/layers-2x.png",
}
TOKEN_HEADER = "X-EFM-Token"
TOKEN_SLOT = b"{{EFM_TOKEN}}"  # in static/index.html: replaced by the run's token when served
CSP = (
    "default-src 'self'; img-src 'self' data: blob:{basemap}; frame-ancestors {ancestors}; "
    "base-uri 'none'; form-action 'none'"
)
# efm.label in a notebook: the page inside an IFrame of a notebook served from this machine (Jupyter
# on localhost / 127.0.0.1, any port); no other page may frame it (clickjacking)
NOTEBOOK_ANCESTORS = (
    "'self' http://127.0.0.1:* http://localhost:* https://127.0.0.1:* https://localhost:*"
)
DRAIN_BYTES, DRAIN_SECONDS = 1 << 20, 2.0  # an unread body, read and dropped after a refusal
log = logging.getLogger(__name__)


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
        self.send_header("Content-Security-Policy", self.server.csp)
        if not self.server.framable:  # else the CSP's frame-ancestors decides (loopback pages)
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
        dest = (self.headers.get("Sec-Fetch-Dest") or "").strip().lower()
        framed = self.server.framable and not api and dest == "iframe"  # the notebook's IFrame
        if (site == "cross-site" and not framed) or (api and site == "same-site"):
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
        if url.path.startswith("/api/tile/"):
            return self._guard(lambda: self._tile(url.path, url.query))
        self._json(404, {"error": f"no such page: {url.path[:200]}"})

    def do_POST(self):
        routes = {
            "/api/preview": self.session.preview,
            "/api/update": self.session.update,
            "/api/locate": self.session.locate,
            "/api/suggest": self.session.suggest,
            "/api/cv": self.session.cv,
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
        kind = TYPES[name.rsplit(".", 1)[1]]
        self._send(200, data, kind + ("" if kind == "image/png" else "; charset=utf-8"))

    def _info(self, query: str) -> None:
        parse_query(query)  # none expected
        self._json(200, self.session.info())

    def _bands(self, names: list[str] | None) -> list[int] | None:
        if names is None:
            return None
        known = list(self.session.view.info.bands)
        if any(n not in known for n in names):
            raise BadRequest(f"bands: expected three of the store's bands, got {names!r}")
        return [known.index(n) for n in names]

    def _tile(self, path: str, query: str) -> None:
        layer, z, x, y = parse_tile_path(path)
        q = parse_query(query, (), ("bands", "v"))
        names = q["bands"].split(",") if q.get("bands") else None
        if names is not None and (len(names) != 3 or any(len(b) > 64 for b in names)):
            raise BadRequest(f"bands: expected three band names, got {q['bands'][:80]!r}")
        data = self.session.tile(layer, z, x, y, self._bands(names))
        if data is None:
            return self._send(204, b"", "image/png")
        self._send(200, data, "image/png")

    def _image(self, query: str) -> None:
        window, names = parse_image_query(query)
        w = self.session.window(window)
        bands = self._bands(names)
        self._send(
            200,
            self.session.view.png(w, bands),
            "image/png",
            {"X-EFM-Window": json.dumps(window_dict(w))},
        )


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    token: str  # this run's secret: in the page, and required on every /api/ call
    csp: str  # the Content-Security-Policy of every answer
    framable: bool = False  # the page may be shown in an IFrame of a loopback page (efm.label)


def make_server(
    session: Session,
    port: int,
    host: str = "127.0.0.1",
    basemap_origin: str | None = None,
    framable: bool = False,
) -> Server:
    """basemap_origin: e.g. https://*.tile.example.org, the one other place the page's images may
    come from (imagery.basemap_origin of --basemap). framable: efm.label's page, shown in an IFrame
    of a notebook served from this machine (NOTEBOOK_ANCESTORS); `efm label`'s is never framed."""
    handler = type("LabelHandler", (Handler,), {"session": session})
    server = Server((host, port), handler)
    server.token = secrets.token_urlsafe(32)
    server.framable = framable
    server.csp = CSP.format(
        basemap=f" {basemap_origin}" if basemap_origin else "",
        ancestors=NOTEBOOK_ANCESTORS if framable else "'none'",
    )
    return server
