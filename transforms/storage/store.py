"""The embedding store (see the data contract in docs/data-contract.md).

Zarr format 2 with consolidated metadata, on purpose: one read opens a store on GCS, and
every reader we care about (xarray, rioxarray via xarray, zarr-python 2 and 3, GDAL's Zarr
driver) reads it. GDAL reads it with its CRS and geotransform because the band names are
fixed-width unicode (it refuses object arrays) and x/y carry CF axis attributes; stores also
carry the GeoZarr `proj:`/`spatial:` attributes (transforms/storage/geozarr.py; tests/test_geozarr.py
opens them with GDAL 3.6's command-line tools and rasterio's GDAL 3.10). Completeness is explicit: the group attribute `efm_status` is
"incomplete" from set-up until every planned chunk has been written; each written chunk
leaves a marker under `.efm/done/`, which is what `--resume` trusts (a chunk of all
no-data is not stored by Zarr, so the chunk files alone cannot tell).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

import apache_beam as beam
import fsspec
import numpy as np
import xarray as xr
import xarray_beam as xbeam

from transforms.core import quantize
from transforms.core.chunks import MARKER_DIR  # noqa: F401  (store.MARKER_DIR: where a chunk is recorded as written)
from transforms.core.errors import InputError
from transforms.core.grid import Grid
from transforms.core.metrics import METRICS_NAMESPACE
from transforms.storage import geozarr, integrity, zarr_direct

ZARR_FORMAT = zarr_direct.ZARR_FORMAT  # what new stores are written in; every reader takes 2 or 3
STATUS_ATTR = "efm_status"
LICENSE = "CC-BY-4.0"
ATTRIBUTION = (
    "The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google DeepMind; "
    "licensed CC-BY 4.0."
)


def tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("efm-pipelines")
    except Exception:  # running from a source tree that is not installed
        return "0+unknown"


def embedding_template(
    grid: Grid, years: list[int], bands: Iterable[str], dtype: str, chunk_size: int, attrs: dict
) -> xr.Dataset:
    """A lazy (dask) Dataset with the store's full shape, coords, CRS and attrs, in the
    geo-embedding convention's layout: `embedding (time, band, y, x)`, time as int32 years
    (as the public AEF mosaic and TESSERA's store), one dask chunk = one shard = one write."""
    import dask.array as da
    import rioxarray  # noqa: F401  (registers .rio)

    bands = list(bands)
    shape = (len(years), len(bands), grid.height, grid.width)
    data = da.full(
        shape,
        quantize.fill_value(dtype),
        dtype=dtype,
        chunks=(1, len(bands), chunk_size, chunk_size),
    )
    ds = xr.Dataset(
        {"embedding": (("time", "band", "y", "x"), data)},
        coords={
            "time": np.array(years, dtype=np.int32),
            "y": np.array(grid.y_centres(), dtype=np.float64),
            "x": np.array(grid.x_centres(), dtype=np.float64),
            "band": band_coord(bands),
        },
    )
    ds["time"].attrs.update(
        long_name="year"
    )  # an integer year, as the convention says (no CF units)
    ds = ds.rio.write_crs(grid.crs).rio.write_transform(grid.transform)
    ds["embedding"].encoding.pop("grid_mapping", None)
    ds["embedding"].attrs.update(
        grid_mapping="spatial_ref", long_name="satellite embedding", units="1"
    )
    ds.attrs.update(attrs)
    ds.attrs.update(
        {
            "crs": grid.crs,
            "scale": grid.scale,
            "years": list(years),
            "chunk_size": chunk_size,
            "license": LICENSE,
            "attribution": ATTRIBUTION,
            "efm_version": tool_version(),
            "efm_product": "embeddings",  # what `--overwrite` may replace (transforms/storage/outputs.py)
            STATUS_ATTR: "incomplete",
        }
    )
    ds.attrs.update(geozarr.embedding_attrs(len(bands), dtype, grid.scale))
    if np.dtype(dtype) == np.int8:
        ds["embedding"].attrs["quantization"] = ds.attrs["quantization"] = quantize.FORMULA
    return geozarr.annotate(
        ds
    )  # GeoZarr proj:/spatial: attrs, x/y CF axis attrs (transforms/storage/geozarr.py)


def band_coord(bands: Iterable[str]) -> np.ndarray:
    """Band names as fixed-width unicode (`<U3`): GDAL's Zarr driver cannot read an object (`|O`) array.

    Stores written before this held them as object strings; every reader takes either (`str(b)`).
    """
    bands = [str(b) for b in bands]
    return np.array(bands, dtype=f"<U{max(map(len, bands), default=1)}")


def _fs(path: str):
    fs, root = fsspec.core.url_to_fs(path)
    return fs, root.rstrip("/")


def exists(path: str) -> bool:
    fs, root = _fs(path)
    return fs.exists(root)


def done_markers(path: str) -> set[str]:
    fs, root = _fs(path)
    fs.invalidate_cache()
    directory = f"{root}/{MARKER_DIR}"
    if not fs.exists(directory):
        return set()
    return {name.rsplit("/", 1)[-1] for name in fs.ls(directory, detail=False)}


def drop_markers(path: str, markers: Iterable[str]) -> None:
    """Un-mark chunks as written (`efm extract --resume --repair`): the store is marked incomplete first,
    so an interruption never leaves a store that says complete with chunks unmarked."""
    markers = list(markers)
    if not markers:
        return
    set_status(path, "incomplete")
    fs, root = _fs(path)
    for marker in markers:
        fs.rm_file(f"{root}/{MARKER_DIR}/{marker}")


def prepare(
    path: str, template: xr.Dataset, *, resume: bool, overwrite: bool, flag: str = "--output"
) -> set[str]:
    """Create the store (or reopen it for --resume). Returns the markers of chunks already done.

    Never writes anything when it refuses: an existing store is resumed only where this run
    would write the same place (transforms/storage/resume.py) and replaced only if it is efm's store of
    the same kind, holding nothing else (transforms/storage/outputs.py); only its own files are deleted.
    Call it after every other check of the command: with --overwrite, the old store is removed here.
    `path` is used where it really is (outputs.resolve: a link to a store replaces the store, the link
    stays). A setup that fails removes what it wrote, so nothing blocks the re-run.
    """
    from transforms.storage import outputs

    kind = template.attrs.get("efm_product", "embeddings")
    found = outputs.check_output(path, kind, resume=resume, overwrite=overwrite, flag=flag)
    path = found.path or outputs.resolve(path)
    if found.kind is not None:
        if resume:
            check_resume(path, template)
            return done_markers(path)
        outputs.remove(path, kind, flag, found)
    try:
        setup(path, template)
    except BaseException:
        _undo_setup(path)
        raise
    return set()


def _undo_setup(path: str) -> None:
    """Remove what a failed `setup` wrote at `path` (which held nothing of anyone's before it)."""
    from transforms.storage import outputs, places

    fs, root = _fs(path)
    try:
        found = outputs.inspect(path, "embeddings")
        if found.links or found.is_file:
            return  # not ours to clean
        for f in sorted(
            found.files + found.foreign,
            key=lambda f: f.endswith((".zattrs", ".zgroup", "zarr.json")),
        ):
            fs.rm_file(f"{root}/{f}")
        if not places.is_remote(path):  # empty folders it made (the output folder itself stays)
            for directory, _, _ in sorted(os.walk(root), key=lambda item: -len(item[0])):
                if directory != root and not os.listdir(directory):
                    os.rmdir(directory)
    except Exception:  # best effort: the failure that brought us here is the one to report
        pass


def check_resume(path: str, template: xr.Dataset) -> None:
    """Refuse (InputError, one line) to resume an existing store where this run would write elsewhere."""
    from transforms.storage import resume as resume_check

    with zarr_direct.quiet():
        existing = xr.open_zarr(path, consolidated=True, mask_and_scale=False)  # stored dtypes
    resume_check.check(path, existing, template)


def setup(path: str, template: xr.Dataset) -> None:
    """Write metadata and coords (not the chunks): the store exists, marked incomplete."""
    variable = next(iter(template.data_vars))
    chunks = dict(zip(template[variable].dims, template[variable].data.chunksize))
    # Each variable's fill: its template encoding's _FillValue if set (e.g. a uint8 class map), else the contract's.
    fills = {
        name: template[name].encoding.get("_FillValue", quantize.fill_value(template[name].dtype))
        for name in template.data_vars
    }
    zarr_direct.create(
        path, template, chunks, fills
    )  # what xbeam.setup_zarr writes, without its dask graph


def set_status(path: str, status: str, **extra_attrs) -> None:
    import zarr

    group = zarr.open_group(path, mode="r+")  # the store's own format (a resumed v2 store stays v2)
    group.attrs.update({STATUS_ATTR: status, **extra_attrs})
    zarr_direct.consolidate(path)


class _WriteChunkFn(beam.DoFn):
    def __init__(self, path: str, template: xr.Dataset):
        self.path = path
        self.template = template
        self.written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "chunks_written")

    def setup(self):
        self.fs, self.root = _fs(self.path)
        self.fs.makedirs(f"{self.root}/{MARKER_DIR}", exist_ok=True)  # local paths need the folder
        variable = next(iter(self.template.data_vars))
        self.zarr_chunks = dict(
            zip(self.template[variable].dims, self.template[variable].data.chunksize)
        )
        self.writer = zarr_direct.ChunkWriter(self.path, self.template, self.zarr_chunks)

    def process(self, element):
        key, chunk = element
        if (
            "time" in chunk.coords
            and self.template["time"].dtype.kind in "iu"
            and chunk["time"].dtype.kind == "M"
        ):  # sources label years as dates; the store (the convention) as int years
            chunk = chunk.assign_coords(
                time=chunk["time"].dt.year.values.astype(self.template["time"].dtype)
            )
        xbeam.validate_zarr_chunk(
            key, chunk, self.template, self.zarr_chunks
        )  # coords: the chunk's place
        records = self.writer.write(
            key.offsets, chunk
        )  # what xbeam.write_chunk_to_zarr does, without reopening the store per chunk
        o = key.offsets
        name = f"{o.get('time', 0)}.{o['y']}.{o['x']}"  # == ChunkSpec.marker (a (y, x) product: time 0)
        self.fs.pipe_file(  # only after the chunk is in place; it records what was written
            f"{self.root}/{MARKER_DIR}/{name}", integrity.marker_bytes(records)
        )  # (transforms/storage/integrity.py: a deleted or truncated chunk file is then an error)
        self.written.inc()
        yield name


