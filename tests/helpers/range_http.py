"""A static file server on loopback that honours HTTP Range requests (one range per request).

Python's http.server ignores Range, and fsspec's HTTPFileSystem (like GDAL's /vsicurl/)
needs it to read a COG window by window, as it gets from any object store or CDN.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    requests_seen: list[str]  # set per server: the paths asked for, to check nothing is listed
    bytes_sent: list[
        int
    ]  # set per server: body bytes of each answer, to count what a reader fetched

    def log_message(self, *args):  # quiet
        pass

    before = None  # set per server: called with each request's path first (a test's hook)

    def send_head(self):
        self.requests_seen.append(f"{self.command} {self.path}")
        if self.before is not None:
            self.before(self.path)
        path = self.translate_path(self.path)
        if os.path.isdir(path):  # a bucket does not list its folders: neither do we
            self.send_error(404)
            return None
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if not match or not (match[1] or match[2]):
            return super().send_head()
        try:
            f = open(path, "rb")
        except OSError:
            self.send_error(404)
            return None
        size = os.fstat(f.fileno()).st_size
        if match[1]:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else size - 1, size - 1)
        else:  # a suffix range, `bytes=-N`: the last N bytes (how Zarr reads a shard's index)
            start, end = max(size - int(match[2]), 0), size - 1
        if start >= size:
            f.close()
            self.send_error(416)
            return None
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        f.seek(start)
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            remaining = os.fstat(source.fileno()).st_size - source.tell()
        sent = 0
        while remaining > 0:
            block = source.read(min(remaining, 1 << 16))
            if not block:
                break
            outputfile.write(block)
            remaining -= len(block)
            sent += len(block)
        self.bytes_sent.append(sent)
        self._remaining = None


def serve(directory: str, before=None):
    """(server, base URL): a threaded server for `directory` on a free port of 127.0.0.1;
    `before(path)` is called as each request arrives, on the thread that answers it."""
    seen: list[str] = []
    sent: list[int] = []
    fields = {"requests_seen": seen, "bytes_sent": sent, "before": staticmethod(before)}
    handler = functools.partial(
        type("Handler", (RangeHandler,), fields),
        directory=directory,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests_seen, server.bytes_sent = seen, sent
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
