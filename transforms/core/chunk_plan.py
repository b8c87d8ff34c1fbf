"""Which chunks of the grid a run writes, computed before anything is written: no Beam, no I/O.

`ChunkPlan` holds them compactly, as one boolean per chunk position (y, x) that the area touches;
the years multiply it arithmetically. The Beam graph gets one small `ChunkRow` per (year, chunk
row) with ranges of chunk columns, and workers expand each into `ChunkSpec`s (`ChunkPlan.expand`):
a continent never becomes a list of ChunkSpecs on the launcher, nor a pickled list of markers in
`MarkComplete`. Extract plans with it (transforms/sources/extract_plan.py estimates its cost), and
so do the products over a window of a store (transforms/storage/subset.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import shapely

from transforms.core.chunks import ChunkSpec
from transforms.core.grid import Grid, Window


@dataclasses.dataclass(frozen=True)
class ChunkRow:
    """A compact element of the Beam graph: one year's chunks in one row band of the grid."""

    time_index: int
    row: int  # chunk row (not pixel row)
    runs: tuple[tuple[int, int], ...]  # [start, stop) ranges of chunk columns to write


def _runs(cols: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Sorted column indexes -> [start, stop) ranges."""
    if len(cols) == 0:
        return ()
    breaks = np.flatnonzero(np.diff(cols) != 1)
    starts = np.concatenate([[cols[0]], cols[breaks + 1]])
    stops = np.concatenate([cols[breaks] + 1, [cols[-1] + 1]])
    return tuple((int(a), int(b)) for a, b in zip(starts, stops))


@dataclasses.dataclass(eq=False)
class ChunkPlan:
    """The chunks a run writes: `touched[r, c]` for chunk row r, chunk column c, for every year."""

    height: int
    width: int
    chunk_rows: int
    chunk_cols: int
    years: tuple[int, ...]
    touched: np.ndarray  # bool (n_rows, n_cols)

    def __post_init__(self):
        self.touched = np.ascontiguousarray(self.touched, dtype=bool)
        per_row = self.touched.sum(axis=1)
        self._row_start = np.concatenate([[0], np.cumsum(per_row)[:-1]]).astype(
            np.int64
        )  # index of a row's first chunk

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_row_start"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__post_init__()

    @classmethod
    def full(cls, height: int, width: int, chunk_rows: int, chunk_cols: int, years) -> ChunkPlan:
        shape = (math.ceil(height / chunk_rows), math.ceil(width / chunk_cols))
        return cls(height, width, chunk_rows, chunk_cols, tuple(years), np.ones(shape, dtype=bool))

    @classmethod
    def for_area(cls, grid: Grid, chunk_size: int, years, aoi) -> ChunkPlan:
        """Chunks whose footprint intersects `aoi` (in the grid's CRS), one row band at a time."""
        n_rows, n_cols = math.ceil(grid.height / chunk_size), math.ceil(grid.width / chunk_size)
        touched = np.zeros((n_rows, n_cols), dtype=bool)
        shapely.prepare(aoi)
        lefts = grid.x0 + np.arange(n_cols) * chunk_size * grid.scale
        rights = grid.x0 + np.minimum((np.arange(n_cols) + 1) * chunk_size, grid.width) * grid.scale
        for r in range(n_rows):
            top = grid.y0 - r * chunk_size * grid.scale
            bottom = grid.y0 - min((r + 1) * chunk_size, grid.height) * grid.scale
            touched[r] = shapely.intersects(aoi, shapely.box(lefts, bottom, rights, top))
        return cls(grid.height, grid.width, chunk_size, chunk_size, tuple(years), touched)

    # -- counts -----------------------------------------------------------------------------
    @property
    def per_year(self) -> int:
        return int(self._row_start[-1] + self.touched[-1].sum()) if self.touched.size else 0

    @property
    def count(self) -> int:
        return self.per_year * len(self.years)

    @property
    def skipped(self) -> int:
        """Chunks outside the area, all years."""
        return (self.touched.size - self.per_year) * len(self.years)

    def shapes(self) -> dict[tuple[int, int], int]:
        """(rows, cols) of a chunk -> how many touched chunks (one year) have that shape."""
        n_rows, n_cols = self.touched.shape
        last_h = self.height - (n_rows - 1) * self.chunk_rows
        last_w = self.width - (n_cols - 1) * self.chunk_cols
        t = self.touched
        counts = {
            (self.chunk_rows, self.chunk_cols): int(t[:-1, :-1].sum()),
            (self.chunk_rows, last_w): int(t[:-1, -1].sum()),
            (last_h, self.chunk_cols): int(t[-1, :-1].sum()),
            (last_h, last_w): int(t[-1, -1]),
        }
        merged: dict[tuple[int, int], int] = {}
        for shape, n in counts.items():
            if n:
                merged[shape] = merged.get(shape, 0) + n
        return merged

    # -- chunks -----------------------------------------------------------------------------
    def window(self, row: int, col: int) -> Window:
        r0, c0 = row * self.chunk_rows, col * self.chunk_cols
        return Window(
            r0, c0, min(self.chunk_rows, self.height - r0), min(self.chunk_cols, self.width - c0)
        )

    def marker(self, time_index: int, row: int, col: int) -> str:
        return (
            f"{time_index}.{row * self.chunk_rows}.{col * self.chunk_cols}"  # == ChunkSpec.marker
        )

    def markers(self) -> Iterator[str]:
        rows, cols = np.nonzero(self.touched)
        for t in range(len(self.years)):
            for r, c in zip(rows.tolist(), cols.tolist()):
                yield self.marker(t, r, c)

    def __iter__(self) -> Iterator[str]:
        """The markers of every planned chunk (what `store.finalize` checks)."""
        return self.markers()

    def rows(self, done: set[str] | frozenset[str] = frozenset()) -> Iterator[ChunkRow]:
        """One ChunkRow per (year, chunk row) with something left to write; `done` = markers to skip."""
        for t in range(len(self.years)):
            for r in range(self.touched.shape[0]):
                cols = np.flatnonzero(self.touched[r])
                if done:
                    cols = np.array(
                        [c for c in cols.tolist() if self.marker(t, r, c) not in done],
                        dtype=np.int64,
                    )
                if len(cols):
                    yield ChunkRow(t, r, _runs(cols))

    def expand(self, item: ChunkRow) -> Iterator[ChunkSpec]:
        """A ChunkRow -> its ChunkSpecs, indexed as `plan_chunks` would (runs on the workers)."""
        rank = (
            np.cumsum(self.touched[item.row]) - 1
        )  # position of each column among the row's touched ones
        first = item.time_index * self.per_year + int(self._row_start[item.row])
        for start, stop in item.runs:
            for c in range(start, stop):
                yield ChunkSpec(
                    first + int(rank[c]),
                    item.time_index,
                    self.years[item.time_index],
                    self.window(item.row, c),
                )

    def specs(self, done: set[str] | frozenset[str] = frozenset()) -> Iterator[ChunkSpec]:
        for item in self.rows(done):
            yield from self.expand(item)
