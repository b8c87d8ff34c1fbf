"""Benchmark: the COG mirror source against plain rasterio reads and the virtual-Zarr way.

On a generated mirror laid out like the public one (sample_data/mirror.py: int8, bands
planar-separate, 1024 px blocks (one block a side for smaller files), rows bottom-up,
DEFLATE level 1, nodata -128, no overviews; two UTM zones, two years), at several scales
(--scales: 1x, 4x, 16x the pixels of --size, each side x sqrt(scale); one mirror per scale),
side by side in one run, reading the same area from the same files:

  1. (a) plain rasterio: open each file once, `read(window=...)` of the part of each
         --chunk-size window it covers, paste into the chunk: the physical reference
         (single thread); also with 2 threads, each with its own handles;
     (b) CogSource.fetch (no Beam): index selection, native copy / nearest warp, mosaic;
     (c) `efm extract --source cog` end to end (Beam FnApiRunner in this process, 4 fetch
         threads, Zarr writes, markers), --dtype int8 and --dtype float32;
     (d) the virtual-Zarr way (aef-loader's technique, benchmarks/virtual_zarr.py: each COG
         opened as virtual Zarr with virtual-tiff + VirtualiZarr over obstore's LocalStore,
         cropped, combined with xarray, computed with dask threads) at its defaults (chunks
         "auto", dask's default threads) and at its best (a sweep of its chunk profiles
         auto/native/balanced/all-bands x 1/2/4 dask threads, all printed);
     on the area in the grid's own zone (native: every read is a plain copy) and on the whole
     area (40 % of it in the neighbouring zone: efm warps it with nearest neighbour; the
     reference and the virtual-Zarr way, which has no warp, read the source windows it needs
     and do not warp). On the native zone the index also lists the other zone's files (their
     footprints are whole tiles); the reference and the virtual-Zarr way skip them once
     checked to hold only nodata there, efm gets the index's selection as it would. The
     virtual-Zarr result must equal the reference's values on the native zone (rows flipped
     to north-up), or the script stops.
  2. the two stores from 1(c) at 1x: bytes on disk per pixel-year, and the speed of reading
     them back as float32 (int8 de-quantised) chunk by chunk, as every pipeline does.

Every method gets one unmeasured warm-up run, then the best of --repeat runs. CPU seconds
are the process's (getrusage, all threads, plus any children): the virtual-Zarr way and
efm's in-process FnApiRunner both run here. Throughput is "MB of embeddings": pixels x 64
bands x the dtype's size (int8: 1 B, float32: 4 B). Generated noise compresses worse than
real embeddings: sizes on disk are an upper bound for int8 and a fair ratio, not the real
mirror's.

    pip install -e .[bench] -c constraints.txt   # virtual-tiff, virtualizarr, obstore
    python benchmarks/cog_and_int8.py [--size 1024x1280] [--scales 1,4] [--repeat 3] [--keep]

The tables are printed and written to benchmarks/RESULTS.md under "## COG source and int8
stores" (not with --no-results).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import resource
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import virtual_zarr  # noqa: E402
from pipelines import extract  # noqa: E402
from sample_data import embedding as sample_embedding
from sample_data import generate as sample_data  # noqa: E402
from transforms.core import grid as gridlib  # noqa: E402
from transforms.core.chunks import plan_chunks  # noqa: E402
from transforms.sources import cog, cog_index  # noqa: E402
from transforms.storage import readers  # noqa: E402

SECTION = "## COG source and int8 stores"


def cpu_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def best_of(repeat: int, fn, keep: bool = True):
    """One unmeasured warm-up run, then (result of the warm-up, or None unless `keep`, best
    wall s, CPU s of that run)."""
    result = fn()
    if not keep:
        result = None  # frees it before the measured runs (GBs at 16x)
    best_wall, best_cpu = float("inf"), 0.0
    for _ in range(repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        if wall < best_wall:
            best_wall, best_cpu = wall, cpu
    return result, best_wall, best_cpu


def tile_size_for(arg: str, scale: int) -> int:
    """--tile-size: one size, or "auto": 1024 px files (one block a side) below 16x, 2048 px
    files (2 x 2 blocks of 1024 px per band) from 16x on."""
    if arg != "auto":
        return int(arg)
    return 2048 if scale >= 16 else 1024


def make_mirror(workdir: str, rows: int, cols: int, tile_size: int, keep: bool):
    """The mirror and its index for one scale (only the mirror: no labels or fields);
    with --keep, reused when a previous run wrote the same spec there."""
    from types import SimpleNamespace

    from sample_data.mirror import write_index, write_mirror
    from sample_data.world import inner_bbox, make_world

    spec = sample_data.SampleSpec(rows=rows, cols=cols, tile_size=tile_size)
    out = os.path.join(workdir, f"mirror-{rows}x{cols}-{tile_size}")
    manifest = os.path.join(out, "bench.json")
    if keep and os.path.exists(manifest):
        with open(manifest) as f:
            saved = json.load(f)
        print(f"reusing {out}", flush=True)
        return SimpleNamespace(
            mirror=os.path.join(out, "mirror"),
            crs=saved["crs"],
            bbox=tuple(saved["bbox"]),
            spec=spec,
            files=saved["files"],
        )
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    t0 = time.perf_counter()
    world = make_world(spec)
    mirror = os.path.join(out, "mirror")
    index_rows = write_mirror(world, mirror)
    write_index(index_rows, mirror)
    files = [r["path"] for r in index_rows]
    data = SimpleNamespace(
        mirror=mirror, crs=world.crs, bbox=tuple(inner_bbox(world)), spec=spec, files=files
    )
    with open(manifest, "w") as f:
        json.dump({"crs": data.crs, "bbox": data.bbox, "files": files}, f)
    print(
        f"generated {len(files)} COGs of {tile_size} px ({sum(os.path.getsize(p) for p in files) / 1e6:.0f} MB) "
        f"for {rows} x {cols} px in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return data


def plan(data, half: bool, chunk: int):
    west, south, east, north = data.bbox
    if half:  # the grid's own zone only
        east = west + 0.5 * (east - west)
    bbox = (west, south, east, north)
    aoi = gridlib.parse_bbox(",".join(repr(v) for v in bbox))
    grid, _ = gridlib.plan_grid(aoi, data.crs, 10.0)
    years = list(data.spec.years)
    index = cog_index.check_cog_root(data.mirror, years, aoi)
    specs = plan_chunks(years, list(gridlib.chunk_windows(grid, chunk)))
    return bbox, grid, years, index, specs


def plain_rasterio(grid, index, specs, keep: dict | None = None):
    """The reference: the same windows of the same files, `ds.read(window=...)`, pasted into
    the chunk. No index, no mosaic rule, no warping: the I/O and decompression alone (for
    files of the other zone, the source window the warp needs is read and dropped).
    `keep`: when given, the chunks are kept there by spec (for the equality check)."""
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window as RioWindow

    datasets = {p: rasterio.open(p) for p in index["path"]}
    try:
        total = 0
        for spec in specs:
            w = spec.window
            left, bottom, right, top = grid.window_bounds(w)
            out = np.full((64, w.rows, w.cols), -128, dtype=np.int8)
            for path in index[index["year"] == spec.year]["path"]:
                ds = datasets[path]
                t = ds.transform
                if f"EPSG:{ds.crs.to_epsg()}" != grid.crs:
                    sx0, sy0, sx1, sy1 = transform_bounds(
                        grid.crs, ds.crs, left, bottom, right, top
                    )
                    win = virtual_zarr.pixel_window(
                        t, (sx0, sy0, sx1, sy1), ds.height, ds.width
                    )  # rasterio's from_bounds rejects bottom-up
                    if win is not None:
                        (r0, r1), (c0, c1) = ((s.start, s.stop) for s in win)
                        total += ds.read(window=RioWindow(c0, r0, c1 - c0, r1 - r0)).size
                    continue
                # Rows of the file covering the window, whichever way its rows run.
                c0 = round((left - t.c) / t.a)
                r_top, r_bottom = (top - t.f) / t.e, (bottom - t.f) / t.e
                r0, flip = (round(r_top), False) if t.e < 0 else (round(r_bottom), True)
                rr0, cc0 = max(0, r0), max(0, c0)
                rr1, cc1 = min(ds.height, r0 + w.rows), min(ds.width, c0 + w.cols)
                if rr0 >= rr1 or cc0 >= cc1:
                    continue
                block = ds.read(window=RioWindow(cc0, rr0, cc1 - cc0, rr1 - rr0))
                if flip:  # bottom-up file: window row 0 is the south edge
                    out[:, w.rows - (rr1 - r0) : w.rows - (rr0 - r0), cc0 - c0 : cc1 - c0] = block[
                        :, ::-1
                    ]
                else:
                    out[:, rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = block
            total += out.size
            if keep is not None:
                keep[spec] = out
        return total
    finally:
        for ds in datasets.values():
            ds.close()


def plain_rasterio_threads(grid, index, specs, threads: int = 2):
    """The reference in `threads` threads, each with its own handles and a run of neighbouring
    chunks: windows straddle blocks, and GDAL's block cache then decodes a block once per
    handle, so dealing chunks out in turn would decode shared blocks twice."""
    share = -(-len(specs) // threads)
    with ThreadPoolExecutor(threads) as pool:
        return sum(
            pool.map(
                lambda i: plain_rasterio(grid, index, specs[i * share : (i + 1) * share]),
                range(threads),
            )
        )


def reference_array(grid, years, index, specs) -> np.ndarray:
    """(years, 64, rows, cols) north-up, from the reference's chunks."""
    chunks: dict = {}
    plain_rasterio(grid, index, specs, keep=chunks)
    full = np.full((len(years), 64, grid.height, grid.width), -128, dtype=np.int8)
    for spec, out in chunks.items():
        w = spec.window
        full[years.index(spec.year), :, w.row : w.row + w.rows, w.col : w.col + w.cols] = out
    return full