@dataclasses.dataclass
class WriteChunks(beam.PTransform):
    """(xbeam.Key, Dataset) chunks -> written to a store already set up; emits marker names."""

    path: str
    template: xr.Dataset

    def __post_init__(self):
        super().__init__()

    def expand(self, chunks):
        return chunks | "WriteChunk" >> beam.ParDo(_WriteChunkFn(self.path, self.template))


def finalize(path: str, expected: Iterable[str]) -> None:
    """Mark the store complete if every expected chunk has its marker; else fail loudly.

    `expected` is iterated once, never held: a `plan.ChunkPlan` yields its markers from its compact form.
    """
    done = done_markers(path)
    total = missing = 0
    for marker in expected:
        total += 1
        missing += marker not in done
    if missing:
        raise RuntimeError(
            f"{path}: {missing} of {total} chunks were not written; run again with --resume"
        )
    set_status(path, "complete")


@dataclasses.dataclass
class MarkComplete(beam.PTransform):
    """Runs once after all writes: flips `efm_status` to "complete" when nothing is missing."""

    path: str
    expected: Iterable[str]  # re-iterable and small to pickle: a plan.ChunkPlan (or a list)

    def __post_init__(self):
        super().__init__()

    def expand(self, written):
        path, expected = self.path, self.expected
        return (
            written
            | "CountWritten" >> beam.combiners.Count.Globally()
            | "Finalize" >> beam.Map(lambda _: finalize(path, expected))
        )


