"""Extraction throughput: `efm extract` vs the xee pattern, side by side, against the emulator.

The emulator runs in its own process (so it does not share the GIL with the pipeline) with a
fixed latency per request and a cap on concurrent requests, like the service's quota. Each
method's figures are printed with their ratio to the quota bound:

    bound requests/s = min(cap / latency, 100 requests/s)
    bound MB/s       = bound requests/s x (bytes per request of that method)

    python benchmarks/extract_vs_xee.py                 # the comparison
    python benchmarks/extract_vs_xee.py --tune          # + chunk size / request tile / threads
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("EFM_EE_ACCESS_TOKEN", "benchmark-token")
os.environ.setdefault("NO_GCE_CHECK", "True")

import psutil  # noqa: E402
import pyproj  # noqa: E402

from emulators.earthengine import EarthEngineEmulatorProcess  # noqa: E402
from emulators.earthengine.synthetic import COLLECTION_ID, TileSpec, make_embedding_collection  # noqa: E402

YEAR = 2021
QUOTA_RPS = 100.0


def bbox_of(tile: TileSpec, inset_px: int = 1) -> str:
    to_lonlat = pyproj.Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True)
    left, top = tile.x0 + inset_px * tile.scale, tile.y0 - inset_px * tile.scale
    right, bottom = tile.x0 + (tile.width - inset_px) * tile.scale, tile.y0 - (tile.height - inset_px) * tile.scale
    (w, s), (e, n) = to_lonlat.transform(left, bottom), to_lonlat.transform(right, top)
    return f"{w},{s},{e},{n}"


def run_efm(emu, tile, output, chunk_size, tile_size=None, threads=None, cap=40, transfer="auto"):
    argv = ["--transfer-dtype", transfer, "--bbox", bbox_of(tile), "--crs", tile.crs, "--years", str(YEAR), "--output", output, "--chunk-size", str(chunk_size),
            "--ee-api-url", emu.url, "--ee-project", "bench", "--max-concurrent-requests", str(cap), "--runner=FnApiRunner"]
    if tile_size:
        argv += ["--request-tile-size", str(tile_size)]
    if threads:
        argv += ["--threads-per-worker", str(threads)]
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


def run_xee(emu, tile, output, chunk_size):
    """The pattern xee publishes for Dataflow: open_dataset(engine='ee') -> DatasetToChunks -> ChunksToZarr."""
    import apache_beam as beam
    import ee
    import xarray as xr
    import xarray_beam as xbeam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.sources import earthengine

    earthengine.initialize(earthengine.EarthEngineSettings(project="bench", api_url=emu.url))
    collection = ee.ImageCollection(COLLECTION_ID).filterDate(f"{YEAR}-01-01", f"{YEAR + 1}-01-01")
    ds = xr.open_dataset(collection, engine="ee", crs=tile.crs, crs_transform=tile.transform, shape_2d=(tile.width, tile.height))
    chunks = {"time": 1, "y": chunk_size, "x": chunk_size}
    template = xbeam.make_template(ds)
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        _ = p | xbeam.DatasetToChunks(ds, chunks) | xbeam.ChunksToZarr(output, template, chunks)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure(emu, label, fn, cap, latency, pixels):
    """Run one method; wire bytes and requests from the emulator, CPU of both processes."""
    emu.reset_stats()
    server, client = psutil.Process(emu._proc.pid), psutil.Process()
    server_cpu, client_cpu = cpu_seconds(server), cpu_seconds(client)
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    stats = emu.stats()
    requests = sum(stats["counts"].get("computePixels", {}).values())
    wire_mb = stats["bytes_out"] / 1e6
    bound_rps = min(cap / latency, QUOTA_RPS)
    per_request = wire_mb / max(requests, 1)
    return {
        "method": label, "requests": requests, "seconds": seconds,
        "embeddings MB/s": pixels * 64 * 4 / 1e6 / seconds,  # float32-equivalent output rate
        "wire MB/s": wire_mb / seconds, "req/s": requests / seconds,
        "req/s / bound": (requests / seconds) / bound_rps,
        "wire MB/s / bound": (wire_mb / seconds) / (bound_rps * per_request),
        "max in flight": stats["max_in_flight_seen"],
        "CPU s pipeline/emulator": f"{cpu_seconds(client) - client_cpu:.0f}/{cpu_seconds(server) - server_cpu:.0f}",
    }


def print_table(rows):
    cols = ["method", "requests", "seconds", "embeddings MB/s", "wire MB/s", "req/s", "req/s / bound", "wire MB/s / bound", "max in flight", "CPU s pipeline/emulator"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        cells = [f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        print("| " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="area side in pixels (default %(default)s)")
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--cap", type=int, default=40)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--tune", action="store_true", help="also sweep chunk size, request tile size and threads")
    parser.add_argument("--skip-xee", action="store_true")
    args = parser.parse_args()

    from pipelines import extract  # noqa: F401  (import time is not the pipeline's)

    tile = TileSpec("bench", "EPSG:32631", "31N", 700_000.0, 5_000_000.0, args.size, args.size)
    print(f"generating a {args.size} x {args.size} x 64 tile ...", file=sys.stderr)
    images = make_embedding_collection(years=(YEAR,), tiles=[tile], seed=7, nodata_fraction=0.01)
    work = tempfile.mkdtemp(prefix="efm-bench-")
    rows = []
    try:
        with EarthEngineEmulatorProcess(images, latency_s=args.latency, max_in_flight=args.cap) as emu:
            pixels = args.size * args.size

            def efm(chunk, tile_size=None, threads=None, transfer="auto"):
                out = os.path.join(work, f"efm-{chunk}-{tile_size}-{threads}-{time.time_ns()}.zarr")
                return lambda: run_efm(emu, tile, out, chunk, tile_size, threads, args.cap, transfer)

            def run(label, fn):
                rows.append(measure(emu, label, fn, args.cap, args.latency, pixels))
                print(f"  {label}: {rows[-1]['seconds']:.1f} s", file=sys.stderr)

            efm(args.chunk_size)()  # warm-up, not measured: one-time imports and Beam/Earth Engine start-up
            run(f"efm extract, chunk {args.chunk_size} (int8 on the wire)", efm(args.chunk_size))
            run(f"efm extract, chunk {args.chunk_size}, --transfer-dtype float32", efm(args.chunk_size, transfer="float32"))
            if not args.skip_xee:
                run(f"xee + xarray-beam, chunk {args.chunk_size}", lambda: run_xee(emu, tile, os.path.join(work, f"xee-{time.time_ns()}.zarr"), args.chunk_size))
            if args.tune:
                for chunk, tile_size, threads in [(256, None, 40), (1024, None, 40), (1024, 256, 40), (512, 128, 40), (512, None, 20), (512, None, 10)]:
                    run(f"efm chunk {chunk}, tile {tile_size or 'auto'}, threads {threads}", efm(chunk, tile_size, threads))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\narea {args.size} x {args.size} px x 64 bands, 1 year; emulator latency {args.latency} s, cap {args.cap} concurrent, "
          f"quota bound {min(args.cap / args.latency, QUOTA_RPS):.0f} requests/s; machine: {os.cpu_count()} cores\n")
    print_table(rows)


if __name__ == "__main__":
    main()
