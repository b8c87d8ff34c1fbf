"""Loopback servers for tests: a free port, the access token the emulators accept, a server run
in a background thread, and one that answers every GET with the same body (a notebook's host
page, a basemap's tiles)."""

from __future__ import annotations

import http.server
import socket
import threading

FAKE_TOKEN = "efm-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_in_background(httpd):
    """Serve `httpd` (a socketserver) in a daemon thread; -> httpd. `stop(httpd)` ends it."""
    threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return httpd


def stop(httpd) -> None:
    httpd.shutdown()
    httpd.server_close()


class OneBodyServer:
    """`body` (bytes) with `content_type` for every GET, each path asked for logged in `log`;
    `host` names the origin in `origin` ("localhost": a page of another origin than 127.0.0.1)."""

    def __init__(self, body: bytes, content_type: str, host: str = "127.0.0.1"):
        log: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                log.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.log = log
        self.httpd = serve_in_background(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.origin = f"http://{host}:{self.httpd.server_address[1]}"

    def close(self):
        stop(self.httpd)
