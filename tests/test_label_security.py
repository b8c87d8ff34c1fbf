"""`efm label` answers only its own page (issue 16): the real server on 127.0.0.1 (port 0), each
forged request sent with urllib (http.client, urllib's transport, where urllib cannot forge it: no
Host, a Content-Length with no body), its status checked, and the saved GeoJSON's bytes unchanged
(no file created when there was none). The page itself: tests/test_label_browser.py."""

from __future__ import annotations

import http.client
import json
import math
import re
import socket
import tracemalloc
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from label_page import points as pointlib
from label_page import server as serverlib
from label_page.view import StoreView
from pipelines import label
from tests.helpers import store_factory
from tests.helpers.local_servers import serve_in_background, stop
from transforms.storage import readers

YEAR = 2021
CLASSES = ["water", "forest"]
GOOD_POINTS = [
    {"id": "c1", "label": "water", "row": 10, "col": 12},
    {"id": "c2", "label": "forest", "row": 200, "col": 100},
]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return store_factory.make_store(
        str(tmp_path_factory.mktemp("label-sec") / "emb.zarr"), years=(YEAR,)
    )


@pytest.fixture(scope="module")
def view(synthetic):
    return StoreView(readers.store_info(synthetic.path), YEAR)


class Served:
    def __init__(self, view, output, classes=CLASSES):
        self.session = serverlib.Session(
            view, list(classes), [], str(output), overwrite=False, rgb=None, meta={}
        )
        self.httpd = serve_in_background(serverlib.make_server(self.session, 0))
        self.port = self.httpd.server_address[1]
        self.token = self.httpd.token
        self.output = output

    def close(self):
        stop(self.httpd)

    def good_headers(self, post: bool = True) -> dict:
        return {"X-EFM-Token": self.token, **({"Content-Type": "application/json"} if post else {})}

    def call(self, path, body: bytes | None = None, headers: dict | None = None, method=None):
        """urllib, as the issue's forgeries: (status, headers, body bytes)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, headers=headers or {}, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as res:
                return res.status, res.headers, res.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def raw(self, method, path, headers: list, body: bytes = b"", timeout=10):
        """http.client with every header given by the test (no Host unless given)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            conn.endheaders(body or None)
            res = conn.getresponse()
            return res.status, res.headers, res.read()
        finally:
            conn.close()


@pytest.fixture
def served(view, tmp_path):
    s = Served(view, tmp_path / "points.geojson")
    yield s
    s.close()


def state(path):
    return path.read_bytes() if path.exists() else None


def legit_save(s: Served) -> bytes:
    status, _, body = s.call(
        "/api/save", json.dumps({"points": GOOD_POINTS}).encode(), s.good_headers()
    )
    assert status == 200 and json.loads(body)["count"] == 2, body
    return s.output.read_bytes()


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


# ---------------------------------------------------------------- forged requests