def open_embeddings(
    path: str, *, flag: str = "--embeddings", require_complete: bool = True
) -> xr.Dataset:
    """Open an embedding store lazily, refusing stores that are missing or unfinished.

    Any layout efm reads (transforms/storage/layouts.py): efm's own stores as they are, a
    convention store (the AEF mosaic, TESSERA's, efm's next) as the same canonical view."""
    from transforms.sources.remote_fs import storage_options
    from transforms.storage import layout_view, layouts

    group = layouts.open_root(path, flag)  # once: on a remote store each open is requests
    layout = layouts.describe(path, flag=flag, group=group)
    if not layout.is_efm_v2:
        ds = layout_view.open_dataset(layout, flag=flag, group=group)
        attrs = dict(group.attrs)
        if attrs.get("efm_product") != "embeddings":
            return ds  # a store someone else published: complete as it is
        # efm's own (Zarr 3) store: its attrs, and the same completeness checks as ever
        ds.attrs.update(attrs)  # its own record (source, crs as asked, years...) over the view's
        _check_complete(path, ds.attrs, flag, require_complete)
        return ds
    try:
        # mask_and_scale=False: int8 stores come back as their codes (-128 = no data), not
        # as float with NaN; `as_float` de-quantises. Float stores hold NaN either way.
        ds = xr.open_zarr(
            path,
            consolidated=True,
            zarr_format=2,
            chunks=None,
            mask_and_scale=False,
            storage_options=storage_options(path) or None,  # s3: anonymous without credentials
        )
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise InputError(flag, f"cannot open {path} as an embedding store: {exc}") from None
    if "embedding" not in ds:
        raise InputError(flag, f"{path} has no 'embedding' variable; is it an efm embedding store?")
    _check_complete(path, ds.attrs, flag, require_complete)
    return ds