def native_files(grid, index):
    """The index rows in the grid's CRS, having checked that the other zone's rows (their
    footprints, whole tiles, reach into the area) hold only nodata there: on the native zone
    the reference and the virtual-Zarr way skip them, as a user reading one zone would."""
    other = index[index["crs"] != grid.crs]
    if len(other):
        for crs, values in virtual_zarr.read_area(
            virtual_zarr.files_for_grid(grid, other), "all-bands"
        ).items():
            if (values != virtual_zarr.NODATA).any():
                sys.exit(f"the native zone's area holds data of {crs}: not a native-zone case")
    return index[index["crs"] == grid.crs]


def cog_fetch(grid, years, index, specs, root, dtype="int8"):
    source = cog.make_source(grid, years, sample_embedding.BANDS, dtype, root, index)
    source.setup()
    total = 0
    for spec in specs:
        for tile in source.plan(spec):
            total += source.fetch(spec, tile).size
    return total


def run_extract(data, bbox, output, dtype, chunk):
    if os.path.exists(output):
        shutil.rmtree(output)
    argv = [
        "--source",
        "cog",
        "--cog-root",
        data.mirror,
        f"--bbox={','.join(repr(v) for v in bbox)}",
        "--crs",
        data.crs,
        "--years",
        ",".join(map(str, data.spec.years)),
        "--output",
        output,
        "--dtype",
        dtype,
        "--tuning",
        f"chunk_size={chunk}",
        "--tuning",
        "max_concurrent_requests=4",
        "--runner=FnApiRunner",
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        assert extract.run(argv) == 0
    return output


def disk_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def read_store(path: str, as_float: bool = True) -> int:
    info = readers.store_info(path)
    reader = readers.StoreReader(path)
    total = 0
    for t in range(len(info.years)):
        for w in info.windows():
            if as_float:
                values = reader.read(t, w)
            else:
                values = reader.read_codes(
                    t, slice(w.row, w.row + w.rows), slice(w.col, w.col + w.cols)
                )
            total += values.shape[0] * values.shape[1]
    return total


def write_results(markdown: str) -> str:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from results import write_section

    return write_section(SECTION, markdown)


def sweep_vz(files, repeat: int, crs: str, reference, profiles, threads_list):
    """The virtual-Zarr way at its defaults and over its profiles x dask threads: a list of
    (profile, threads or None for dask's default, wall, cpu); values checked when `reference`."""
    runs = []
    for profile, threads in [("auto", None)] + [(p, n) for p in profiles for n in threads_list]:
        result, wall, cpu = best_of(
            repeat,
            lambda profile=profile, threads=threads: virtual_zarr.read_area(
                files, profile, threads
            ),
            keep=reference is not None,
        )
        if reference is not None:
            virtual_zarr.check_equal(result, crs, reference, f"{profile}, {threads} threads")
        runs.append((profile, threads, wall, cpu))
    return runs


def extract_peak_rss(data, bbox, output: str, chunk: int) -> tuple[int, float]:
    """Peak RSS (process tree) and wall s of `efm extract --source cog --dtype int8` in a process of its own."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from memory import run_measured

    shutil.rmtree(output, ignore_errors=True)
    argv = [
        sys.executable,
        "-m",
        "pipelines.extract",
        "--source",
        "cog",
        "--cog-root",
        data.mirror,
        f"--bbox={','.join(repr(v) for v in bbox)}",
        "--crs",
        data.crs,
        "--years",
        ",".join(map(str, data.spec.years)),
        "--output",
        output,
        "--dtype",
        "int8",
        "--tuning",
        f"chunk_size={chunk}",
        "--tuning",
        "max_concurrent_requests=4",
    ]
    return run_measured(argv, output + ".log")


def measure_case(data, label, half, args, chunk, workdir, read_rows):
    bbox, grid, years, efm_index, specs = plan(data, half, chunk)
    index = efm_index
    pixels = grid.width * grid.height * len(years)
    mb_int8 = pixels * 64 / 1e6
    if half:
        index = native_files(grid, index)
    files = virtual_zarr.files_for_grid(grid, index)
    reference = reference_array(grid, years, index, specs) if half else None
    _, ref_wall, ref_cpu = best_of(args.repeat, lambda: plain_rasterio(grid, index, specs))
    results = [("plain rasterio reads, 1 thread (reference)", ref_wall, ref_cpu, mb_int8)]
    _, wall, cpu = best_of(args.repeat, lambda: plain_rasterio_threads(grid, index, specs, 2))
    results.append(("plain rasterio reads, 2 threads (own handles)", wall, cpu, mb_int8))
    _, wall, cpu = best_of(
        args.repeat, lambda: cog_fetch(grid, years, efm_index, specs, data.mirror)
    )
    results.append(("CogSource.fetch, int8 (no Beam)", wall, cpu, mb_int8))
    stores = {}
    for dtype in ("int8", "float32"):
        output = os.path.join(workdir, f"{'native' if half else 'both'}-{dtype}.zarr")
        _, wall, cpu = best_of(
            args.repeat,
            lambda output=output, dtype=dtype: run_extract(data, bbox, output, dtype, chunk),
        )
        stores[dtype] = output
        results.append(
            (
                f"efm extract --source cog --dtype {dtype}",
                wall,
                cpu,
                pixels * 64 * (1 if dtype == "int8" else 4) / 1e6,
            )
        )
    runs = sweep_vz(files, args.repeat, grid.crs, reference, args.profiles, args.threads)
    default = runs[0]
    best = min(runs, key=lambda r: r[2])  # the defaults are one of the settings
    results.append(
        (
            f"virtual Zarr, defaults (chunks auto, dask's {os.cpu_count()} threads)",
            default[2],
            default[3],
            mb_int8,
        )
    )
    results.append(
        (
            f"virtual Zarr, best (chunks {best[0]}, {best[1] or 'dask default'} thread{'' if best[1] == 1 else 's'})",
            best[2],
            best[3],
            mb_int8,
        )
    )
    lines = [
        f"\n**{label}**: {grid.width} x {grid.height} px x {len(years)} years = {pixels / 1e6:.2f} Mpx, "
        f"{len(specs)} chunks of {chunk} px, {len(efm_index)} files in efm's selection, {len(index)} read by the reference\n",
        "| reader | wall s | CPU s | Mpx/s | MB/s of embeddings | vs reference | vs virtual Zarr at its best |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, wall, cpu, mb in results:
        lines.append(
            f"| {name} | {wall:.2f} | {cpu:.2f} | {pixels / 1e6 / wall:.2f} | {mb / wall:.0f} | {ref_wall / wall:.2f}x "
            f"| {best[2] / wall:.2f}x |"
        )
    lines.append(f"\nvirtual Zarr sweep ({label}), wall s (CPU s):\n")
    lines.append(
        "| chunks | " + " | ".join(f"{n} thread{'s' if n > 1 else ''}" for n in args.threads) + " |"
    )
    lines.append("|---|" + "---:|" * len(args.threads))
    for profile in args.profiles:
        cells = [f"{w:.2f} ({c:.2f})" for p, n, w, c in runs[1:] if p == profile]
        lines.append(f"| {profile} | " + " | ".join(cells) + " |")
    if half and read_rows is not None:
        for dtype, path in stores.items():
            size = disk_bytes(path)
            _, read_wall, _ = best_of(args.repeat, lambda path=path: read_store(path))
            _, raw_wall, _ = best_of(
                args.repeat, lambda path=path: read_store(path, as_float=False)
            )
            read_rows.append(
                (
                    dtype,
                    size,
                    size / pixels,
                    pixels / 1e6 / read_wall,
                    pixels * 256 / 1e6 / read_wall,
                    pixels / 1e6 / raw_wall,
                )
            )
    print("\n".join(lines), flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--size",
        default="1024x1280",
        help="generated area at 1x, ROWSxCOLS of 10 m pixels (default: %(default)s)",
    )
    parser.add_argument(
        "--scales",
        default="1,4",
        help="multiples of --size's pixels to measure, each side x sqrt(scale) (default: %(default)s)",
    )
    parser.add_argument(
        "--tile-size",
        default="auto",
        help="side of each generated COG; auto: 1024 below 16x, 2048 from 16x on (default: %(default)s)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=1024,
        help="efm's chunks and the reference's windows (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="measured runs after one warm-up, best kept (default: %(default)s)",
    )
    parser.add_argument(
        "--workdir", default="/tmp/efm-bench-cog", help="scratch folder (default: %(default)s)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="reuse the mirrors a previous run left in --workdir"
    )
    parser.add_argument(
        "--no-results", action="store_true", help="print only; do not write benchmarks/RESULTS.md"
    )
    parser.add_argument(
        "--profiles",
        default=",".join(virtual_zarr.PROFILES),
        help="the virtual-Zarr way's chunk profiles to sweep (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        default="1,2,4",
        help="dask threads to sweep for the virtual-Zarr way (default: %(default)s)",
    )
    parser.add_argument(
        "--cases",
        default="native,both",
        help="native (the grid's zone only), both (40 %% reprojected) (default: %(default)s)",
    )
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the peak RSS of efm extract at each scale (print only)",
    )
    args = parser.parse_args()
    args.profiles = args.profiles.split(",")
    args.threads = [int(n) for n in args.threads.split(",")]
    if not set(args.profiles) <= set(virtual_zarr.PROFILES):
        parser.error(f"--profiles: choose among {','.join(virtual_zarr.PROFILES)}")
    rows, cols = (int(v) for v in args.size.lower().split("x"))
    scales = [int(s) for s in args.scales.split(",")]
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir, exist_ok=True)

    lines = []
    read_rows = []
    rss_rows = []
    for scale in scales:
        side = math.sqrt(scale)
        srows, scols = round(rows * side), round(cols * side)
        tile = tile_size_for(args.tile_size, scale)
        data = make_mirror(args.workdir, srows, scols, tile, args.keep)
        lines.append(
            f"\n### {scale}x: {srows} x {scols} px, files of {tile} px, {len(data.files)} files\n"
        )
        print(lines[-1], flush=True)
        for label, half in [
            c
            for c in (("native zone only", True), ("both zones (40 % reprojected)", False))
            if ("native" if c[1] else "both") in args.cases and not args.memory_only
        ]:
            lines += measure_case(
                data,
                label,
                half,
                args,
                args.chunk_size,
                os.path.join(args.workdir, f"out-{scale}x"),
                read_rows if scale == scales[0] else None,
            )
        bbox = plan(data, False, args.chunk_size)[0]
        rss_rows.append(
            (
                scale,
                *extract_peak_rss(
                    data,
                    bbox,
                    os.path.join(args.workdir, f"out-{scale}x", "rss.zarr"),
                    args.chunk_size,
                ),
            )
        )
    lines.append(
        "\n**memory**: peak RSS (process tree, sampled every 0.2 s) of `python -m pipelines.extract --source cog "
        "--dtype int8` on the whole area (both zones), in a process of its own, default `worker_memory_gb=2`\n"
    )
    lines.append("| scale | peak RSS | vs the first scale | wall s (imports included) |")
    lines.append("|---|---:|---:|---:|")
    for scale, peak, wall in rss_rows:
        lines.append(
            f"| {scale}x | {peak / 2**20:.0f} MiB | {peak / rss_rows[0][1]:.2f}x | {wall:.1f} |"
        )
    print("\n".join(lines[-(len(rss_rows) + 3) :]), flush=True)

    if not read_rows:
        print("\n".join(lines))
        return 0
    lines.append(
        f"\n**stores** ({scales[0]}x, the native-zone extraction above; read back chunk by chunk with `readers.StoreReader`)\n"
    )
    lines.append(
        "| store dtype | bytes on disk | bytes per pixel-year | read as float32, Mpx/s | read as float32, MB/s | read as stored (codes), Mpx/s |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|")
    for dtype, size, per_px, mpx, mbs, raw in read_rows:
        lines.append(
            f"| {dtype} | {size / 1e6:.1f} MB | {per_px:.1f} | {mpx:.2f} | {mbs:.0f} | {raw:.2f} |"
        )
    ratio = read_rows[1][1] / read_rows[0][1]
    lines.append(
        f"\nfloat32 / int8 bytes on disk: {ratio:.2f}x. Uncompressed: 256 vs 64 bytes per pixel-year (4x)."
    )
    lines.append(
        "\nReading the table: the reference only reads and decompresses the windows. `CogSource.fetch` decodes each "
        "stored block once (a cache shared by its threads), turns it to the store's (y, x, band) layout, mosaics and, "
        "off the native zone, looks up the nearest source pixel; in the native-zone case it also consults the other "
        "zone's files its index selection holds, for the pixels that are no data in the first file (the reference "
        "skips them, having checked they hold nothing there). `efm extract` adds Beam, Zarr compression and "
        "writes, and for float32 4x the bytes. The virtual-Zarr way decodes the same blocks through zarr's codecs "
        "(zlib) in dask tasks and never warps; its values equal the reference's on the native zone (checked). "
        "The COG source and all readers of int8 stores de-quantise with `quantize.dequantize`, a 256-entry table "
        "look-up giving the formula's float32 values."
    )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    load = os.getloadavg()[0]
    header = (
        f"{SECTION}\n\n`python benchmarks/cog_and_int8.py --size {args.size} --scales {args.scales} --tile-size {args.tile_size} "
        f"--chunk-size {args.chunk_size} --repeat {args.repeat} --profiles {','.join(args.profiles)} "
        f"--threads {','.join(map(str, args.threads))}` on {machine}, {time.strftime('%Y-%m-%d')}, load "
        f"{load:.2f} at the end. One warm-up, then best of {args.repeat}. Generated COGs on local disk laid out like the "
        f"mirror's: int8, planar-separate bands, 1024 px blocks (one block a side for smaller files), rows bottom-up, "
        f"DEFLATE, nodata -128, no overviews; chunks and reference windows of {args.chunk_size} px.\n"
    )
    markdown = header + "\n".join(lines) + "\n"
    print("\n" + markdown)
    if not args.no_results:
        print(f"written to {write_results(markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
