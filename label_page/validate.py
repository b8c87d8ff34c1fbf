"""The labelling page's requests, checked before anything runs (pure): every field for type and
range, a bad one raises BadRequest naming it ("<field>: <what>"), which the server answers as a
400 with {"error": ...}, never a 500. docs/label.md, "Security"."""

from __future__ import annotations

import json
import re
import urllib.parse

from label_page import points as pointlib

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
TILE_PATH = re.compile(r"/api/tile/([a-z]{1,16})/([0-9]{1,2})/([0-9]{1,10})/([0-9]{1,10})\.png")
MAX_POLYGONS = 1000
MAX_SUGGEST = 100


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
    """A Save's points (its polygons: parse_labels)."""
    return parse_labels(body)[0]


def parse_labels(body) -> tuple[list, list]:
    """{points, polygons?} (a Save, or the page's state after a change) -> (points, polygons)."""
    _object(body, "body", ("points",), ("polygons",))
    return parse_points(body["points"]), parse_polygons(body.get("polygons", []))


def _number(value, field: str, lo: float, hi: float) -> float:
    if type(value) not in (int, float):
        raise BadRequest(f"{field}: expected a number, got {_kind(value)}")
    if not lo <= value <= hi:  # NaN and infinities never reach here (parse_json refuses them)
        raise BadRequest(f"{field}: must be {lo}..{hi}")
    return float(value)


def parse_lonlat(value, field: str) -> tuple[float, float]:
    if type(value) is not list or len(value) != 2:
        raise BadRequest(f"{field}: expected [lon, lat], got {_kind(value)}")
    return _number(value[0], f"{field}[0]", -180, 180), _number(value[1], f"{field}[1]", -90, 90)


def parse_polygons(value, field: str = "polygons") -> list[tuple[str, str, list]]:
    """[{id, label, ring: [[lon, lat], ...]}] -> [(id, label, ring)], ids unique among them."""
    from label_page.polygons import MAX_VERTICES

    if type(value) is not list:
        raise BadRequest(f"{field}: expected a list, got {_kind(value)}")
    if len(value) > MAX_POLYGONS:
        raise BadRequest(f"{field}: {len(value):,} polygons, {MAX_POLYGONS:,} at most")
    out, seen = [], set()
    for i, item in enumerate(value):
        at = f"{field}[{i}]"
        _object(item, at, ("id", "label", "ring"))
        pid = item["id"]
        if type(pid) is not str or not ID.fullmatch(pid):
            raise BadRequest(f"{at}.id: expected 1-32 letters, digits, '_' or '-'")
        if pid in seen:
            raise BadRequest(f"{at}.id: {pid!r} is given twice")
        seen.add(pid)
        label = _name(item["label"], f"{at}.label")
        ring = item["ring"]
        if type(ring) is not list or not 3 <= len(ring) <= MAX_VERTICES:
            raise BadRequest(f"{at}.ring: expected 3..{MAX_VERTICES} [lon, lat] corners")
        out.append((pid, label, [parse_lonlat(c, f"{at}.ring[{j}]") for j, c in enumerate(ring)]))
    return out


def parse_locate(body) -> tuple[float, float]:
    _object(body, "body", ("lonlat",))
    return parse_lonlat(body["lonlat"], "lonlat")


def parse_suggest(body) -> tuple[tuple, int]:
    """{bounds: [west, south, east, north], n} (the map's view, EPSG:4326) -> (bounds, n)."""
    _object(body, "body", ("bounds", "n"))
    b = body["bounds"]
    if type(b) is not list or len(b) != 4:
        raise BadRequest(f"bounds: expected [west, south, east, north], got {_kind(b)}")
    w, e = (_number(b[i], f"bounds[{i}]", -360, 360) for i in (0, 2))
    s, n = (_number(b[i], f"bounds[{i}]", -90, 90) for i in (1, 3))
    if not (w < e and s < n):
        raise BadRequest("bounds: expected west < east and south < north")
    return (w, s, e, n), _int(body["n"], "n", 1, MAX_SUGGEST)


def parse_tile_path(path: str) -> tuple[str, int, int, int]:
    """/api/tile/<layer>/<z>/<x>/<y>.png -> (layer, z, x, y)."""
    m = TILE_PATH.fullmatch(path)
    if not m:
        raise BadRequest("tile: expected /api/tile/<layer>/<z>/<x>/<y>.png")
    layer, z, x, y = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
    from label_page.tiles import check_tile

    problem = check_tile(z, x, y)
    if problem:
        raise BadRequest(f"tile: {problem}")
    return layer, z, x, y


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
