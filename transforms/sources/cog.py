"""The public int8 COG mirror as a tile source: index look-up, windowed reads, mosaic.

The mirror is laid out as `<root>/<year>/<zone, e.g. 10N>/<name>.tiff` (8192 x 8192 px,
64 int8 bands, nodata -128) with an index table next to the year folders
(`aef_index.parquet`, `.gpkg` or `.csv`) that lists every file's footprint. Files are
found through that index only: the bucket is never listed.

For each request tile of a chunk, `CogSource.fetch`:

1. picks the files of the chunk's year whose footprint intersects the tile (from the
   index rows the launcher selected for the grid, so workers never read the index);
2. reads only the stored blocks under the tile, each decoded once per process while the
   chunks that share it are near (`cog_blocks`: a shared cache of decoded blocks). When the
   file lies on the target grid (same CRS, same pixel size, aligned: the "native" grid), the
   window is copied as is, so int8 codes reach an int8 store bit for bit. Otherwise each
   target pixel takes the codes of the source pixel under its centre (nearest neighbour,
   -128 = no data), then de-quantised;
3. mosaics: files in the grid's own CRS first, then the others; each pixel takes the
   first file that has data there;
4. returns int8 codes for an int8 store, or float32 de-quantised in float64 for a
   float32 store (NaN = no data).

What it read is counted (`grid_source.count_read`) as the compressed size of each block it
decoded, from the TIFF's tile byte counts: the summary's "transferred" is bytes of the files,
not the area's pixels (a tile outside every file reads nothing).

Rows are never assumed to run top-down: some mirrors store them bottom-up (positive
y resolution); the geotransform says which and the reader flips.

Remote roots (`gs://`, `s3://`, `https://`, any fsspec URL) are read through fsspec file
objects handed to GDAL (`rasterio.open(..., opener=fs)`): credentials follow each fsspec
backend's usual rules, anonymous access included (`FSSPEC_GCS_TOKEN=anon`; s3:// is
anonymous unless credentials are found, see `remote_fs`).

The index and paths are in `cog_index`, the reads of one file and the mosaic in
`cog_read`; this module holds the source itself (open files, errors, retries).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import typing
import uuid

import numpy as np

from transforms.core import quantize
from transforms.core.chunks import ChunkSpec
from transforms.core.errors import first_line
from transforms.core.grid import Grid, Window
from transforms.sources import grid_source, remote_fs
from transforms.sources.cog_blocks import BlockCache, Layout, compressed_bytes, read_block
from transforms.sources.cog_index import CogFile, files_for_grid
from transforms.sources.cog_paths import filesystem, is_remote
from transforms.sources.cog_read import (
    MOSAIC_RULE,
    RESAMPLING,
    band_indexes,
    mosaic_into,
    read_into_grid,
)
from transforms.sources.fetch import RetryableError
from transforms.sources.grid_source import GridSource

HANDLES_PER_THREAD = 16  # open datasets kept per fetch thread (LRU)
BLOCK_CACHE_BYTES = (
    512 * 2**20
)  # decoded blocks kept per process (8 of the mirror's 1024 px x 64 band blocks)
# GDAL settings for every read: never list a folder (the index says where files are),
# never look for side-car files; a small block cache of GDAL's own (64 MB): blocks are kept,
# decoded once, in `cog_blocks`, and GDAL's default (5 % of RAM) held a second copy of them
# (peak RSS of efm extract at 16x the benchmark area: 3.0 GiB with it).
GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_PAM_ENABLED": "NO",
    "GDAL_NUM_THREADS": "1",
    "GDAL_CACHEMAX": 64 * 2**20,
}


class _Handles(threading.local):
    """Open datasets of one fetch thread (rasterio datasets are not shared across threads)."""

    def __init__(self):
        self.open: collections.OrderedDict = collections.OrderedDict()
        self.env = None


@dataclasses.dataclass
class CogSource(GridSource):
    """Tiles of the int8 COG mirror, read window by window through the index.

    `files` are the index rows that meet the grid (see `files_for_grid`), chosen on the
    launcher, so workers never read the index nor list the bucket.
    """

    counts_reads: typing.ClassVar[bool] = True  # (grid_source.count_read)

    root: str = ""
    files: tuple[CogFile, ...] = ()
    transfer_itemsize: int = 1  # the mirror stores int8
    block_cache_bytes: int = BLOCK_CACHE_BYTES
    # Names this source's blocks in the process-wide cache: every copy of one source (one per
    # DoFn instance) shares its decoded blocks; another run never sees them (files may change).
    run_token: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

    def setup(self) -> None:
        import rasterio.crs

        self._handles = _Handles()
        self._blocks = BlockCache.for_capacity(self.block_cache_bytes)
        self._layouts: dict[str, Layout] = {}
        self._grid_crs = rasterio.crs.CRS.from_user_input(self.grid.crs)
        self._by_year: dict[int, list[CogFile]] = collections.defaultdict(list)
        for f in self.files:
            self._by_year[f.year].append(f)
        self._fs = filesystem(self.root)[0] if is_remote(self.root) else None

    def __getstate__(self):  # never pickle open datasets, thread-locals or filesystems
        state = dict(self.__dict__)
        for key in ("_handles", "_grid_crs", "_by_year", "_fs", "_blocks", "_layouts"):
            state.pop(key, None)
        return state

    def _open(self, path: str):
        import rasterio

        handles = self._handles
        if handles.env is None:
            handles.env = rasterio.Env(**GDAL_ENV)
            handles.env.__enter__()  # per thread, for the thread's life
        if path in handles.open:
            handles.open.move_to_end(path)
            return handles.open[path]
        if self._fs is not None:
            ds = rasterio.open(filesystem(path)[1], opener=self._fs)
        else:
            ds = rasterio.open(path.removeprefix("file://"))
        handles.open[path] = ds
        while len(handles.open) > HANDLES_PER_THREAD:
            _, old = handles.open.popitem(last=False)
            old.close()
        return ds

    def _forget(self, path: str) -> None:
        self._blocks.forget(path)
        ds = self._handles.open.pop(path, None)
        if ds is not None:
            try:
                ds.close()
            except Exception:
                pass

    def _remote_missing(self, path: str) -> bool:
        try:
            return not remote_fs.exists(
                self._fs, filesystem(path)[1]
            )  # http: unreachable raises, not "absent"
        except Exception:  # cannot tell now: let the retry find out
            return False

    def plan(self, spec: ChunkSpec) -> list[Window]:
        """One read per chunk (the mirror has no request-size limit): each block it needs is read once."""
        if self.request_tile_size:
            return super().plan(spec)
        return [spec.window]

    takes_wanted: typing.ClassVar[bool] = True  # fetch(..., wanted=): zone_mask.ZoneMask

    def fetch(self, spec: ChunkSpec, tile: Window, wanted: np.ndarray | None = None) -> np.ndarray:
        """The tile's codes (or values); with `wanted` ((rows, cols) bool), only blocks under
        wanted pixels are decoded and the others may be left no data (a zone's seam)."""
        left, bottom, right, top = self.grid.window_bounds(tile)
        codes, need = None, wanted
        for f in self._by_year.get(spec.year, ()):
            if not f.intersects((left, bottom, right, top)):
                continue
            part = self._read(f, left, top, tile.rows, tile.cols, need)
            if part is None:
                continue
            if codes is None:
                codes = part  # the first file's read is the tile: no copy
            else:
                mosaic_into(codes, part)
            need = codes[..., 0] == quantize.NODATA_CODE  # what the next files may fill
            if wanted is not None:
                need &= wanted
            if not need.any():
                break
        if codes is None:
            codes = np.full(
                (tile.rows, tile.cols, len(self.bands)), quantize.NODATA_CODE, dtype=np.int8
            )
        if np.dtype(self.store_dtype) == np.int8:
            return codes
        return quantize.dequantize(codes)

    def _read(
        self,
        f: CogFile,
        left: float,
        top: float,
        rows: int,
        cols: int,
        need: np.ndarray | None = None,
    ) -> np.ndarray | None:
        import rasterio.errors

        try:
            ds = self._open(f.path)
            layout = self._layouts.get(f.path) or self._layouts.setdefault(f.path, Layout.of(ds))
            indexes = band_indexes(ds.descriptions, ds.count, self.bands)

            def load(block_row: int, block_col: int) -> np.ndarray:
                handle = self._open(f.path)
                data = read_block(handle, layout, indexes, block_row, block_col)
                size = compressed_bytes(handle, indexes, block_row, block_col)
                grid_source.count_read(data.nbytes if size is None else size)
                return data

            def block(block_row: int, block_col: int, wait: bool = True) -> np.ndarray | None:
                key = (f.path, self.run_token, tuple(indexes), block_row, block_col)
                return self._blocks.get(key, lambda: load(block_row, block_col), wait)

            return read_into_grid(
                layout, block, ds.crs, self._grid_crs, self.grid.scale, left, top, rows, cols, need
            )
        except FileNotFoundError as exc:
            self._forget(f.path)
            raise FileNotFoundError(
                f"{f.path} is listed in the index but does not exist: {first_line(exc)}"
            ) from None
        except (rasterio.errors.RasterioIOError, OSError, TimeoutError, ConnectionError) as exc:
            self._forget(f.path)
            if not is_remote(f.path):  # a local file that cannot be read will not get better
                if not _local_exists(f.path):
                    raise FileNotFoundError(
                        f"{f.path} is listed in the index but does not exist"
                    ) from None
                raise OSError(f"cannot read {f.path}: {first_line(exc)}") from exc
            if self._remote_missing(f.path):
                raise FileNotFoundError(
                    f"{f.path} is listed in the index but does not exist"
                ) from None
            raise RetryableError(f"{f.path}: {first_line(exc)}") from exc
        except Exception as exc:
            if is_remote(f.path) and _looks_transient(exc):
                self._forget(f.path)
                raise RetryableError(f"{f.path}: {type(exc).__name__}: {first_line(exc)}") from exc
            raise


def _local_exists(path: str) -> bool:
    import os

    return os.path.exists(path.removeprefix("file://"))


def _looks_transient(exc: BaseException) -> bool:
    """Network-library errors (aiohttp, requests, gcsfs HttpError 429/5xx) are worth a retry."""
    module = type(exc).__module__ or ""
    if module.startswith(("aiohttp", "requests", "urllib3", "http.client")):
        return True
    code = getattr(exc, "code", None) or getattr(exc, "status", None)
    try:
        return int(code) == 429 or int(code) >= 500
    except (TypeError, ValueError):
        return False


def make_source(
    grid: Grid,
    years: list[int],
    bands: tuple[str, ...],
    store_dtype: str,
    root: str,
    index,
    request_tile_size: int | None = None,
    block_cache_bytes: int = BLOCK_CACHE_BYTES,
    run_token: str | None = None,
) -> CogSource:
    """The source for a planned grid, given the index rows `check_cog_root` returned.
    `run_token`: shared by the sources of one run (a collection's zones), so a block one zone
    decoded serves the other from the process's cache (the files are the same)."""
    extra = {"run_token": run_token} if run_token else {}
    return CogSource(
        grid=grid,
        years=tuple(years),
        bands=tuple(bands),
        store_dtype=store_dtype,
        transfer_itemsize=1,
        request_tile_size=request_tile_size,
        root=root,
        files=files_for_grid(index, grid),
        block_cache_bytes=block_cache_bytes,
        **extra,
    )


def store_attrs(root: str, index=None) -> dict:
    """What an extraction from the mirror records in the store's attrs.

    `cog_root` is where the mirror is (`cog_paths.canonical`: a local folder's real path, a
    remote root's canonical URL), `cog_root_given` the spelling the run was given; with the
    index rows `check_cog_root` returned, the fingerprint of what was read (`cog_index`,
    `cog_index_bytes`, `cog_index_sha256`, `cog_files`, `cog_files_sha256`), which `--resume`
    compares (transforms/storage/resume.py).
    """
    from transforms.sources.cog_paths import canonical

    record = dict(index.attrs.get("source_record", {})) if index is not None else {}
    place = record.get("cog_root", canonical(root))
    return {
        "source": f"cog:{place}",
        "cog_root": place,
        "cog_root_given": root,
        **record,
        "resampling": RESAMPLING,
        "mosaic": MOSAIC_RULE,
        "dequantization": quantize.FORMULA,
    }