def forged(s: Served, case: str) -> tuple[dict, bytes]:
    """The headers and body of a forged /api/save that would empty the file."""
    body = b'{"points":[]}'
    h = s.good_headers()
    port = s.port
    if case == "the issue's curl (text/plain, evil Origin, no token)":
        return {"Content-Type": "text/plain", "Origin": "http://evil.example"}, body
    if case == "Host evil.example (DNS rebinding)":
        return {**h, "Host": f"evil.example:{port}"}, body
    if case == "Host of another port":
        return {**h, "Host": f"127.0.0.1:{port + 1 if port < 65535 else 1}"}, body
    if case == "Host without the port":
        return {**h, "Host": "127.0.0.1"}, body
    if case == "Host 0.0.0.0":
        return {**h, "Host": f"0.0.0.0:{port}"}, body
    if case == "evil Origin":
        return {**h, "Origin": "http://evil.example"}, body
    if case == "Origin null":
        return {**h, "Origin": "null"}, body
    if case == "Origin of another port":
        return {**h, "Origin": "http://localhost:1"}, body
    if case == "Origin https":
        return {**h, "Origin": f"https://127.0.0.1:{port}"}, body
    if case == "Sec-Fetch-Site cross-site":
        return {**h, "Sec-Fetch-Site": "cross-site"}, body
    if case == "Sec-Fetch-Site same-site (another localhost port)":
        return {**h, "Sec-Fetch-Site": "same-site"}, body
    if case == "no token":
        return {"Content-Type": "application/json"}, body
    if case == "wrong token":
        return {**h, "X-EFM-Token": "x" * len(s.token)}, body
    if case == "the token minus its last character":
        return {**h, "X-EFM-Token": s.token[:-1]}, body
    if case == "a non-ASCII token":
        return {**h, "X-EFM-Token": "é" * len(s.token)}, body
    if case == "text/plain with the token":
        return {**h, "Content-Type": "text/plain"}, body
    if case == "form-encoded (urllib's default)":
        return {"X-EFM-Token": s.token}, body
    if case == "JSON in latin-1":
        return {**h, "Content-Type": "application/json; charset=latin-1"}, body
    if case == "multipart":
        return {**h, "Content-Type": "multipart/form-data; boundary=x"}, body
    raise AssertionError(case)


FORGED = {
    "the issue's curl (text/plain, evil Origin, no token)": 403,
    "Host evil.example (DNS rebinding)": 403,
    "Host of another port": 403,
    "Host without the port": 403,
    "Host 0.0.0.0": 403,
    "evil Origin": 403,
    "Origin null": 403,
    "Origin of another port": 403,
    "Origin https": 403,
    "Sec-Fetch-Site cross-site": 403,
    "Sec-Fetch-Site same-site (another localhost port)": 403,
    "no token": 403,
    "wrong token": 403,
    "the token minus its last character": 403,
    "a non-ASCII token": 403,
    "text/plain with the token": 415,
    "form-encoded (urllib's default)": 415,
    "JSON in latin-1": 415,
    "multipart": 415,
}


@pytest.mark.parametrize("existing", [False, True], ids=["no-file", "saved-file"])
@pytest.mark.parametrize("case", list(FORGED))
def test_a_forged_save_is_refused_and_the_file_is_unchanged(served, case, existing):
    before = legit_save(served) if existing else None
    headers, body = forged(served, case)
    status, res_headers, answer = served.call("/api/save", body, headers)
    assert status == FORGED[case], answer
    assert error_of(answer)
    assert res_headers["X-Content-Type-Options"] == "nosniff"
    assert state(served.output) == before
    assert served.token.encode() not in answer


