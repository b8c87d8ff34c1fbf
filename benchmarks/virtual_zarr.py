"""The virtual-Zarr way of reading the COG mirror, as aef-loader does it (for the benchmark).

aef-loader (Python >= 3.12, so not installable here) opens every COG as a virtual Zarr store
(virtual-tiff parses the TIFF's IFD into a chunk manifest: one Zarr chunk per stored block,
(band=1, 1024, 1024) in the mirror's planar-separate layout), opens it lazily with xarray +
dask, crops each file to the area, combines the files of a zone with `combine_by_coords`
(outer join, filled with the nodata code in int8) and the years with `concat`, then computes
with dask; bytes come through obstore (here `LocalStore`, the same code path as its S3/GCS
stores without the network). This module re-implements that technique, not its code; it
needs the `bench` extra (virtual-tiff, virtualizarr, obstore).

It does not warp: each zone stays in its own CRS, and for the other zone only the source
windows the area needs are read, as the plain rasterio reference does.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

NODATA = np.int8(-128)
# aef-loader's chunk profiles: "auto" (its default, dask's automatic chunks over the
# store's preferred ones), "native" (one dask chunk per COG block), "balanced" (16 bands
# per task), "all-bands" (all 64 bands of a block in one task).
PROFILES = ("auto", "native", "balanced", "all-bands")


def registry():
    """An obstore registry serving `file:///` URLs from the local disk."""
    from obstore.store import LocalStore

    try:
        from obspec_utils.registry import ObjectStoreRegistry
    except ImportError:  # older VirtualiZarr releases
        from virtualizarr.registry import ObjectStoreRegistry

    reg = ObjectStoreRegistry()
    reg.register("file:///", LocalStore())
    return reg


def _chunks(manifest_store, profile: str):
    """Dask chunks for a profile, aligned with the stored blocks (band, y, x)."""
    if profile == "auto":
        return "auto"
    array = next(iter(manifest_store._group.arrays.values()))
    band, y, x = (int(v) for v in array.metadata.chunk_grid.chunk_shape)
    bands = int(array.metadata.shape[0])
    band = {"native": band, "balanced": min(16, bands), "all-bands": bands}[profile]
    return {"band": band, "y": y, "x": x}


def _affine(attrs):
    """The file's affine transform from its GeoTIFF tags (rows bottom-up: positive y scale)."""
    import affine

    if "model_transformation" in attrs:
        m = attrs["model_transformation"]
        return affine.Affine(m[0], m[1], m[3], m[4], m[5], m[7])
    sx, sy, _ = attrs["model_pixel_scale"]
    tie = attrs.get("model_tiepoint", [0.0] * 6)
    # GeoTIFF stores a positive scale for north-up files; the mirror's bottom-up files are
    # written with a model transformation instead, so the tiepoint case is north-up.
    return affine.Affine(sx, 0.0, tie[3], 0.0, -sy, tie[4])


def pixel_window(transform, bounds, height: int, width: int) -> tuple[slice, slice] | None:
    """The pixel rows and cols of a file whose cells overlap `bounds` (in the file's CRS)."""
    left, bottom, right, top = bounds
    inverse = ~transform
    cols, rows = zip(*(inverse * (x, y) for x in (left, right) for y in (bottom, top)))
    eps = 1e-6  # an exact cell edge must not pull in the neighbouring pixel
    r0, r1 = max(0, math.floor(min(rows) + eps)), min(height, math.ceil(max(rows) - eps))
    c0, c1 = max(0, math.floor(min(cols) + eps)), min(width, math.ceil(max(cols) - eps))
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _open_file(path: str, year: int, bounds, profile: str, reg):
    import virtual_tiff
    import xarray as xr

    store = virtual_tiff.VirtualTIFF(ifd=0)(url="file://" + path, registry=reg)
    ds = xr.open_zarr(
        store,
        zarr_format=3,
        consolidated=False,
        chunks=_chunks(store, profile),
        mask_and_scale=False,
    )
    name = next(iter(ds.data_vars))
    t = _affine(ds[name].attrs)
    height, width = ds.sizes["y"], ds.sizes["x"]
    window = pixel_window(t, bounds, height, width)
    if window is None:
        return None
    rows, cols = window
    # Cell centres from the file's own transform; bottom-up files give ascending y.
    ds = ds.isel(y=rows, x=cols).assign_coords(
        y=t.f + t.e * (np.arange(rows.start, rows.stop) + 0.5),
        x=t.c + t.a * (np.arange(cols.start, cols.stop) + 0.5),
    )
    ds = ds.rename({name: "embeddings"})
    ds[
        "embeddings"
    ].attrs = {}  # per-file tags (transform, band description) would conflict in the combine
    return ds.expand_dims(time=[year])