def _check_complete(path: str, attrs: dict, flag: str, require_complete: bool) -> None:
    if not require_complete:
        return
    if attrs.get(STATUS_ATTR) != "complete":
        raise InputError(
            flag,
            f"{path} is incomplete ({STATUS_ATTR}={attrs.get(STATUS_ATTR)!r}); finish it with `efm extract ... --resume`",
        )
    check_chunks(path, flag)


def check_chunks(path: str, flag: str) -> None:
    """Refuse (InputError) a store whose done markers record chunk files that are gone or of another size.

    Two listings and the markers' small records, no chunk read (transforms/storage/integrity.py);
    a chunk that does not decode is caught where it is read (readers.StoreReader)."""
    report = integrity.check(path, decode=False)
    if report.problems:
        raise InputError(flag, integrity.damaged_message(path, report.kind, report.problems))


def as_float(values: np.ndarray) -> np.ndarray:
    """Embedding values as float32 whatever the store's dtype (int8 stores are de-quantised)."""
    values = np.asarray(values)
    return (
        quantize.dequantize(values)
        if values.dtype == np.int8
        else values.astype(np.float32, copy=False)
    )


def check_output_location(
    path: str,
    *,
    resume: bool,
    overwrite: bool,
    flag: str = "--output",
    kind: str = "embeddings",
    inputs: dict | None = None,
) -> None:
    """Before any work: may this store be written at `path`? (see transforms/storage/outputs.py)."""
    from transforms.storage import outputs

    outputs.check_output(path, kind, inputs=inputs, resume=resume, overwrite=overwrite, flag=flag)