def test_the_page_s_own_requests_are_answered_from_both_names(served):
    for name in ("127.0.0.1", "localhost"):
        host = f"{name}:{served.port}"
        origin = {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
        status, _, body = served.call(
            "/api/save",
            json.dumps({"points": GOOD_POINTS[:1]}).encode(),
            {**served.good_headers(), **origin},
        )
        assert status == 200, body
        status, _, body = served.call("/api/info", None, {**served.good_headers(False), **origin})
        assert status == 200 and json.loads(body)["points"][0]["id"] == "c1"
    # JSON with an explicit UTF-8 charset is JSON
    status, _, body = served.call(
        "/api/save",
        b'{"points": []}',
        {**served.good_headers(), "Content-Type": "application/json; charset=UTF-8"},
    )
    assert status == 200 and json.loads(body)["count"] == 0


@pytest.mark.parametrize(
    "path, headers, status",
    [
        ("/", {"Host": "evil.example:{port}"}, 403),
        ("/index.html", {"Host": "evil.example:{port}"}, 403),
        ("/static/label.js", {"Host": "evil.example:{port}"}, 403),
        ("/", {"Sec-Fetch-Site": "cross-site"}, 403),
        ("/api/info", {}, 403),
        ("/api/info", {"X-EFM-Token": "nope"}, 403),
        ("/api/info", {"X-EFM-Token": "{token}", "Host": "evil.example:{port}"}, 403),
        ("/api/info", {"X-EFM-Token": "{token}", "Origin": "http://evil.example"}, 403),
        ("/api/image?row0=0&col0=0&rows=10&cols=10&step=1", {}, 403),
        ("/api/image?row0=0&col0=0&rows=10&cols=10&step=1", {"Sec-Fetch-Site": "cross-site"}, 403),
    ],
)
def test_forged_reads_are_refused_and_tell_nothing(served, path, headers, status):
    headers = {
        k: v.replace("{port}", str(served.port)).replace("{token}", served.token)
        for k, v in headers.items()
    }
    got, res_headers, body = served.call(path, None, headers)
    assert got == status
    assert served.token.encode() not in body  # the page (and its token) is not served
    assert str(served.output).encode() not in body and b"<html" not in body


def test_no_host_header_is_refused(served):
    status, _, body = served.raw(
        "POST",
        "/api/save",
        [("X-EFM-Token", served.token), ("Content-Type", "application/json")],
        b'{"points":[]}',
    )
    assert status == 403 and "Host" in error_of(body)
    assert not served.output.exists()


def test_the_page_carries_a_per_run_token_and_its_security_headers(served, view, tmp_path):
    status, headers, page = served.call("/")
    assert status == 200
    tokens = re.findall(rb'<meta name="efm-token" content="([^"]*)">', page)
    assert tokens == [served.token.encode()] and len(served.token) >= 43  # 32 random bytes
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "img-src 'self' data: blob:" in csp
    assert "frame-ancestors 'none'" in csp and "script-src" not in csp  # no inline script
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    for path in ("/static/label.js", "/static/label.css"):
        status, headers, _ = served.call(path)
        assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    status, headers, _ = served.call(
        "/api/image?row0=0&col0=0&rows=10&cols=10&step=1", None, served.good_headers(False)
    )
    assert status == 200 and headers["Cache-Control"] == "no-store"
    other = Served(view, tmp_path / "other.geojson")
    try:
        assert other.token != served.token
        # one run's token does not open another run's server
        status, _, _ = other.call("/api/info", None, served.good_headers(False))
        assert status == 403
    finally:
        other.close()


# ---------------------------------------------------------------- bodies: length and size


@pytest.mark.parametrize("existing", [False, True], ids=["no-file", "saved-file"])
@pytest.mark.parametrize(
    "length", [serverlib.MAX_BODY_BYTES + 1, 10**12, 10**30], ids=["limit+1", "1TB", "1e30"]
)
def test_an_oversize_content_length_is_refused_before_any_byte_is_read(served, existing, length):
    """The body is never sent: a server that waited for it, or allocated it, would time out here."""
    before = legit_save(served) if existing else None
    tracemalloc.start()
    try:
        status, _, body = served.raw(
            "POST",
            "/api/save",
            [
                ("Host", f"127.0.0.1:{served.port}"),
                ("X-EFM-Token", served.token),
                ("Content-Type", "application/json"),
                ("Content-Length", str(length)),
            ],
            timeout=10,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413 and "at most" in error_of(body)
    assert peak < 4 * 1024 * 1024  # nothing of the announced size was allocated
    assert state(served.output) == before


@pytest.mark.parametrize(
    "headers, status",
    [
        ([], 411),  # no Content-Length
        ([("Content-Length", "-1")], 411),
        ([("Content-Length", "12abc")], 411),
        ([("Content-Length", "13"), ("Content-Length", "13")], 411),
        ([("Transfer-Encoding", "chunked")], 411),
    ],
)
def test_a_body_without_one_plain_content_length_is_refused(served, headers, status):
    got, _, body = served.raw(
        "POST",
        "/api/save",
        [
            ("Host", f"127.0.0.1:{served.port}"),
            ("X-EFM-Token", served.token),
            ("Content-Type", "application/json"),
            *headers,
        ],
    )
    assert got == status, body
    assert not served.output.exists()


def test_a_body_past_the_limit_is_refused_and_one_at_the_limit_is_read(served, monkeypatch):
    monkeypatch.setattr(serverlib, "MAX_BODY_BYTES", 4096)
    small = json.dumps({"points": GOOD_POINTS}).encode()
    at_limit = small + b" " * (4096 - len(small))
    status, _, body = served.call("/api/save", at_limit + b" ", served.good_headers())
    assert status == 413 and "4096" in error_of(body)
    assert not served.output.exists()
    status, _, body = served.call("/api/save", at_limit, served.good_headers())
    assert status == 200 and json.loads(body)["count"] == 2


def test_a_body_shorter_than_announced_is_refused(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST /api/save HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n"
                f"X-EFM-Token: {served.token}\r\nContent-Type: application/json\r\n"
                "Content-Length: 100\r\n\r\n"
            ).encode()
            + b'{"points":[]}'
        )
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.0 400") and b"not the 100 announced" in answer
    assert not served.output.exists()


def test_the_largest_save_the_limit_is_sized_for_fits_and_such_points_are_saved(view, tmp_path):
    """MAX_POINTS points with the longest ids and class names (4-byte UTF-8 characters) and the
    widest window, as the page's JSON.stringify sends them (compact, UTF-8), fit under
    MAX_BODY_BYTES; a tenth of them goes through the server into the file."""
    longest = "\U0001d4e6" * pointlib.MAX_NAME_CHARS  # printable, 4 bytes in UTF-8
    points = [
        {"id": f"c{i:031d}", "label": longest, "row": 2**31 - 1, "col": 2**31 - 1}
        for i in range(pointlib.MAX_POINTS)
    ]
    window = {"row0": -(2**31 - 1), "col0": -(2**31 - 1), "rows": 2**31 - 1, "cols": 2**31 - 1}
    body = json.dumps(
        {"window": {**window, "step": 2**20}, "points": points},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    assert len(body) <= serverlib.MAX_BODY_BYTES
    n = pointlib.MAX_POINTS // 10
    for p in points[:n]:
        p["row"], p["col"] = 299, 259
    save = json.dumps({"points": points[:n]}, ensure_ascii=False, separators=(",", ":")).encode()
    s = Served(view, tmp_path / "big.geojson", classes=[longest, "water"])
    try:
        status, _, answer = s.call("/api/save", save, s.good_headers())
    finally:
        s.close()
    assert status == 200 and json.loads(answer)["count"] == n
    saved = json.loads(s.output.read_text())["features"]
    assert len(saved) == n and saved[-1]["properties"]["label"] == longest


# ---------------------------------------------------------------- typed validation


def _point(**change):
    p = {"id": "c9", "label": "water", "row": 3, "col": 4}
    for k, v in change.items():
        if v is KeyError:
            del p[k]
        else:
            p[k] = v
    return p


def _save(*points) -> bytes:
    return json.dumps({"points": list(points)}).encode()


WINDOW = {"row0": 0, "col0": 0, "rows": 50, "cols": 50, "step": 1}
MALFORMED_SAVE = [
    ("a list, not an object", b"[]", "body: expected an object"),
    ("a string", b'"points"', "body: expected an object"),
    ("null", b"null", "body: expected an object"),
    ("empty body", b"", "body: not JSON"),
    ("no points", b"{}", "points: missing"),
    ("an unknown key", b'{"points": [], "path": "/etc/passwd"}', "body: unknown key 'path'"),
    ("points an object", b'{"points": {}}', "points: expected a list"),
    ("points a string", b'{"points": "c1"}', "points: expected a list"),
    ("a point a list", b'{"points": [[1, 2]]}', "points[0]: expected an object"),
    ("a point null", b'{"points": [null]}', "points[0]: expected an object"),
    ("missing row", _save(_point(row=KeyError)), "points[0].row: missing"),
    ("missing id", _save(_point(id=KeyError)), "points[0].id: missing"),
    ("row 1e400", b'{"points":[{"id":"c1","label":"water","row":1e400,"col":3}]}', "points[0].row"),
    ("row -1e400", b'{"points":[{"id":"c1","label":"water","row":-1e400,"col":3}]}', "points[0].row"),
    ("row NaN", b'{"points":[{"id":"c1","label":"water","row":NaN,"col":3}]}', "body: not JSON"),
    ("row Infinity", b'{"points":[{"id":"c1","label":"water","row":Infinity,"col":3}]}', "body:"),
    ("row '3'", _save(_point(row="3")), "points[0].row: expected an integer, got a string"),
    ("row true", _save(_point(row=True)), "points[0].row: expected an integer, got true/false"),
    ("row 3.0", _save(_point(row=3.0)), "points[0].row: expected an integer"),
    ("row 3.5", _save(_point(row=3.5)), "points[0].row: expected an integer"),
    ("row -1", _save(_point(row=-1)), "points[0].row: must be 0.."),
    ("row 2**31", _save(_point(row=2**31)), "points[0].row: must be 0.."),
    ("row 10**40", _save(_point(row=10**40)), "points[0].row: must be 0.."),
    ("row of 4,400 digits", b'{"points":[{"id":"c","label":"water","row":' + b"9" * 4400 + b',"col":1}]}', "body: not JSON"),
    ("col a list", _save(_point(col=[1])), "points[0].col: expected an integer, got a list"),
    ("row null, col a number", _save(_point(row=None)), "points[0]: row and col"),
    ("both null (a new point)", _save(_point(row=None, col=None)), "points[0]: a point placed"),
    ("row past the store", _save(_point(row=300)), "points[0]: (300, 4) is outside the store"),
    ("col past the store", _save(_point(col=260)), "points[0]: (3, 260) is outside the store"),
    ("an unknown point key", _save(_point(lon=1.0)), "points[0]: unknown key 'lon'"),
    ("id a number", _save(_point(id=12)), "points[0].id: expected 1-32 letters"),
    ("id empty", _save(_point(id="")), "points[0].id"),
    ("id markup", _save(_point(id="<img src=x>")), "points[0].id"),
    ("id 33 characters", _save(_point(id="c" * 33)), "points[0].id"),
    ("ids twice", _save(_point(), _point(row=5)), "points[1].id: 'c9' is given twice"),
    ("label a number", _save(_point(label=5)), "points[0].label: expected a string"),
    ("label null", _save(_point(label=None)), "points[0].label: expected a string"),
    ("label not a class", _save(_point(label="crops")), "points[0].label: 'crops' is not a class"),
    ("label 10,000 characters", _save(_point(label="w" * 10_000)), "points[0].label: is 10000"),
    ("label a control character", _save(_point(label="wa\x00ter")), "points[0].label: holds a"),
    ("label a lone surrogate", b'{"points":[{"id":"c","label":"\\ud800","row":1,"col":1}]}', "points[0].label"),
    ("nested garbage", _save(_point(id={"a": [[[{"b": None}]]]})), "points[0].id"),
    ("deep nesting", b'{"points":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body: nested too deeply"),
    ("not UTF-8", b'{"points": "\xff\xfe"}', "body: not UTF-8"),
    ("a UTF-8 BOM", b'\xef\xbb\xbf{"points": []}', "body: not JSON"),
    ("two documents", b'{"points": []} {"points": []}', "body: not JSON"),
    ("too many points", _save(*[_point(id=f"p{i}") for i in range(pointlib.MAX_POINTS + 1)]), "points: 50,001 points"),
]  # fmt: skip
MALFORMED_OTHER = [
    ("/api/preview", b'{"points": []}', "window: missing"),
    ("/api/preview", json.dumps({"window": WINDOW}).encode(), "points: missing"),
    ("/api/preview", json.dumps({"window": [0, 0, 1, 1, 1], "points": []}).encode(), "window: expected an object"),
    ("/api/preview", json.dumps({"window": {**WINDOW, "step": 0}, "points": []}).encode(), "window.step: must be 1.."),
    ("/api/preview", json.dumps({"window": {**WINDOW, "rows": "50"}, "points": []}).encode(), "window.rows: expected an integer"),
    ("/api/preview", json.dumps({"window": {**WINDOW, "z": 1}, "points": []}).encode(), "window: unknown key 'z'"),
    ("/api/preview", b'{"window":{"row0":1e400,"col0":0,"rows":5,"cols":5,"step":1},"points":[]}', "window.row0"),
    ("/api/preview", json.dumps({"window": {**WINDOW, "col0": -(2**40)}, "points": []}).encode(), "window.col0: must be"),
    ("/api/preview", json.dumps({"window": WINDOW, "points": [_point(row="1")]}).encode(), "points[0].row"),
    ("/api/classes", b"{}", "name: missing"),
    ("/api/classes", b'{"name": 5}', "name: expected a string"),
    ("/api/classes", b'{"name": ["crops"]}', "name: expected a string"),
    ("/api/classes", b'{"name": "   "}', "name: a class needs a name"),
    ("/api/classes", b'{"name": "a,b"}', "name: a class needs a name without commas"),
    ("/api/classes", b'{"name": "a\\nb"}', "name: holds a control"),
    ("/api/classes", json.dumps({"name": "x" * 101}).encode(), "name: is 101 characters long"),
    ("/api/classes", b'{"name": "water"}', "class 'water' exists already"),
    ("/api/classes", b'{"name": "crops", "color": "red"}', "body: unknown key 'color'"),
]  # fmt: skip
MALFORMED_QUERY = [
    ("row0=0&col0=0&rows=10&cols=10", "step: missing"),
    ("row0=abc&col0=0&rows=10&cols=10&step=1", "row0: expected an integer"),
    ("row0=1e400&col0=0&rows=10&cols=10&step=1", "row0: expected an integer"),
    ("row0=99999999999&col0=0&rows=10&cols=10&step=1", "row0: expected an integer"),
    ("row0=0&col0=0&rows=10&cols=10&step=0", "query.step: must be 1.."),
    ("row0=0&col0=0&rows=10&cols=10&step=1&row0=5", "row0: given twice"),
    ("row0=0&col0=0&rows=10&cols=10&step=1&x=1", "query: unknown parameter 'x'"),
    ("row0=0&col0=0&rows=10&cols=10&step=1&bands=A01", "bands: expected three band names"),
    ("row0=0&col0=0&rows=10&cols=10&step=1&bands=A01,A02,XX", "bands: expected three of the store's"),
    ("row0=%2B1&col0=0&rows=10&cols=10&step=1", "row0: expected an integer"),
    ("row0=%201&col0=0&rows=10&cols=10&step=1", "row0: expected an integer"),
    ("&".join(f"k{i}=1" for i in range(50)), "query: too many parameters"),
]  # fmt: skip


@pytest.mark.parametrize("existing", [False, True], ids=["no-file", "saved-file"])
def test_malformed_bodies_are_400_naming_the_field_and_nothing_is_written(served, existing):
    before = legit_save(served) if existing else None
    classes = list(served.session.classes)
    cases = [("/api/save", body, want) for _, body, want in MALFORMED_SAVE] + MALFORMED_OTHER
    for path, body, want in cases:
        status, _, answer = served.call(path, body, served.good_headers())
        assert status == 400, (path, body[:200], answer)
        assert error_of(answer).startswith(want) or want in error_of(answer), (want, answer)
        assert state(served.output) == before, body[:200]
    for query, want in MALFORMED_QUERY:
        status, _, answer = served.call("/api/image?" + query, None, served.good_headers(False))
        assert status == 400 and error_of(answer).startswith(want), (query, answer)
    status, _, answer = served.call("/api/info?x=1", None, served.good_headers(False))
    assert status == 400 and error_of(answer).startswith("query: unknown parameter")
    assert served.session.classes == classes
    assert served.session.points == ([] if before is None else served.session.points)


# ---------------------------------------------------------------- the validator as a pure function

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
near_points = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.sampled_from(["c1", "c2", "f0", "", "c" * 33, "a b", 7]) | scalars,
            "label": st.sampled_from(["water", "forest", "crops", "", "w" * 101, ["water"]]),
            "row": st.integers(-5, 400) | st.sampled_from([None, 2**31, 1e400, True, "3"]),
            "col": st.integers(-5, 400) | st.sampled_from([None, 2**63, -0.0, False, {}]),
            "extra": scalars,
        },
    )
    | scalars,
    max_size=4,
)


