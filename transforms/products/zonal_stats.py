"""`efm zonal`'s work on one chunk (pure: numpy, shapely, rasterio; no Beam): rasterise the
chunk's polygons a group at a time (zonal_raster.py says which pixels a polygon owns), then per
polygon the count, sums (and sums of squares, pixel values for a median) of each band over its
pixels; partials of a polygon crossing chunks combine exactly. Pixels with no data (NaN / code
-128 in any band) are left out.

Band-first: the chunk's stored codes (bands, rows, cols) are summed as they are stored: the
pixels inside polygons are gathered once per block ((bands, k) codes), then per band the 256-entry
table gives each code's value (float64, the float32 value `quantize.dequantize` gives) and one
np.bincount per band sums them by polygon (no-data pixels go to a spare bin, dropped).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd

from transforms.core import quantize
from transforms.core.errors import InputError

STATS = ("mean", "median", "std", "count")
COUNT_COLUMN = "pixel_count"
BLOCK = 262_144  # pixels gathered at a time (bounds the temporaries: 16 MB of int8 codes)
GROUP = 2_048  # a chunk's polygons rasterised and summed at a time: their temporaries (label
# dicts, sums, the finished rows) at 8,192 cost ~30 MB more per chunk than a chunk of 625 polygons


def release_memory() -> None:
    """Give freed heap back to the system (glibc's malloc_trim) after a chunk: its ~60,000
    polygons' small objects interleaved with large arrays otherwise leave the heap fragmented,
    and the process's RSS crept up chunk after chunk (~15 MB a chunk at 1M polygons)."""
    import ctypes

    global _TRIM
    if _TRIM is None:
        try:
            # libc.so.6 by name first: find_library runs a subprocess (ldconfig), a fork of this
            # process that a sampler of the process tree counts at its full RSS
            _TRIM = _libc(ctypes).malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _TRIM = False
    if "pyarrow" in sys.modules:  # Arrow's own allocator (mimalloc/jemalloc) keeps freed pages
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    if _TRIM:
        _TRIM(0)


_TRIM = None


def _libc(ctypes):
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        import ctypes.util

        return ctypes.CDLL(ctypes.util.find_library("c"))


def parse_stats(text, flag: str = "--stat") -> tuple[str, ...]:
    """ "mean,median" (or a list) -> ("mean", "median"), in the order given; `count` is always in
    the table (as pixel_count) and may be named."""
    names = [s.strip().lower() for s in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in STATS]
    if unknown or not names:
        raise InputError(
            flag,
            f"unknown statistic {unknown[0]!r}; choose from {', '.join(STATS)} (e.g. mean,std)"
            if unknown
            else f"name at least one statistic: {', '.join(STATS)}",
        )
    return tuple(dict.fromkeys(names))


def stat_columns(stats, bands) -> dict[str, list[str]]:
    """The band columns of each statistic: the mean keeps the band names (A00…), so that
    `efm train` and `efm predict --polygons` read it as the embedding; others get a suffix."""
    return {s: [b if s == "mean" else f"{b}_{s}" for b in bands] for s in stats if s != "count"}


@dataclasses.dataclass
class Partial:
    """Sums of one year's pixels per polygon: counts (n,), sums and sums of squares (n, bands),
    and, for a median, each polygon's pixel values ((k, bands) float32 arrays)."""

    count: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray | None
    values: list | None


_VALUE = quantize._TABLE.astype(np.float64)  # code (its bits as uint8) -> value (NaN for -128)
_SQUARE = _VALUE * _VALUE


def _gather(values: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """values (bands, rows, cols), band-first in memory or a band-last array's moveaxis view ->
    the codes of the flat pixels `pix`, (bands, k)."""
    bands = values.shape[0]
    if values.flags.c_contiguous:
        return values.reshape(bands, -1).take(pix, axis=1)
    last = np.moveaxis(values, 0, -1)
    if last.flags.c_contiguous:  # (rows, cols, bands) in memory: gather pixels, view band-first
        return last.reshape(-1, bands)[pix].T
    return np.ascontiguousarray(values).reshape(bands, -1).take(pix, axis=1)


def polygon_sums(
    values: np.ndarray, pixels, n: int, *, squares: bool, keep_values: bool
) -> Partial:
    """values (bands, rows, cols): the store's codes (int8, de-quantised here, only the pixels
    inside a polygon) or float32, NaN = no data; pixels [(pix, owner)] from
    `zonal_raster.pixel_owners` of n polygons -> Partial."""
    bands = values.shape[0]
    codes = values.dtype == np.int8
    count = np.zeros(n + 1, np.int64)  # bin n: pixels without data
    sums = np.zeros((bands, n + 1), np.float64)
    sumsq = np.zeros((bands, n + 1), np.float64) if squares else None
    kept = [[] for _ in range(n)] if keep_values else None
    for pix, owner in pixels:
        if keep_values:  # a polygon's pixels together, for its median
            order = np.argsort(owner, kind="stable")
            pix, owner = pix[order], owner[order]
        for s in range(0, len(pix), BLOCK):
            block = _gather(values, pix[s : s + BLOCK])  # (bands, k)
            if codes:
                bad = block.min(axis=0) == quantize.NODATA_CODE
            else:
                bad = np.isnan(np.add.reduce(block, axis=0, dtype=np.float32))
            who = np.where(bad, n, owner[s : s + BLOCK])
            count += np.bincount(who, minlength=n + 1)
            for b in range(bands):
                if codes:
                    index = block[b].view(np.uint8)
                    sums[b] += np.bincount(who, weights=_VALUE[index], minlength=n + 1)
                    if squares:
                        sumsq[b] += np.bincount(who, weights=_SQUARE[index], minlength=n + 1)
                else:
                    wide = block[b].astype(np.float64)
                    sums[b] += np.bincount(who, weights=wide, minlength=n + 1)
                    if squares:
                        sumsq[b] += np.bincount(who, weights=wide * wide, minlength=n + 1)
            if keep_values:
                ok = ~bad
                who, rows = who[ok], np.ascontiguousarray(block[:, ok].T)
                rows = quantize.dequantize(rows) if codes else rows.astype(np.float32, copy=False)
                if len(who) == 0:
                    continue
                starts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
                for i, part in zip(who[starts].tolist(), np.split(rows, starts[1:])):
                    kept[i].append(part)
    if keep_values:
        empty = np.empty((0, bands), np.float32)
        kept = [np.concatenate(k) if len(k) > 1 else k[0] if k else empty for k in kept]
    return Partial(
        count[:n],
        np.ascontiguousarray(sums[:, :n].T),
        None if sumsq is None else np.ascontiguousarray(sumsq[:, :n].T),
        kept,
    )


def finish(count, sums, sumsq, values, stats, bands) -> dict[str, np.ndarray]:
    """Counts (n,), sums (n, bands), ... -> {column: values} for the statistics asked."""
    out = {COUNT_COLUMN: count.astype(np.int64)}
    columns = stat_columns(stats, bands)
    n = np.maximum(count, 1)[:, None]
    empty = (count == 0)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / n
        for stat, names in columns.items():
            if stat == "mean":
                result = mean
            elif stat == "std":
                result = np.sqrt(np.maximum(sumsq / n - mean * mean, 0.0))
            else:  # median
                result = np.full(sums.shape, np.nan)
                for i, v in enumerate(values):
                    if len(v):
                        result[i] = np.median(v.astype(np.float64), axis=0)
            result = np.where(empty, np.nan, result).astype(np.float32)
            out.update({name: result[:, k] for k, name in enumerate(names)})
    return out


def _take(part: Partial, idx: np.ndarray) -> Partial:
    return Partial(
        part.count[idx],
        part.sum[idx],
        None if part.sumsq is None else part.sumsq[idx],
        None if part.values is None else [part.values[i] for i in idx.tolist()],
    )


def _join(parts: list[Partial]) -> Partial:
    return Partial(
        np.concatenate([p.count for p in parts]),
        np.concatenate([p.sum for p in parts]),
        None if parts[0].sumsq is None else np.concatenate([p.sumsq for p in parts]),
        None if parts[0].values is None else [v for p in parts for v in p.values],
    )


def _geometry(items) -> np.ndarray:
    """A group's polygons: shapely geometries, or their WKB (as `read_task_polygons` gives)."""
    import shapely

    items = np.asarray(items, dtype=object)
    if len(items) and isinstance(items[0], (bytes, bytearray)):
        return shapely.from_wkb(items)
    return items


def zonal_chunk(
    read_year,
    years,
    window,
    transform,
    fids,
    geometry,
    single,
    stats,
    bands,
    all_touched,
    keep=None,
    *,
    emit,
    group: int | None = None,
    frame=pd.DataFrame,
):
    """One chunk, every year: the polygons finished here -> `emit(frame)` (fid, year,
    pixel_count, stat columns; built by `frame` from a dict of arrays: a DataFrame, or pa.table
    for an Arrow table), a group of polygons and a year at a time; -> the Crossing of the
    polygons crossing chunks, or None.

    `read_year(year)` returns the chunk's stored values (bands, rows, cols): int8 codes or
    float32 (NaN = no data), band-first in memory or a view of a band-last array, read once a
    year; `window` is (row0, col0, rows, cols) in the grid whose affine is `transform`;
    `geometry`: shapely polygons or their WKB; `keep` (rows, cols) bool: only these pixels count
    (a collection's member: centre in its cell).

    The polygons are taken `group` (GROUP) at a time in their order: each group is rasterised
    into its own label images, kept only as (pixel, owner) arrays, and summed into (group x
    bands) arrays, so no temporary grows with the polygons in the chunk."""
    import affine

    from transforms.products.zonal_raster import pixel_owners

    group = group or GROUP
    row0, col0, h, w = window
    local = affine.Affine(*tuple(transform)[:6]) @ affine.Affine.translation(col0, row0)
    single = np.asarray(single, dtype=bool)
    fids = np.asarray(fids, dtype=np.int64)
    spans = [(a, min(a + group, len(fids))) for a in range(0, len(fids), group)]
    pixels = [
        pixel_owners(_geometry(geometry[a:b]), (h, w), local, all_touched, keep) for a, b in spans
    ]
    squares, median = "std" in stats, "median" in stats
    cross = np.flatnonzero(~single)
    partials = []  # per year: the crossing polygons' Partial
    for year in years:
        values = read_year(year)
        pieces = []
        for (a, b), found in zip(spans, pixels):
            part = polygon_sums(values, found, b - a, squares=squares, keep_values=median)
            idx = np.flatnonzero(single[a:b])
            if len(idx):
                done = _take(part, idx)
                emit(
                    frame(
                        {
                            "fid": fids[a + idx],
                            "year": np.full(len(idx), year, np.int16),
                            **finish(done.count, done.sum, done.sumsq, done.values, stats, bands),
                        }
                    )
                )
            away = np.flatnonzero(~single[a:b])
            if len(away):  # only the crossing polygons' sums are kept past this group
                pieces.append(_take(part, away))
            del part
        del values
        if len(cross):
            partials.append(_join(pieces))
    return Crossing.of(fids[cross], partials) if len(cross) else None


@dataclasses.dataclass
class Crossing:
    """The partial sums of polygons crossing chunks, as arrays (one element per chunk and polygon
    batch, never one per polygon): fids (k,), counts (years, k), sums and sums of squares
    (years, k, bands); for a median, per year the pixel values (m, bands) float32 and the index
    (m,) into fids of the polygon each row belongs to."""

    fids: np.ndarray
    count: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray | None
    values: list | None  # per year: (owner (m,) int64, rows (m, bands) float32)

    @classmethod
    def of(cls, fids, partials: list[Partial]) -> Crossing:
        """Polygons `fids`: one Partial of them per year (in the order of the years)."""
        values = None
        if partials[0].values is not None:
            values = []
            for p in partials:
                owner = np.repeat(np.arange(len(fids)), [len(r) for r in p.values])
                values.append((owner, np.concatenate(p.values)))
        return cls(
            fids,
            np.stack([p.count for p in partials]),
            np.stack([p.sum for p in partials]),
            None if partials[0].sumsq is None else np.stack([p.sumsq for p in partials]),
            values,
        )

    def split(self, batch: int) -> list[tuple[int, Crossing]]:
        """-> [(polygon batch, its polygons' Crossing)]: fid // batch is the batch."""
        which = self.fids // batch
        out = []
        for b in np.unique(which).tolist():
            idx = np.flatnonzero(which == b)
            values = None
            if self.values is not None:
                values = []
                remap = np.full(len(self.fids), -1, np.int64)
                remap[idx] = np.arange(len(idx))
                for owner, rows in self.values:
                    keep = remap[owner] >= 0
                    values.append((remap[owner][keep], rows[keep]))
            out.append(
                (
                    b,
                    Crossing(
                        self.fids[idx],
                        self.count[:, idx],
                        self.sum[:, idx],
                        None if self.sumsq is None else self.sumsq[:, idx],
                        values,
                    ),
                )
            )
        return out


def combine_crossing(parts, years, stats, bands) -> pd.DataFrame:
    """The Crossing partials of polygons from every chunk they touch -> their rows (fid, year,
    pixel_count, stat columns), one per polygon and year: counts and sums added exactly per
    polygon (np.add.reduceat over the partials sorted by fid), medians over the pixels of all."""
    parts = list(parts)
    fids = np.concatenate([p.fids for p in parts])
    order = np.argsort(fids, kind="stable")
    starts = np.flatnonzero(np.r_[True, fids[order][1:] != fids[order][:-1]])
    unique = fids[order][starts]

    def add(name):
        stacked = np.concatenate([getattr(p, name) for p in parts], axis=1)[:, order]
        return np.add.reduceat(stacked, starts, axis=1)

    count, sums = add("count"), add("sum")
    sumsq = add("sumsq") if "std" in stats else None
    frames = []
    for y, year in enumerate(years):
        values = None
        if "median" in stats:
            owner = np.concatenate([np.searchsorted(unique, p.fids[p.values[y][0]]) for p in parts])
            rows = np.concatenate([p.values[y][1] for p in parts])
            by = np.argsort(owner, kind="stable")
            cuts = np.searchsorted(owner[by], np.arange(1, len(unique)))
            values = np.split(rows[by], cuts)
        done = finish(count[y], sums[y], None if sumsq is None else sumsq[y], values, stats, bands)
        frames.append(
            pd.DataFrame({"fid": unique, "year": np.full(len(unique), year, np.int16), **done})
        )
    return pd.concat(frames, ignore_index=True)
