"""The labelling page's points: classes, an existing points file, and the GeoJSON "Save" writes.

A clicked point is the centre of the clicked pixel; a point read from --points keeps its own
coordinates (written back unchanged, even when it lies outside the store). The file is GeoJSON
in EPSG:4326 (lon, lat) with a `label` property, what `efm sample --label-column label` reads;
a top-level member `efm_product: "points"` (a GeoJSON foreign member, ignored by readers) marks
it as efm's, so that --overwrite replaces only a file efm wrote.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from transforms.core import atomic, tuning
from transforms.core.errors import InputError
from transforms.learning import labelled_points, sampling
from transforms.storage import kinds
from transforms.storage.readers import StoreInfo

LABEL_COLUMN = "label"
PRODUCT = "points"
# The page sends every point on every preview and Save, so these bound one request's body
# (server.MAX_BODY_BYTES is sized for MAX_POINTS points with the longest names).
MAX_POINTS = 50_000
MAX_NAME_CHARS = 100


def name_problem(name: str) -> str | None:
    """Why a class name cannot be used on the page (None: it can)."""
    if len(name) > MAX_NAME_CHARS:
        return f"is {len(name)} characters long, {MAX_NAME_CHARS} at most"
    if not name.isprintable():
        return "holds a control or non-printable character"
    return None


@dataclasses.dataclass
class Point:
    id: str
    label: str
    row: int | None  # None: outside the store (kept, not shown)
    col: int | None
    lonlat: tuple[float, float] | None = (
        None  # a loaded point's own coordinates; None: the pixel centre
    )


def parse_classes(text: str | None, flag: str = "--classes") -> list[str]:
    if text is None:
        return []
    names = [c.strip() for c in text.split(",")]
    if any(not n for n in names):
        raise InputError(
            flag,
            f"empty class name in {text!r}; separate names with single commas, e.g. --classes water,forest",
        )
    seen = set()
    for name in names:
        problem = name_problem(name)
        if problem:
            raise InputError(flag, f"class {name[:40]!r} {problem}; use a shorter plain name")
        if name in seen:
            raise InputError(
                flag, f"class {name!r} is given twice in {text!r}; name each class once"
            )
        seen.add(name)
    return names


def parse_colours(text: str | None, flag: str = "--colors") -> dict[str, str]:
    """`water=#2b6cb0,forest=green` (or `;`-separated, as in `--tuning colors=...`) or a JSON file {label: colour} -> {label: "#rrggbb"} (a file may
    name more labels than there are classes: a palette shared with `efm export --tuning colors=...`)."""
    if not text:
        return {}
    import matplotlib.colors

    if os.path.exists(text):
        try:
            with open(text) as f:
                pairs = [(str(k), v) for k, v in json.load(f).items()]
        except (ValueError, AttributeError) as exc:
            raise InputError(
                flag, f"{text} is not a JSON object {{label: colour}}: {exc}"
            ) from None
    else:
        pairs = [tuple(item.split("=", 1)) for item in tuning.value_list(text)]
    out = {}
    for pair in pairs:
        if len(pair) != 2:
            raise InputError(
                flag,
                f"expected LABEL=COLOUR pairs, e.g. water=#2b6cb0, or a JSON file; got {text!r}",
            )
        try:
            out[str(pair[0]).strip()] = matplotlib.colors.to_hex(str(pair[1]).strip())
        except ValueError:
            raise InputError(flag, f"{pair[1]!r} is not a colour (use #rrggbb or a name)") from None
    return out


def load(
    path: str, info: StoreInfo, classes: list[str], flag: str = "--points", frame=None
) -> tuple[list[Point], list[str]]:
    """Points of an existing file (any format `efm sample` reads, label column `label`) -> (points, classes).

    Without --classes the classes are the file's labels (sorted); with it, every label must be one.
    frame: a (Geo)DataFrame already in memory instead of the file (efm.label's `points=`); `path`
    then only names it in messages."""
    import pyproj

    try:
        if frame is None:
            read = labelled_points.read_points(path, LABEL_COLUMN, flag=flag, keep_columns=[])
        else:
            geo = frame if "geometry" in frame.columns and hasattr(frame, "crs") else None
            read = labelled_points.frame_points(frame, geo, path, LABEL_COLUMN, None, flag, [])
    except InputError as exc:
        if (
            exc.flag == "--label-column"
        ):  # read_points names efm sample's flag; here the file is at fault
            raise InputError(
                flag,
                f"{path} has no {LABEL_COLUMN!r} column; efm label reads and writes the class in a column named {LABEL_COLUMN!r}",
            ) from None
        raise
    labels = [str(v) for v in read.labels]
    if len(labels) > MAX_POINTS:
        raise InputError(
            flag,
            f"{path} holds {len(labels):,} points; the labelling page takes {MAX_POINTS:,} at most "
            "(it sends them all on every click): label a part of them, or use the file with efm sample",
        )
    for name in sorted(set(labels)):
        problem = name_problem(name)
        if problem:
            raise InputError(
                flag, f"{path} has a label {name[:40]!r} that {problem}; rename it in the file"
            )
    if classes:
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise InputError(
                flag,
                f"{path} has labels not among --classes ({', '.join(classes)}): {', '.join(unknown)}; add them to --classes, or leave --classes out to take the file's labels",
            )
    else:
        classes = sorted(set(labels))
    lon, lat = pyproj.Transformer.from_crs(read.crs, "EPSG:4326", always_xy=True).transform(
        read.x, read.y
    )
    rows, cols = sampling.to_pixels(info, read)
    points = [
        Point(
            f"f{i}",
            labels[i],
            int(rows[i]) if rows[i] >= 0 else None,
            int(cols[i]) if cols[i] >= 0 else None,
            (float(lon[i]), float(lat[i])),
        )
        for i in range(len(labels))
    ]
    return points, classes


def split_polygons(path: str, loaded: list[Point]) -> tuple[list[Point], list[tuple]]:
    """A points file efm label wrote with polygons -> (the points not sampled from a polygon,
    [(id, label, ring as drawn)]): the page edits the polygons again and re-samples them. Any
    other file: (loaded, [])."""
    if not path.lower().endswith((".geojson", ".json")):
        return loaded, []
    try:
        with open(path, encoding="utf-8") as f:
            features = json.load(f).get("features", [])
    except (OSError, ValueError, AttributeError):
        return loaded, []
    props = [(f.get("properties") or {}, (f.get("geometry") or {}).get("type")) for f in features]
    outlines = [p for p, kind in props if p.get("efm_role") == "polygon" and kind != "Point"]
    if not outlines:
        return loaded, []
    labelled = [
        p for p, kind in props if kind == "Point" and str(p.get(LABEL_COLUMN) or "").strip()
    ]
    if len(labelled) != len(loaded):
        return loaded, []
    polygons = [(str(p["efm_polygon"]), str(p[LABEL_COLUMN]), p["drawn"]) for p in outlines]
    ids = {pid for pid, _, _ in polygons}
    kept = [pt for pt, p in zip(loaded, labelled) if p.get("efm_polygon") not in ids]
    return kept, polygons


def pixel_centres_lonlat(
    info: StoreInfo, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    import pyproj

    a, b, c, d, e, f = info.transform
    col, row = np.asarray(cols, dtype=np.float64) + 0.5, np.asarray(rows, dtype=np.float64) + 0.5
    x, y = a * col + b * row + c, d * col + e * row + f
    return pyproj.Transformer.from_crs(info.crs, "EPSG:4326", always_xy=True).transform(x, y)


def feature_collection(points: list[Point], info: StoreInfo, meta: dict, polygons=()) -> dict:
    """Points as Point features; each polygon (polygons.Sampled) as a Polygon feature
    (`efm_role: "polygon"`, its pixel and sample counts, whether make_valid fixed it, the ring as
    drawn) followed by its samples, the pixel centres (`efm_polygon: <its id>`)."""
    clicked = [p for p in points if p.lonlat is None]
    lon, lat = pixel_centres_lonlat(info, [p.row for p in clicked], [p.col for p in clicked])
    centres = {
        p.id: (float(x), float(y))
        for p, x, y in zip(clicked, np.atleast_1d(lon), np.atleast_1d(lat))
    }
    features = [
        {
            "type": "Feature",
            "properties": {LABEL_COLUMN: p.label},
            "geometry": {"type": "Point", "coordinates": list(p.lonlat or centres[p.id])},
        }
        for p in points
    ]
    for poly in polygons:
        features.append(
            {
                "type": "Feature",
                "properties": {
                    LABEL_COLUMN: poly.label,
                    "efm_role": "polygon",
                    "efm_polygon": poly.id,
                    "pixels": poly.pixels,
                    "sampled": len(poly.rows),
                    "fixed": poly.fixed,
                    "drawn": poly.ring,
                },
                "geometry": poly.geometry,
            }
        )
        plon, plat = pixel_centres_lonlat(info, poly.rows, poly.cols)
        features += [
            {
                "type": "Feature",
                "properties": {LABEL_COLUMN: poly.label, "efm_polygon": poly.id},
                "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
            }
            for x, y in zip(np.atleast_1d(plon), np.atleast_1d(plat))
        ]
    return {
        "type": "FeatureCollection",
        kinds.PRODUCT_ATTR: PRODUCT,
        "efm": meta,
        "features": features,
    }


def write(path: str, collection: dict) -> None:
    """Whole or not at all (transforms/core/atomic.py): a local file is written beside its place,
    fsynced and renamed over it; a gs:// object is uploaded in one piece."""
    atomic.write_bytes(path, json.dumps(collection, indent=1) + "\n")