def _well_typed(points) -> bool:
    """The contract parse_points promises, stated independently of it."""
    ids = [p[0] for p in points]
    return len(set(ids)) == len(ids) and all(
        isinstance(pid, str)
        and 1 <= len(pid) <= 32
        and isinstance(label, str)
        and len(label) <= 100
        and all(v is None or (type(v) is int and 0 <= v < 2**31) for v in (row, col))
        and (row is None) == (col is None)
        for pid, label, row, col in points
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.fixed_dictionaries({}, optional={"points": near_points, "window": json_values})
    | json_values
)
def test_the_validator_accepts_only_well_typed_bodies_and_raises_nothing_else(view, body):
    session = serverlib.Session(
        view, CLASSES, [], "/nonexistent/never.geojson", overwrite=False, rgb=None, meta={}
    )
    for parse in (serverlib.parse_save, serverlib.parse_preview, serverlib.parse_class):
        try:
            got = parse(body)
        except serverlib.BadRequest as exc:
            assert str(exc)
            continue
        if parse is serverlib.parse_save:
            assert _well_typed(got)
            try:
                pts = session.to_points(got)
            except serverlib.BadRequest:
                continue
            assert all(p.label in CLASSES and 0 <= p.row < 300 and 0 <= p.col < 260 for p in pts)
        elif parse is serverlib.parse_preview:
            window, points = got
            assert _well_typed(points) and all(type(v) is int for v in window)
            assert window[2] >= 1 and window[3] >= 1 and 1 <= window[4] <= 2**20
        else:
            assert isinstance(got, str) and got and "," not in got and got.isprintable()


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_are_json_or_one_bad_request(raw):
    try:
        value = serverlib.parse_json(raw)
    except serverlib.BadRequest as exc:
        assert str(exc).startswith("body: ")
        return

    # what parses holds no NaN (the NaN literal is refused; 1e400 parses as infinity, and the
    # typed checks refuse every float)
    def no_nan(v):
        if isinstance(v, float):
            return not math.isnan(v)
        if isinstance(v, list):
            return all(map(no_nan, v))
        if isinstance(v, dict):
            return all(map(no_nan, v.values()))
        return True

    assert no_nan(value)


# ---------------------------------------------------------------- start-up limits


def test_class_names_and_points_past_the_page_s_limits_are_refused_at_start(
    synthetic, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "p.geojson"
    base = ["--embeddings", synthetic.path, "--output", str(out), "--tuning", "port=0"]
    assert label.run([*base, "--classes", "water," + "x" * 101]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("efm label: error: --classes: class 'xxx")
    assert "101 characters long, 100 at most" in err[0]
    monkeypatch.setattr(pointlib, "MAX_POINTS", 2)
    pts = tmp_path / "in.geojson"
    pts.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"label": "water"},
                        "geometry": {"type": "Point", "coordinates": [3.0, 45.0]},
                    }
                ]
                * 3,
            }
        )
    )
    assert label.run([*base, "--points", str(pts)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("efm label: error: --points: ")
    assert "holds 3 points; the labelling page takes 2 at most" in err[0]
    assert not out.exists()
