"""What the labelling page shows: windows of one year of a store, false colour, the k-NN preview.

A window is read chunk by chunk at a stride (one zarr read per chunk it touches, so memory holds
one decoded chunk plus the strided result), never the whole store: the page asks for about one
store pixel per screen pixel, and a request is refused ("zoom in") when the chunks it touches
would decode to more than `max_decoded_bytes`. Zarr decodes whole chunks, so the cost of a view is
the chunks it touches, whatever the stride.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import threading
import time

import numpy as np

from transforms.core.errors import InputError
from transforms.learning import models
from transforms.storage import store
from transforms.storage.readers import StoreInfo, StoreReader, valid_mask

MAX_DECODED_BYTES = (
    1 << 30
)  # per request: 4 float32 chunks of 1024 px, 16 int8 ones, all of a small store
MAX_READ_PIXELS = 1_500_000  # pixels returned per request (after the stride): 384 MiB of float32 bands; a 1920x1080 view reads every 2nd pixel
SAMPLE_PIXELS = 20_000  # pixels the PCA and the colour stretch are fitted on
SAMPLE_CHUNKS = 8  # at most this many chunks are read to find them
PREVIEW_MAX_PIXELS = (
    1_000_000  # the preview of a larger view takes every 2nd (3rd, ...) pixel of the image's grid
)
NEIGHBOURS = 5  # k of the preview's k-NN (fewer while a class has fewer points: `neighbours`): the registry's default
NO_CLASS = 255  # preview value where the store has no data


class ZoomIn(ValueError):
    """A view too large to read at once."""


@dataclasses.dataclass(frozen=True)
class Window:
    """Rows row0 .. row0+rows-1 (and cols) of the store, read every `step` pixels from row0/col0."""

    row0: int
    col0: int
    rows: int
    cols: int
    step: int

    @property
    def shape(self) -> tuple[int, int]:
        return -(-self.rows // self.step), -(-self.cols // self.step)


class StoreView:
    """One year of a store as the page sees it (thread-safe: the server's threads share one)."""

    def __init__(
        self,
        info: StoreInfo,
        year: int,
        *,
        max_decoded_bytes: int = MAX_DECODED_BYTES,
        seed: int = 0,
    ):
        self.info = info
        self.year = year
        self.time_index = info.time_index(year)
        self.reader = StoreReader(info.path)
        self.max_decoded_bytes = max_decoded_bytes
        itemsize = np.dtype(info.dtype).itemsize
        self.chunk_bytes = info.chunk_rows * info.chunk_cols * len(info.bands) * itemsize
        self._lock = threading.Lock()
        self._windows: collections.OrderedDict = (
            collections.OrderedDict()
        )  # Window -> float32 values (last few)
        self._prepared: collections.OrderedDict = (
            collections.OrderedDict()
        )  # (Window, s) -> valid pixels for the k-NN
        self._vectors: dict[tuple[int, int], np.ndarray] = {}
        self._fit_colours(seed)
        models.make_classifier(
            "knn"
        )  # imports scikit-learn now, not at the first click (a second, cold)

    # ------------------------------------------------------------ reading

    def clamp(self, row0: int, col0: int, rows: int, cols: int, step: int) -> Window:
        """The part of a requested window inside the store, with the stride raised to the pixel cap."""
        r0, c0 = max(0, int(row0)), max(0, int(col0))
        r1, c1 = (
            min(self.info.height, int(row0) + int(rows)),
            min(self.info.width, int(col0) + int(cols)),
        )
        if r1 <= r0 or c1 <= c0:
            raise ZoomIn("the view is outside the store")
        step = max(1, int(step))
        while -(-(r1 - r0) // step) * -(-(c1 - c0) // step) > MAX_READ_PIXELS:
            step += 1
        return Window(r0, c0, r1 - r0, c1 - c0, step)

    def chunks_touched(self, w: Window) -> int:
        cr, cc = self.info.chunk_rows, self.info.chunk_cols
        return ((w.row0 + w.rows - 1) // cr - w.row0 // cr + 1) * (
            (w.col0 + w.cols - 1) // cc - w.col0 // cc + 1
        )

    def read(self, w: Window) -> np.ndarray:
        """(h, w, bands) float32 of the window at its stride, NaN = no data; the last few are cached."""
        with self._lock:
            if w in self._windows:
                self._windows.move_to_end(w)
                return self._windows[w]
            n = self.chunks_touched(w)
            if n * self.chunk_bytes > self.max_decoded_bytes:
                cap = max(1, self.max_decoded_bytes // self.chunk_bytes)
                raise ZoomIn(
                    f"zoom in: this view touches {n} chunks, more than the {cap} read at once"
                )
            values = self._read_by_chunk(w)
            self._windows[w] = values
            while (
                len(self._windows) > 2
            ):  # the view on screen and the one before it (at most 768 MiB)
                self._windows.popitem(last=False)
            return values

    def _read_by_chunk(self, w: Window) -> np.ndarray:
        cr, cc, s = self.info.chunk_rows, self.info.chunk_cols, w.step
        out = np.full(w.shape + (len(self.info.bands),), np.nan, dtype=np.float32)
        r_end, c_end = w.row0 + w.rows, w.col0 + w.cols
        for chunk_r in range(w.row0 // cr, (r_end - 1) // cr + 1):
            # first row of the stride grid (row0 + k*step) inside this chunk
            ra = max(w.row0, chunk_r * cr)
            ra = w.row0 + -(-(ra - w.row0) // s) * s
            rb = min(r_end, (chunk_r + 1) * cr)
            if ra >= rb:
                continue
            for chunk_c in range(w.col0 // cc, (c_end - 1) // cc + 1):
                ca = max(w.col0, chunk_c * cc)
                ca = w.col0 + -(-(ca - w.col0) // s) * s
                cb = min(c_end, (chunk_c + 1) * cc)
                if ca >= cb:
                    continue
                block = store.as_float(
                    self.reader.read_codes(self.time_index, slice(ra, rb, s), slice(ca, cb, s))
                )
                i, j = (ra - w.row0) // s, (ca - w.col0) // s
                out[i : i + block.shape[0], j : j + block.shape[1]] = block
        return out

    def _pixels(self, w: Window, s: int) -> tuple[np.ndarray, np.ndarray]:
        """The valid pixels of read(w)[::s, ::s], contiguous (flat mask, (n, bands)): prepared once per
        view, so a click costs only the k-NN."""
        key = (w, s)
        with self._lock:
            if key in self._prepared:
                return self._prepared[key]
        values = self.read(w)[::s, ::s]
        flat = values.reshape(-1, values.shape[-1])
        valid = valid_mask(flat)
        prepared = (valid, np.ascontiguousarray(flat[valid]))
        with self._lock:
            self._prepared[key] = prepared
            while len(self._prepared) > 1:
                self._prepared.popitem(last=False)
        return prepared

    def vector(self, row: int, col: int) -> np.ndarray:
        """The embedding of one pixel (float32, NaN = no data); cached, as a point is read once."""
        key = (int(row), int(col))
        with self._lock:
            if key not in self._vectors:
                codes = self.reader.read_codes(
                    self.time_index, slice(key[0], key[0] + 1), slice(key[1], key[1] + 1)
                )
                self._vectors[key] = store.as_float(codes)[0, 0]
            return self._vectors[key]

    # ------------------------------------------------------------ colour

    def _sample(self, seed: int) -> np.ndarray:
        """Up to SAMPLE_PIXELS valid pixels from up to SAMPLE_CHUNKS chunks spread over the store."""
        rng = np.random.default_rng(seed)
        windows = self.info.windows()
        order = np.unique(
            np.linspace(0, len(windows) - 1, min(len(windows), SAMPLE_CHUNKS)).round().astype(int)
        )
        picked = []
        for k in order:
            win = windows[k]
            values = self.reader.read(self.time_index, win).reshape(-1, len(self.info.bands))
            values = values[valid_mask(values)]
            take = min(len(values), SAMPLE_PIXELS // len(order) + 1)
            if take:
                picked.append(values[rng.choice(len(values), take, replace=False)])
        if not picked:  # the chunks spread over the store hold nothing: look at every chunk, stop at the first data
            for win in windows:
                values = self.reader.read(self.time_index, win).reshape(-1, len(self.info.bands))
                values = values[valid_mask(values)]
                if len(values):
                    picked.append(
                        values[
                            rng.choice(len(values), min(len(values), SAMPLE_PIXELS), replace=False)
                        ]
                    )
                    break
        if not picked:
            raise InputError(
                "--year",
                f"{self.info.path} holds no data in {self.year}; pick another year ({', '.join(map(str, self.info.years))})",
            )
        return np.concatenate(picked).astype(np.float64)

    def _fit_colours(self, seed: int) -> None:
        """PCA (3 components) and a 2-98 % stretch of every band and component, fitted on a sample:
        fixed for the session, so colours do not change as the user pans."""
        sample = self._sample(seed)
        self.pca_mean = sample.mean(axis=0)
        _, _, vt = np.linalg.svd(sample - self.pca_mean, full_matrices=False)
        signs = np.sign(vt[:3].sum(axis=1, keepdims=True))  # SVD's signs are arbitrary: fix them
        self.pca_components = (vt[:3] * np.where(signs == 0, 1, signs)).astype(np.float32)
        projected = (sample - self.pca_mean) @ self.pca_components.T
        self.pca_range = np.percentile(projected, [2, 98], axis=0)
        self.band_range = np.percentile(sample, [2, 98], axis=0)
        self.sample_size = len(sample)

    def colour(self, values: np.ndarray, bands: list[int] | None = None) -> np.ndarray:
        """(h, w, bands) -> (h, w, 4) uint8: three principal components, or three bands; no data transparent."""
        valid = valid_mask(values)
        clean = np.where(valid[..., None], values, 0)
        if bands is None:
            channels = (clean - self.pca_mean.astype(np.float32)) @ self.pca_components.T
            low, high = self.pca_range
        else:
            channels = clean[..., bands]
            low, high = self.band_range[:, bands]
        scaled = np.clip((channels - low) / np.where(high > low, high - low, 1), 0, 1)
        rgba = np.zeros(values.shape[:2] + (4,), dtype=np.uint8)
        rgba[..., :3] = (scaled * 255).round().astype(np.uint8)
        rgba[..., 3] = np.where(valid, 255, 0)
        return rgba

    def png(self, w: Window, bands: list[int] | None = None) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.colour(self.read(w), bands), "RGBA").save(
            buffer, "PNG", compress_level=1
        )
        return buffer.getvalue()

    # ------------------------------------------------------------ preview

    def preview(self, w: Window, points: list[tuple[int, int, int]]) -> dict:
        """k-NN (the registry's "knn", k = `neighbours`) trained on the points' embeddings,
        predicted on every pixel of the window (every `s`-th one of its grid past PREVIEW_MAX_PIXELS):
        class indices, NO_CLASS where there is no data; "window" is the grid predicted.

        points: (row, col, class index). Points on no data are left out (counted)."""
        started = time.perf_counter()
        vectors, labels, skipped = [], [], 0
        for row, col, label in points:
            v = self.vector(row, col)
            if np.isnan(v).any():
                skipped += 1
                continue
            vectors.append(v)
            labels.append(int(label))
        if len(set(labels)) < 2:
            return {
                "classes": None,
                "skipped": skipped,
                "reason": "points of two classes (on data) are needed",
            }
        model = models.make_classifier("knn", {"n_neighbors": neighbours(labels)})
        model.fit(np.stack(vectors), np.array(labels))
        s = 1
        while -(-w.shape[0] // s) * -(-w.shape[1] // s) > PREVIEW_MAX_PIXELS:
            s += 1
        grid = Window(
            w.row0, w.col0, w.rows, w.cols, w.step * s
        )  # a subset of the image's grid: read(w)[::s, ::s]
        valid, pixels = self._pixels(w, s)
        out = np.full(len(valid), NO_CLASS, dtype=np.uint8)
        if len(pixels):
            out[valid] = knn_predict(model, pixels)
        return {
            "classes": out.reshape(grid.shape),
            "window": grid,
            "skipped": skipped,
            "k": model.n_neighbors,
            "seconds": time.perf_counter() - started,
        }


def knn_predict(model, values: np.ndarray, tolerance: float = 3e-5) -> np.ndarray:
    """What `model.predict(values)` (a fitted uniform-weight euclidean KNeighborsClassifier) gives,
    several times faster on a screen of pixels and few points: one float32 matrix product instead
    of scikit-learn's float64 distance reduction, then the same vote (the most frequent class; the
    smallest label on a tie, as scikit-learn's argmax). Where the (k+1)-th nearest point lies within
    `tolerance` of the k-th (squared distance, relative to the vectors' norms), float32 rounding
    could choose another neighbour set than scikit-learn's float64, so those pixels (ties, and few
    others) are predicted by the model itself: the result equals model.predict. (A float32 dot
    product of 64 terms errs by at most 64 * 2**-24 * |x||t| = 3.8e-6 |x||t|; a difference of two
    squared distances by four times that: the tolerance is twice the worst case.)
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(
        1
    ):  # a skinny product, a few pixels for scikit-learn: threads gain little, and stall on a busy machine
        return _knn_predict(model, values, tolerance)


def _knn_predict(model, values: np.ndarray, tolerance: float) -> np.ndarray:
    train = model._fit_X.astype(np.float32)
    codes = model._y  # indices into model.classes_
    k = model.n_neighbors
    # ||x - t||^2 = ||x||^2 - 2 x.t + ||t||^2: ||x||^2 is the same for every t, so it is left out of the
    # ranking. One row per point, contiguous over the pixels: every step below is a vector operation.
    sq = np.einsum("ij,ij->i", train, train)
    d = train @ values.T
    d *= -2
    d += sq[:, None]
    kth, after = _kth_and_next(d, k)
    # a (k+1)-th point within the tolerance of the k-th could take its place in float64
    norm_bound = np.sqrt(np.einsum("ij,ij->i", values, values).max() * sq.max())
    unsure = (after - kth) <= tolerance * (1 + norm_bound)
    within = d <= kth  # elsewhere exactly the k nearest
    best_votes, predicted = None, None
    for code in range(
        len(model.classes_)
    ):  # ascending: on equal votes the smaller label stays, as argmax
        votes = within[codes == code].sum(axis=0, dtype=np.int16)
        if best_votes is None:
            best_votes, predicted = votes, np.zeros(len(values), dtype=np.intp)
        else:
            better = votes > best_votes
            best_votes = np.where(better, votes, best_votes)
            predicted[better] = code
    predicted = model.classes_[predicted]
    if unsure.any():
        predicted[unsure] = model.predict(values[unsure])
    return predicted


def _kth_and_next(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column of d (points x pixels): the k-th and (k+1)-th smallest values. Few points: the k+1
    smallest kept sorted by insertion, whole rows at a time; many: numpy's partition."""
    if len(d) * (k + 1) > 400:
        part = np.partition(d, (k - 1, k), axis=0)
        return part[k - 1], part[k]
    best = np.full((k + 1, d.shape[1]), np.inf, dtype=d.dtype)
    for row in d:
        carry = row
        for i in range(k + 1):
            low = np.minimum(best[i], carry)
            carry = np.maximum(best[i], carry)
            best[i] = low
    return best[k - 1], best[k]


def neighbours(labels: list[int]) -> int:
    """The preview's k: 5 (efm train's default), or fewer while a class has fewer points, so that
    every class can win a pixel (k = the smallest class's count: 1-NN with one point of a class)."""
    return min(NEIGHBOURS, min(collections.Counter(labels).values()))


def default_year(info: StoreInfo, year: int | None) -> int:
    if year is None:
        return info.years[-1]
    if year not in info.years:
        raise InputError(
            "--year", f"{info.path} has no year {year}; it holds {', '.join(map(str, info.years))}"
        )
    return year
