"""Pixel-grid maths: CRS handling, request grids and nearest-neighbour sample plans."""

from __future__ import annotations

import dataclasses
import functools
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pyproj

if TYPE_CHECKING:
    from emulators.earthengine.images import SourceImage


@functools.lru_cache(maxsize=256)
def crs_of(code: str) -> pyproj.CRS:
    return pyproj.CRS.from_user_input(code)


def same_crs(a: str, b: str) -> bool:
    return a == b or crs_of(a) == crs_of(b)


_transformers = threading.local()  # pyproj Transformers must not be shared across threads


def transformer(src: str, dst: str) -> pyproj.Transformer:
    cache = _transformers.__dict__.setdefault("cache", {})
    if (src, dst) not in cache:
        cache[(src, dst)] = pyproj.Transformer.from_crs(crs_of(src), crs_of(dst), always_xy=True)
    return cache[(src, dst)]


@dataclasses.dataclass(frozen=True)
class Grid:
    """A computePixels grid: CRS, affine (a, b, c, d, e, f) and size in pixels."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @classmethod
    def from_request(cls, grid: dict[str, Any]) -> Grid:
        crs = grid.get("crsCode") or grid.get("crsWkt")
        if not crs:
            raise ValueError("grid.crsCode (or grid.crsWkt) is required.")
        try:
            crs_of(crs)
        except pyproj.exceptions.CRSError as exc:
            raise ValueError(f"Unknown CRS {crs!r}: {exc}") from None
        aff = grid.get("affineTransform") or {}
        keys = ("scaleX", "shearX", "translateX", "shearY", "scaleY", "translateY")
        transform = tuple(float(aff.get(k, 0.0)) for k in keys)
        if transform[0] * transform[4] - transform[1] * transform[3] == 0:
            raise ValueError("grid.affineTransform is singular (scaleX/scaleY missing?).")
        dims = grid.get("dimensions") or {}
        width, height = int(dims.get("width", 0)), int(dims.get("height", 0))
        if width <= 0 or height <= 0:
            raise ValueError("grid.dimensions.width and height must be positive.")
        return cls(crs, transform, width, height)  # type: ignore[arg-type]


def _compose(src: tuple, grid: tuple) -> tuple[float, ...]:
    """Affine mapping grid pixel coordinates to source pixel coordinates (same CRS)."""
    a, b, c, d, e, f = src
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    ga, gb, gc, gd, ge, gf = grid
    return (
        ia * ga + ib * gd,
        ia * gb + ib * ge,
        ia * (gc - c) + ib * (gf - f),
        id_ * ga + ie * gd,
        id_ * gb + ie * ge,
        id_ * (gc - c) + ie * (gf - f),
    )


def _near_int(value: float, tol: float = 1e-6) -> bool:
    return abs(value - round(value)) <= tol


def _disjoint(src: SourceImage, grid: Grid) -> bool:
    """True when the grid's outline, reprojected, clearly misses the source image's bounds."""
    edge = np.linspace(0.0, 1.0, 33)
    u = np.concatenate([edge, np.ones_like(edge), edge[::-1], np.zeros_like(edge)]) * grid.width
    v = np.concatenate([np.zeros_like(edge), edge, np.ones_like(edge), edge[::-1]]) * grid.height
    ga, gb, gc, gd, ge, gf = grid.transform
    sx, sy = transformer(grid.crs, src.crs).transform(ga * u + gb * v + gc, gd * u + ge * v + gf)
    if not (np.all(np.isfinite(sx)) and np.all(np.isfinite(sy))):
        return False  # cannot tell; let the per-pixel path decide
    a, b, c, d, e, f = src.transform
    corners_u = np.array([0, src.width, src.width, 0])
    corners_v = np.array([0, 0, src.height, src.height])
    cx, cy = a * corners_u + b * corners_v + c, d * corners_u + e * corners_v + f
    margin = 2 * max(abs(a) + abs(b), abs(d) + abs(e), abs(ga) + abs(gb), abs(gd) + abs(ge))
    return bool(
        sx.max() < cx.min() - margin
        or sx.min() > cx.max() + margin
        or sy.max() < cy.min() - margin
        or sy.min() > cy.max() + margin
    )


class SamplePlan:
    """Where each grid pixel reads in one source image (nearest neighbour).

    Three shapes, fastest first: a window of the source array (grid aligned to
    the source pixels), separable row/column indices (same CRS, no rotation),
    or full per-pixel indices (reprojection through pyproj).
    """

    def __init__(self, src: SourceImage, grid: Grid):
        self.shape = (grid.height, grid.width)
        self.window: tuple[int, int] | None = None
        self.flat = self.valid = None
        self.empty = False
        if same_crs(src.crs, grid.crs):
            m = _compose(src.transform, grid.transform)
            axis_aligned = m[1] == 0 and m[3] == 0
            unit = abs(m[0] - 1) < 1e-9 and abs(m[4] - 1) < 1e-9
            if axis_aligned and unit and _near_int(m[2]) and _near_int(m[5]):
                self.window = (int(round(m[5])), int(round(m[2])))
                r0, c0 = self.window
                self.empty = (
                    r0 >= src.height
                    or c0 >= src.width
                    or r0 + grid.height <= 0
                    or c0 + grid.width <= 0
                )
                return
            if axis_aligned:
                cols = np.floor(m[0] * (np.arange(grid.width) + 0.5) + m[2]).astype(np.int64)
                rows = np.floor(m[4] * (np.arange(grid.height) + 0.5) + m[5]).astype(np.int64)
                self._set_indices(rows[:, None], cols[None, :], src)
                return
            jj, ii = np.meshgrid(
                np.arange(grid.height) + 0.5, np.arange(grid.width) + 0.5, indexing="ij"
            )
            cols = np.floor(m[0] * ii + m[1] * jj + m[2]).astype(np.int64)
            rows = np.floor(m[3] * ii + m[4] * jj + m[5]).astype(np.int64)
            self._set_indices(rows, cols, src)
            return
        if _disjoint(src, grid):
            self.empty = True  # skip the per-pixel reprojection for tiles far from the request
            return
        ga, gb, gc, gd, ge, gf = grid.transform
        jj, ii = np.meshgrid(
            np.arange(grid.height) + 0.5, np.arange(grid.width) + 0.5, indexing="ij"
        )
        x, y = ga * ii + gb * jj + gc, gd * ii + ge * jj + gf
        sx, sy = transformer(grid.crs, src.crs).transform(x, y)
        a, b, c, d, e, f = src.transform
        det = a * e - b * d
        dx, dy = sx - c, sy - f
        cols = np.floor((e * dx - b * dy) / det)
        rows = np.floor((-d * dx + a * dy) / det)
        bad = ~np.isfinite(cols) | ~np.isfinite(rows)
        cols[bad], rows[bad] = -1, -1
        self._set_indices(rows.astype(np.int64), cols.astype(np.int64), src)

    def _set_indices(self, rows: np.ndarray, cols: np.ndarray, src: SourceImage) -> None:
        row_ok = (rows >= 0) & (rows < src.height)
        col_ok = (cols >= 0) & (cols < src.width)
        self.valid = np.broadcast_to(row_ok & col_ok, self.shape)
        self.empty = not self.valid.any()
        # flat indices: np.take on a raveled band is much faster than 2-D fancy indexing
        self.flat = np.clip(rows, 0, src.height - 1) * src.width + np.clip(cols, 0, src.width - 1)
        self.flat = np.ascontiguousarray(np.broadcast_to(self.flat, self.shape))

    def take(self, band: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Values for this grid from a 2-D source band, and where they exist (None = everywhere)."""
        if self.window is None:
            return np.take(band.reshape(-1), self.flat), self.valid
        r0, c0 = self.window
        h, w = self.shape
        if r0 >= 0 and c0 >= 0 and r0 + h <= band.shape[0] and c0 + w <= band.shape[1]:
            return band[r0 : r0 + h, c0 : c0 + w], None
        out = np.zeros(self.shape, band.dtype)
        valid = np.zeros(self.shape, bool)
        sr, sc = max(r0, 0), max(c0, 0)
        er, ec = min(r0 + h, band.shape[0]), min(c0 + w, band.shape[1])
        out[sr - r0 : er - r0, sc - c0 : ec - c0] = band[sr:er, sc:ec]
        valid[sr - r0 : er - r0, sc - c0 : ec - c0] = True
        return out, valid


class RenderContext:
    """Per-request state: the grid, sample plans per source image, a band result cache."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.shape = (grid.height, grid.width)
        self._plans: dict[int, SamplePlan] = {}
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def plan(self, src: SourceImage) -> SamplePlan:
        if id(src) not in self._plans:
            self._plans[id(src)] = SamplePlan(src, self.grid)
        return self._plans[id(src)]

    def nothing(self, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        return np.broadcast_to(np.zeros((), dtype), self.shape), np.broadcast_to(False, self.shape)

    def everywhere(self) -> np.ndarray:
        return np.broadcast_to(True, self.shape)
