"""One `efm label` run's state: the view, the classes, the page's points and polygons, the k-NN
trained on them, and what the page asks of it (tiles, suggestions, spatial CV, Save).

The page sends its whole state (points, polygons) after each change (`update`); the session
samples the polygons, reads the embeddings of every labelled pixel, fits the preview's k-NN and
bumps `rev`. Tiles of the "preview" and "uncertainty" layers are drawn with the model of the
latest update (a snapshot: a tile being drawn while the next update lands uses one model whole).
"""

from __future__ import annotations

import base64
import threading

import numpy as np

from label_page import guide, layers, polygons, tiles
from label_page import points as pointlib
from label_page.validate import (
    MAX_CLASSES,
    BadRequest,
    _object,
    parse_class,
    parse_labels,
    parse_locate,
    parse_preview,
    parse_suggest,
)
from label_page.view import StoreView, neighbours
from transforms.products.colours import hex_colours
from transforms.storage import outputs

SUGGEST_PIXELS = 40_000  # pixels of the view the suggestions are chosen among (a grid)


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
        basemap: str | None = None,
        image=None,
        per_polygon: int = 0,
        loaded_polygons: list | None = None,
    ):
        self.view, self.classes, self.output, self.overwrite, self.rgb, self.meta = (
            view,
            list(classes),
            output,
            overwrite,
            rgb,
            meta,
        )
        self.chosen_colours = dict(colours or {})  # --tuning colors / colors=: label -> "#rrggbb"
        self.loaded = {p.id: p for p in loaded}
        self.points = list(loaded)
        self.saved = None  # points count of the last save
        self.wrote = False  # this session wrote the output (so later saves may replace it)
        self.lock = threading.Lock()
        self.basemap, self.image, self.per_polygon = basemap, image, per_polygon
        self.tiles = tiles.TileSource(view)
        self.block = guide.default_block(view.info.height, view.info.width)
        self.loaded_polygons = list(loaded_polygons or [])  # [(id, label, ring)] of --points
        self.polygons: dict[str, polygons.Sampled] = {}
        self._sampled: dict = {}  # (id, label, ring) -> Sampled: a polygon is sampled once
        self.rev = 0
        self.model = None  # (k-NN, training vectors, class indices): the latest update's
        self.training = None  # (vectors, class indices, rows, cols) of the latest update

    def colours(self) -> list[str]:
        palette = hex_colours(len(self.classes))
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
            "lonlats": self._lonlats(self.points),  # where each point is drawn on the map
            "max_points": pointlib.MAX_POINTS,
            "max_decoded_bytes": self.view.max_decoded_bytes,
            "chunk_bytes": self.view.chunk_bytes,
            "lonlat_bounds": lonlat_bounds(i),
            "basemap": self.basemap,
            "image": self.image.path if self.image else None,
            "per_polygon": self.per_polygon,
            "max_per_polygon": polygons.MAX_PER_POLYGON,
            "block_px": self.block,
            "polygons": [
                {"id": pid, "label": label, "ring": ring}
                for pid, label, ring in self.loaded_polygons
            ],
        }

    def _lonlats(self, pts: list) -> list:
        on = [p for p in pts if p.lonlat is None and p.row is not None]
        lon, lat = pointlib.pixel_centres_lonlat(
            self.view.info, [p.row for p in on], [p.col for p in on]
        )
        centre = {
            p.id: [float(a), float(b)]
            for p, a, b in zip(on, np.atleast_1d(lon), np.atleast_1d(lat))
        }
        return [list(p.lonlat) if p.lonlat else centre.get(p.id) for p in pts]

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

    # ------------------------------------------------------------ the page's state
    def _sample(self, i: int, pid: str, label: str, ring: list) -> polygons.Sampled:
        if label not in self.classes:
            raise BadRequest(f"polygons[{i}].label: {label[:40]!r} is not a class")
        key = (pid, label, tuple(map(tuple, ring)))
        if key not in self._sampled:
            try:
                s = polygons.sample(pid, label, ring, self.view.info, self.per_polygon)
            except polygons.PolygonError as exc:
                raise BadRequest(f"polygons[{i}]: {exc}") from None
            s.vectors = tiles.read_pixels(self.view, s.rows, s.cols)
            self._sampled[key] = s
            while len(self._sampled) > 4 * polygons_cap():
                self._sampled.pop(next(iter(self._sampled)))
        return self._sampled[key]

    def update(self, body: dict) -> dict:
        """The page's points and polygons after a change: sample, fit the k-NN, bump `rev`."""
        items, polys = parse_labels(body)
        with self.lock:
            pts = self.to_points(items)
            sampled = [self._sample(i, *p) for i, p in enumerate(polys)]
            n = sum(p.row is not None for p in pts) + sum(len(s.rows) for s in sampled)
            if n > pointlib.MAX_POINTS:
                raise BadRequest(
                    f"polygons: {n:,} points with the polygons' samples, {pointlib.MAX_POINTS:,} at most"
                )
            self.points, self.polygons = pts, {s.id: s for s in sampled}
            answer = self._fit()
            self.rev += 1
            answer["rev"] = self.rev
        answer["polygons"] = [
            {"id": s.id, "pixels": s.pixels, "sampled": len(s.rows), "fixed": s.fixed}
            | ({"geometry": s.geometry} if s.fixed else {})
            for s in sampled
        ]
        return answer

    def _fit(self) -> dict:
        on = [p for p in self.points if p.row is not None]
        rows = np.array([p.row for p in on] + [r for s in self.polygons.values() for r in s.rows])
        cols = np.array([p.col for p in on] + [c for s in self.polygons.values() for c in s.cols])
        labels = np.array(
            [self.classes.index(p.label) for p in on]
            + [self.classes.index(s.label) for s in self.polygons.values() for _ in s.rows],
            dtype=np.int64,
        )
        parts = [np.stack([self.view.vector(p.row, p.col) for p in on])] if on else []
        parts += [s.vectors for s in self.polygons.values()]
        width = len(self.view.info.bands)
        vectors = np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
        ok = ~np.isnan(vectors).any(axis=1)
        vectors, labels = vectors[ok], labels[ok]
        rows, cols = rows[ok].astype(np.int64), cols[ok].astype(np.int64)
        self.training = (vectors, labels, rows, cols)
        answer = {"skipped": int((~ok).sum()), "training": int(ok.sum())}
        if len(np.unique(labels)) < 2:
            self.model = None
            return {**answer, "k": None, "reason": "points of two classes (on data) are needed"}
        from transforms.learning import models

        k = neighbours(labels.tolist())
        model = models.make_classifier("knn", {"n_neighbors": k}).fit(vectors, labels)
        self.model = (model, vectors, labels)
        return {**answer, "k": k, "reason": None}

    def locate(self, body: dict) -> dict:
        """A place on the map (lon, lat) -> the store pixel under it and that pixel's centre."""
        import pyproj
        from affine import Affine

        lon, lat = parse_locate(body)
        i = self.view.info
        x, y = pyproj.Transformer.from_crs("EPSG:4326", i.crs, always_xy=True).transform(lon, lat)
        col, row = ~Affine(*i.transform[:6]) * (x, y)
        if not (np.isfinite(row) and np.isfinite(col)) or not (
            0 <= row < i.height and 0 <= col < i.width
        ):
            return {"row": None, "col": None, "reason": "outside the store"}
        row, col = int(np.floor(row)), int(np.floor(col))
        clon, clat = pointlib.pixel_centres_lonlat(i, [row], [col])
        return {"row": row, "col": col, "lonlat": [float(clon[0]), float(clat[0])]}

    # ------------------------------------------------------------ tiles
    def tile(self, layer: str, z: int, x: int, y: int, bands: list[int] | None) -> bytes | None:
        """A layer's tile as PNG; None where it shows nothing (layers.draw)."""
        return layers.draw(self, layer, z, x, y, bands)

    # ------------------------------------------------------------ guidance
    def suggest(self, body: dict) -> dict:
        """The n most uncertain pixels of a window, spread out (guide.suggest)."""
        bounds, n = parse_suggest(body)
        model = self.model
        if model is None:
            return {"points": [], "reason": "points of two classes (on data) are needed"}
        w = self.view.clamp(*self.pixel_window(bounds))
        step = max(w.step, int(np.ceil(np.sqrt(w.rows * w.cols / SUGGEST_PIXELS))))
        level = 1 << int(np.floor(np.log2(step)))
        r = np.arange(-(-w.row0 // level) * level, w.row0 + w.rows, level)[:: step // level]
        c = np.arange(-(-w.col0 // level) * level, w.col0 + w.cols, level)[:: step // level]
        rr, cc = (a.ravel() for a in np.meshgrid(r, c, indexing="ij"))
        values = tiles.store.as_float(self.tiles.codes_at(rr, cc, level))
        ok = ~np.isnan(values).any(axis=1)
        rr, cc, values = rr[ok], cc[ok], values[ok]
        u = guide.uncertainty(model[1], model[2], values)
        spacing = max(2.0 * step, float(np.sqrt(w.rows * w.cols / n)) / 2)
        _, _, trows, tcols = self.training
        picked = guide.suggest(rr, cc, u, n, spacing, list(zip(trows.tolist(), tcols.tolist())))
        rows, cols = rr[picked], cc[picked]
        lon, lat = pointlib.pixel_centres_lonlat(self.view.info, rows, cols)
        return {
            "points": [
                {"row": int(a), "col": int(b), "lonlat": [float(x), float(y)], "u": float(v)}
                for a, b, x, y, v in zip(rows, cols, lon, lat, u[picked])
            ],
            "step": int(step),
            "spacing": round(spacing, 1),
        }

    def pixel_window(self, bounds) -> tuple[int, int, int, int, int]:
        """[west, south, east, north] (EPSG:4326) -> the store window around it (a 17 x 17 grid)."""
        import pyproj
        from affine import Affine

        west, south, east, north = bounds
        lon, lat = np.meshgrid(np.linspace(west, east, 17), np.linspace(south, north, 17))
        i = self.view.info
        x, y = pyproj.Transformer.from_crs("EPSG:4326", i.crs, always_xy=True).transform(lon, lat)
        col, row = ~Affine(*i.transform[:6]) * (np.asarray(x), np.asarray(y))
        ok = np.isfinite(col) & np.isfinite(row)
        if not ok.any():
            raise BadRequest("bounds: no place of the store's CRS")
        r0, c0 = int(np.floor(row[ok].min())), int(np.floor(col[ok].min()))
        r1, c1 = int(np.ceil(row[ok].max())), int(np.ceil(col[ok].max()))
        return r0, c0, max(1, r1 - r0), max(1, c1 - c0), 1

    def cv(self, body: dict) -> dict:
        """Spatial block CV of the latest update's points (guide.block_cv), tagged with its rev."""
        _object(body, "body", ())
        with self.lock:
            rev, training = self.rev, self.training
        if training is None:
            return {"rev": rev, "accuracy": None, "reason": "no points yet", "points": 0}
        vectors, labels, rows, cols = training
        result = guide.block_cv(vectors, labels, rows, cols, self.block, self.view.info.width)
        return {"rev": rev, **result}

    def save(self, body: dict) -> dict:
        with self.lock:
            items, polys = parse_labels(body)
            pts = self.to_points(items)
            sampled = [self._sample(i, *p) for i, p in enumerate(polys)]
            found = outputs.inspect(self.output, "points")
            if not found.empty and (found.kind != "points" or not (self.wrote or self.overwrite)):
                raise BadRequest(
                    f"{self.output} was changed by someone else since efm label started; nothing written (restart with another --output)"
                )
            pointlib.write(
                self.output, pointlib.feature_collection(pts, self.view.info, self.meta, sampled)
            )
            self.points, self.saved, self.wrote = pts, len(pts), True
        return {
            "path": self.output,
            "count": len(pts) + sum(len(s.rows) for s in sampled),
            "polygons": len(sampled),
        }


def window_dict(w) -> dict:
    return {"row0": w.row0, "col0": w.col0, "rows": w.rows, "cols": w.cols, "step": w.step}


def polygons_cap() -> int:
    from label_page.validate import MAX_POLYGONS

    return MAX_POLYGONS


def lonlat_bounds(info) -> list[float]:
    """[west, south, east, north] of the store's outline in EPSG:4326 (edges densified)."""
    t = np.linspace(0, 1, 33)
    rows = np.concatenate([0 * t, t, 0 * t + 1, t]) * info.height
    cols = np.concatenate([t, 0 * t + 1, t, 0 * t]) * info.width
    lon, lat = pointlib.pixel_centres_lonlat(info, rows - 0.5, cols - 0.5)
    return [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())]