async def _open_all(jobs, profile: str, max_concurrency: int):
    """Open (path, year, bounds) jobs with at most `max_concurrency` at once, in threads."""
    reg = registry()
    semaphore = asyncio.Semaphore(max_concurrency)

    async def one(job):
        async with semaphore:
            return await asyncio.to_thread(_open_file, *job, profile, reg)

    return await asyncio.gather(*(one(job) for job in jobs))


def open_area(files, profile: str = "auto", max_concurrency: int = 16) -> dict:
    """Lazy datasets by zone: `files` is [(path, year, zone, bounds in the file's CRS)].

    Each zone's files are cropped to their bounds, combined in space (outer join, nodata
    filled) and in time, as aef-loader's `open_tiles_by_zone` does."""
    import xarray as xr

    opened = asyncio.run(_open_all([(p, y, b) for p, y, _, b in files], profile, max_concurrency))
    by_zone: dict[str, dict[int, list]] = {}
    for (_, year, zone, _), ds in zip(files, opened):
        if ds is not None:
            by_zone.setdefault(zone, {}).setdefault(year, []).append(ds)
    zones = {}
    for zone, years in by_zone.items():
        slices = []
        for year in sorted(years):
            parts = years[year]
            slices.append(
                parts[0]
                if len(parts) == 1
                else xr.combine_by_coords(
                    parts,
                    coords="minimal",
                    compat="override",
                    combine_attrs="drop_conflicts",
                    join="outer",
                    fill_value=NODATA,
                )
            )
        zones[zone] = (
            slices[0]
            if len(slices) == 1
            else xr.concat(
                slices,
                dim="time",
                coords="minimal",
                compat="override",
                join="outer",
                fill_value=NODATA,
            )
        )
    return zones


def read_area(
    files, profile: str = "auto", threads: int | None = None, max_concurrency: int = 16
) -> dict:
    """Open and compute: {zone: (time, band, y, x) int8 array, rows bottom-up}."""
    import dask

    zones = open_area(files, profile, max_concurrency)
    names = list(zones)
    kwargs = (
        {"scheduler": "threads"}
        if threads is None
        else {"scheduler": "threads", "num_workers": threads}
    )
    arrays = dask.compute(*(zones[z]["embeddings"].data for z in names), **kwargs)
    return dict(zip(names, arrays))


def files_for_grid(grid, index):
    """(path, year, zone, bounds in the file's CRS) for the virtual-Zarr way: the grid's
    bounds, in the other zone's CRS the (densified) bounds of the source it needs."""
    from rasterio.warp import transform_bounds

    from transforms.core.grid import Window

    bounds = grid.window_bounds(Window(0, 0, grid.height, grid.width))
    files = []
    for row in index.itertuples():
        b = (
            bounds
            if row.crs == grid.crs
            else transform_bounds(grid.crs, row.crs, *bounds, densify_pts=21)
        )
        files.append((row.path, int(row.year), row.crs, b))  # one zone per CRS
    return files


def check_equal(result: dict, crs: str, reference: np.ndarray, label: str) -> None:
    """Stop unless the virtual-Zarr way read the reference's values in the grid's zone (`crs`)."""
    array = result.get(crs)
    if array is None:
        raise SystemExit(f"virtual Zarr ({label}): nothing read in {crs}")
    north_up = np.asarray(array)[:, :, ::-1, :]
    if north_up.shape != reference.shape or not np.array_equal(north_up, reference):
        raise SystemExit(
            f"virtual Zarr ({label}): values differ from the plain rasterio reference "
            f"(shapes {north_up.shape} vs {reference.shape})"
        )
