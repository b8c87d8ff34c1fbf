"""Extraction throughput: `efm extract` vs the xee pattern, side by side, against the emulator.

The emulator runs in its own process (so it does not share the GIL with the pipeline) with a
cap on concurrent requests like the service's quota, and a latency per computePixels request of
base + per_mb x (MB in the reply): a flat latency would reward few huge requests by construction.
Neither term is published for Earth Engine (docs/earthengine-emulator.md), so the benchmark sweeps
both, from a latency-bound to a bandwidth-bound service. Each method gets one unmeasured warm-up,
xee runs at each `io_chunks` candidate and the best is reported, and every run must write the same
values (the same grid, bands and year; checked against the first efm store). Each method's time is
compared with the bound its own requests allow (quota-bound time):

    bound s = max(sum of request latencies / cap, requests / 100 per s, mean request latency)
    (answered requests only: a 429 carries no pixels; latencies as the emulator slept them)

    python benchmarks/extract_vs_xee.py              # the sweep (7-9 minutes on 2 shared cores)
    python benchmarks/extract_vs_xee.py --quick      # 3 latency models, smaller area
    python benchmarks/extract_vs_xee.py --tune       # efm chunk size / request tile / threads, flat latency
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("EFM_EE_ACCESS_TOKEN", "benchmark-token")
os.environ.setdefault("NO_GCE_CHECK", "True")

import psutil  # noqa: E402
import pyproj  # noqa: E402

from emulators.earthengine import EarthEngineEmulatorProcess  # noqa: E402
from emulators.earthengine.synthetic import COLLECTION_ID, TileSpec, make_embedding_collection  # noqa: E402

logging.getLogger("urllib3.connectionpool").setLevel(
    logging.ERROR
)  # "pool is full" per xee thread: noise
warnings.filterwarnings(
    "ignore", message="Consolidated metadata"
)  # zarr 3, once per store read: noise here

YEAR = 2021
QUOTA_RPS = 100.0
# (base s, s per MB): from a latency-bound service to a bandwidth-bound one. 0.1 s/MB = 10 MB/s per
# request is what plan.ASSUMED_EE_LATENCY_S (5 s per 48 MiB request) implies; 1 s/MB is a slow service.
MODELS = [(0.1, 0.0), (1.0, 0.0), (0.1, 0.1), (1.0, 0.1), (0.1, 1.0), (1.0, 1.0)]
QUICK_MODELS = [(0.3, 0.0), (0.3, 0.1), (0.3, 1.0)]
# xee's io_chunks side (256 is its default for float64 bands, from its _auto_chunks); xee sends one
# request per band per io chunk within each xarray-beam chunk, so an io chunk past the Zarr chunk
# also grows xarray-beam's chunk to it (the values written are the same; only the Zarr chunking differs).
XEE_IO_CHUNKS = (128, 256, 512)


def bbox_of(tile: TileSpec, inset_px: int = 1) -> str:
    to_lonlat = pyproj.Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True)
    left, top = tile.x0 + inset_px * tile.scale, tile.y0 - inset_px * tile.scale
    right, bottom = (
        tile.x0 + (tile.width - inset_px) * tile.scale,
        tile.y0 - (tile.height - inset_px) * tile.scale,
    )
    (w, s), (e, n) = to_lonlat.transform(left, bottom), to_lonlat.transform(right, top)
    return f"{w},{s},{e},{n}"


def run_efm(emu, tile, output, chunk_size, tile_size=None, threads=None, cap=40, transfer="auto"):
    argv = [
        "--tuning",
        f"transfer_dtype={transfer}",
        "--bbox",
        bbox_of(tile),
        "--crs",
        tile.crs,
        "--years",
        str(YEAR),
        "--output",
        output,
        "--tuning",
        f"chunk_size={chunk_size}",
        "--tuning",
        f"ee_api_url={emu.url}",
        "--tuning",
        "ee_project=bench",
        "--tuning",
        f"max_concurrent_requests={cap}",
        "--runner=FnApiRunner",
    ]
    if tile_size:
        argv += ["--tuning", f"request_tile_size={tile_size}"]
    if threads:
        argv += ["--tuning", f"threads_per_worker={threads}"]
    extract_quietly(argv)


def extract_quietly(argv: list[str]) -> None:
    """`efm extract` in this process, its summary discarded (the tables are the benchmark's output)."""
    from pipelines import extract

    with open(os.devnull, "w") as sink:
        stdout, sys.stdout = sys.stdout, sink
        try:
            assert extract.main(argv) == 0
        finally:
            sys.stdout = stdout


def store_grid(path):
    """(crs_transform, (width, height)) of an efm store: xee is asked for exactly the same pixels."""
    import xarray as xr

    ds = xr.open_zarr(path)
    x, y = ds["x"].values, ds["y"].values
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    return (dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2), (len(x), len(y))


def run_xee(emu, tile, output, chunk_size, grid, io_chunks=None):
    """The pattern xee publishes for Dataflow: open_dataset(engine='ee') -> DatasetToChunks -> ChunksToZarr."""
    import apache_beam as beam
    import ee
    import xarray as xr
    import xarray_beam as xbeam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.sources import earthengine

    earthengine.initialize(earthengine.EarthEngineSettings(project="bench", api_url=emu.url))
    collection = ee.ImageCollection(COLLECTION_ID).filterDate(f"{YEAR}-01-01", f"{YEAR + 1}-01-01")
    transform, shape_2d = grid
    kwargs = (
        {}
        if io_chunks is None
        else {"io_chunks": {"index": 1, "width": io_chunks, "height": io_chunks}}
    )
    ds = xr.open_dataset(
        collection, engine="ee", crs=tile.crs, crs_transform=transform, shape_2d=shape_2d, **kwargs
    )
    chunks = {"time": 1, "y": chunk_size, "x": chunk_size}
    template = xbeam.make_template(ds)
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        _ = p | xbeam.DatasetToChunks(ds, chunks) | xbeam.ChunksToZarr(output, template, chunks)


def values_of(path):
    """(time, y, x, band) float32 values of an efm store or of xee's one-variable-per-band store."""
    import numpy as np
    import xarray as xr

    ds = xr.open_zarr(path)
    if "embedding" in ds:
        return ds["embedding"].values
    return np.stack(
        [ds[name].values for name in sorted(v for v in ds.data_vars if v.startswith("A"))], axis=-1
    )


def same_values(a, b) -> bool:
    import numpy as np

    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure(emu, label, fn, cap, base, per_mb, pixels):
    """Run one method; requests, wire bytes and slept latencies from the emulator, CPU of both processes."""
    emu.reset_stats()
    server, client = psutil.Process(emu._proc.pid), psutil.Process()
    server_cpu, client_cpu = cpu_seconds(server), cpu_seconds(client)
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    stats = emu.stats()
    requests = sum(stats["counts"].get("computePixels", {}).values())
    answered = (
        stats["counts"].get("computePixels", {}).get("200", 0)
    )  # 429s carry no pixels and sleep nothing
    wire_mb = (
        stats["bytes_out_by_kind"].get("computePixels", 0) / 1e6
    )  # pixels only, not metadata calls
    delays = stats["delay_s_by_kind"].get("computePixels", 0.0)
    bound = max(delays / cap, answered / QUOTA_RPS, delays / max(answered, 1))
    return {
        "base s": base,
        "s/MB": per_mb,
        "method": label,
        "requests": requests,
        "MB/request": wire_mb / max(answered, 1),
        "429s": stats["counts"].get("computePixels", {}).get("429", 0),
        "seconds": seconds,
        "quota-bound s": bound,
        "bound / seconds": bound / seconds,
        "embeddings MB/s": pixels * 64 * 4 / 1e6 / seconds,  # float32-equivalent output rate
        "wire MB/s": wire_mb / seconds,
        "max in flight": stats["max_in_flight_seen"],
        "CPU s pipeline/emulator": f"{cpu_seconds(client) - client_cpu:.0f}/{cpu_seconds(server) - server_cpu:.0f}",
    }


COLUMNS = [
    "base s",
    "s/MB",
    "method",
    "requests",
    "429s",
    "MB/request",
    "seconds",
    "embeddings MB/s",
    "wire MB/s",
    "quota-bound s",
    "bound / seconds",
    "max in flight",
    "CPU s pipeline/emulator",
]


def print_table(rows, cols=COLUMNS):
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        cells = [f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        print("| " + " | ".join(cells) + " |")


def print_summary(rows):
    """One line per latency model: efm (default flags) against xee at its best io_chunks."""
    print(
        "| base s | s/MB | efm default: requests, s | efm best | xee best io_chunks: requests, s | xee default (256) s | xee best / efm default (time) |"
    )
    print("|---|---|---|---|---|---|---|")
    for model in dict.fromkeys((r["base s"], r["s/MB"]) for r in rows):
        here = [r for r in rows if (r["base s"], r["s/MB"]) == model]
        efm = [r for r in here if r["method"].startswith("efm")]
        xee = [r for r in here if r["method"].startswith("xee")]
        if not efm or not xee:
            continue
        default, best_efm, best_xee = (
            efm[0],
            min(efm, key=lambda r: r["seconds"]),
            min(xee, key=lambda r: r["seconds"]),
        )
        xee_default = next(
            (f"{r['seconds']:.1f}" for r in xee if r["method"].endswith("io_chunks 256")), "-"
        )
        print(
            f"| {model[0]:g} | {model[1]:g} | {default['requests']}, {default['seconds']:.1f} | {best_efm['method'].split(', ')[-1]}: {best_efm['seconds']:.1f} | "
            f"{best_xee['method'].split(', ')[-1]}: {best_xee['requests']}, {best_xee['seconds']:.1f} | "
            f"{xee_default} | {best_xee['seconds'] / default['seconds']:.2f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, help="area side in pixels (default 512, 256 with --quick)"
    )
    parser.add_argument("--cap", type=int, default=40)
    parser.add_argument(
        "--chunk-size",
        type=int,
        help="Zarr chunk side for both methods (default 256, 128 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"latency models {QUICK_MODELS}, a 256 px area, xee io_chunks 64,128,256",
    )
    parser.add_argument(
        "--models",
        help="(base s:s per MB) pairs, comma-separated, e.g. 0.3:0,0.3:0.5 (overrides the sweep)",
    )
    parser.add_argument(
        "--xee-io-chunks",
        help=f"io_chunks sides to try for xee (default {','.join(map(str, XEE_IO_CHUNKS))})",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="only sweep efm's chunk size, request tile size and threads at 0.3 s flat",
    )
    parser.add_argument("--skip-xee", action="store_true")
    args = parser.parse_args()
    size = args.size or (256 if args.quick else 512)
    chunk_size = args.chunk_size or (128 if args.quick else 256)
    models = QUICK_MODELS if args.quick else MODELS
    if args.models:
        models = [tuple(float(v) for v in pair.split(":")) for pair in args.models.split(",")]
    if args.tune:
        models = [(0.3, 0.0)]
    io_candidates = (
        [int(v) for v in args.xee_io_chunks.split(",")]
        if args.xee_io_chunks
        else [c // (2 if args.quick else 1) for c in XEE_IO_CHUNKS]
    )

    from pipelines import extract  # noqa: F401  (import time is not the pipeline's)

    tile = TileSpec("bench", "EPSG:32631", "31N", 700_000.0, 5_000_000.0, size, size)
    print(f"generating a {size} x {size} x 64 tile ...", file=sys.stderr)
    images = make_embedding_collection(years=(YEAR,), tiles=[tile], seed=7, nodata_fraction=0.01)
    work = tempfile.mkdtemp(prefix="efm-bench-")
    rows, load = [], [os.getloadavg()]
    started = time.time()
    try:
        with EarthEngineEmulatorProcess(images, max_in_flight=args.cap) as emu:

            def efm(chunk, tile_size=None, threads=None, transfer="auto"):
                out = os.path.join(work, f"efm-{time.time_ns()}.zarr")
                return out, lambda: run_efm(
                    emu, tile, out, chunk, tile_size, threads, args.cap, transfer
                )

            # warm-ups, not measured: one-time imports, Beam and Earth Engine start-up, for both methods
            reference_path, warm = efm(chunk_size)
            warm()
            reference, grid = values_of(reference_path), store_grid(reference_path)
            pixels = grid[1][0] * grid[1][1]

            def xee(io_chunks):
                out = os.path.join(work, f"xee-{time.time_ns()}.zarr")
                return out, lambda: run_xee(
                    emu, tile, out, max(chunk_size, io_chunks or 0), grid, io_chunks
                )

            if not args.skip_xee and not args.tune:
                path, warm = xee(None)
                warm()
                assert same_values(values_of(path), reference), "xee and efm wrote different values"

            def run(label, made, base, per_mb):
                path, fn = made
                try:
                    rows.append(measure(emu, label, fn, args.cap, base, per_mb, pixels))
                except Exception as exc:  # pylint: disable=broad-except  (seen: a connection reset on a loaded machine)
                    print(
                        f"  {label}: {type(exc).__name__}: {str(exc)[:200]}; measured again",
                        file=sys.stderr,
                    )
                    shutil.rmtree(path, ignore_errors=True)
                    for _ in range(
                        600
                    ):  # the failed run's requests still hold slots: let them drain first
                        if emu.stats()["in_flight"] == 0:
                            break
                        time.sleep(0.1)
                    rows.append(
                        measure(emu, label + " (2nd try)", fn, args.cap, base, per_mb, pixels)
                    )
                if not same_values(values_of(path), reference):
                    raise SystemExit(
                        f"{label}: its store differs from efm's first store: not the same work"
                    )
                shutil.rmtree(path, ignore_errors=True)
                print(
                    f"  {base:g} s + {per_mb:g} s/MB  {label}: {rows[-1]['requests']} requests, {rows[-1]['seconds']:.1f} s",
                    file=sys.stderr,
                )

            for base, per_mb in models:
                emu.configure(latency_s=base, latency_per_mb_s=per_mb)
                if args.tune:
                    for chunk, tile_size, threads in [
                        (256, None, 40),
                        (1024, None, 40),
                        (1024, 256, 40),
                        (512, 128, 40),
                        (512, None, 20),
                        (512, None, 10),
                    ]:
                        run(
                            f"efm chunk {chunk}, tile {tile_size or 'auto'}, threads {threads}",
                            efm(chunk, tile_size, threads),
                            base,
                            per_mb,
                        )
                    continue
                run(
                    f"efm extract, chunk {chunk_size}, request tiles auto",
                    efm(chunk_size),
                    base,
                    per_mb,
                )
                if per_mb:  # smaller requests can only pay off when a request's size costs time
                    run(
                        f"efm extract, chunk {chunk_size}, request tiles {chunk_size // 2}",
                        efm(chunk_size, chunk_size // 2),
                        base,
                        per_mb,
                    )
                if not args.skip_xee:
                    for io in io_candidates:
                        if not per_mb and io < 256:
                            continue  # below xee's default only adds requests when size costs nothing
                        run(
                            f"xee + xarray-beam, chunk {max(chunk_size, io)}, io_chunks {io}",
                            xee(io),
                            base,
                            per_mb,
                        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load.append(os.getloadavg())
    print(
        f"\narea {size} x {size} px x 64 bands, 1 year, chunk {chunk_size}; emulator cap {args.cap} concurrent; "
        f"latency per computePixels = base + s/MB x reply MB (slept, so wall times are real); {os.cpu_count()} cores; "
        f"load average (1/5/15 min) {load[0][0]:.1f}/{load[0][1]:.1f}/{load[0][2]:.1f} before, "
        f"{load[1][0]:.1f}/{load[1][1]:.1f}/{load[1][2]:.1f} after; {time.time() - started:.0f} s in all\n"
    )
    print_table(rows)
    if not args.tune and not args.skip_xee:
        print()
        print_summary(rows)


if __name__ == "__main__":
    main()
