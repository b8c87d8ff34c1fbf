"""The constants of `efm extract --dry-run` (transforms/sources/extract_plan.py), measured, and the plan of a country.

1. Compression ratio of the store (bytes on disk / uncompressed) for float32 and int8 stores,
   measured on what `efm extract` writes from the Earth Engine emulator (synthetic embeddings that
   are de-quantised int8 codes, like the real collection), with the store's own Zarr compressor.
2. Throughput against the emulator (its own process, fixed latency per request, cap on
   concurrent requests): requests/s and MB/s on the wire of `efm extract` with default flags.
3. `efm extract --dry-run` of a country-sized area (6 x 8 degrees in one UTM zone, 8 years) in
   a process of its own: wall time and peak RSS.

    python benchmarks/plan_constants.py [--size 2048] [--latency 0.3] [--cap 40] [--country-only]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("EFM_EE_ACCESS_TOKEN", "benchmark-token")
os.environ.setdefault("NO_GCE_CHECK", "True")

import numpy as np  # noqa: E402
from extract_vs_xee import bbox_of, extract_quietly  # noqa: E402

from emulators.earthengine import EarthEngineEmulatorProcess  # noqa: E402
from emulators.earthengine.synthetic import (
    BAND_NAMES,
    COLLECTION_ID,
    TileSpec,
    make_embedding_collection,
)  # noqa: E402

YEAR = 2021
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTRY_BBOX = "0.0,43.0,6.0,51.0"  # 6 x 8 degrees: all of UTM zone 31N between 43 and 51 N
COUNTRY_YEARS = "2017-2024"


def chunk_bytes_on_disk(store: str) -> int:
    """Bytes of the `embedding` chunk files (not metadata, not markers)."""
    folder = os.path.join(store, "embedding")
    return sum(  # Zarr 3: shard files under c/ (zarr.json is metadata); Zarr 2: beside .zarray
        os.path.getsize(os.path.join(where, name))
        for where, _, names in os.walk(folder)
        for name in names
        if not name.startswith(".") and name != "zarr.json"
    )


def run_extract(emu, tile, output, dtype, cap):
    # Inset by 128 px: the area's lon/lat box, squared up in UTM, stays inside the tile (every chunk has data).
    argv = [
        "--bbox",
        bbox_of(tile, inset_px=128),
        "--crs",
        tile.crs,
        "--years",
        str(YEAR),
        "--output",
        output,
        "--dtype",
        dtype,
        "--tuning",
        f"ee_api_url={emu.url}",
        "--tuning",
        "ee_project=bench",
        "--tuning",
        f"max_concurrent_requests={cap}",
        "--runner=FnApiRunner",
    ]
    extract_quietly(argv)


def measure_store(emu, tile, work, dtype, cap):
    import xarray as xr

    output = os.path.join(work, f"{dtype}.zarr")
    emu.reset_stats()
    start = time.perf_counter()
    run_extract(emu, tile, output, dtype, cap)
    seconds = time.perf_counter() - start
    stats = emu.stats()
    requests = sum(stats["counts"].get("computePixels", {}).values())
    ds = xr.open_zarr(output)
    itemsize = np.dtype(dtype).itemsize
    raw = ds.sizes["y"] * ds.sizes["x"] * ds.sizes["band"] * ds.sizes["time"] * itemsize
    disk = chunk_bytes_on_disk(output)
    compressor = (
        ds["embedding"].encoding.get("compressor")
        or ds["embedding"].encoding.get("compressors")
        or ds["embedding"].encoding.get("serializer")
    )
    return {
        "store": dtype,
        "px": f"{ds.sizes['x']} x {ds.sizes['y']}",
        "requests": requests,
        "seconds": seconds,
        "req/s": requests / seconds,
        "wire MB/s": stats["bytes_out"] / 1e6 / seconds,
        "MB uncompressed": raw / 1e6,
        "MB on disk": disk / 1e6,
        "ratio": disk / raw,
        "compressor": str(compressor),
    }


def country_dry_run(work):
    """`efm extract --dry-run` of COUNTRY_BBOX x COUNTRY_YEARS in a child process: (seconds, peak RSS MiB, plan text)."""
    # Tiny images (10 x 10 px of 100 km) that cover the country for every year: the source checks pass.
    years = range(2017, 2025)
    images = [
        {
            "collection": COLLECTION_ID,
            "image_id": f"{COLLECTION_ID}/cover_{y}",
            "data": np.zeros((64, 10, 10), np.float32),
            "band_names": list(BAND_NAMES),
            "crs": "EPSG:32631",
            "transform": (100_000.0, 0.0, 0.0, 0.0, -100_000.0, 6_000_000.0),
            "start": f"{y}-01-01",
            "end": f"{y + 1}-01-01",
            "properties": {"UTM_ZONE": "31N"},
            "data_type": "double",
        }
        for y in years
    ]
    with EarthEngineEmulatorProcess(images) as emu:
        argv = [
            sys.executable,
            "-m",
            "pipelines.extract",
            "--bbox",
            COUNTRY_BBOX,
            "--years",
            COUNTRY_YEARS,
            "--output",
            os.path.join(work, "country.zarr"),
            "--tuning",
            f"ee_api_url={emu.url}",
            "--tuning",
            "ee_project=bench",
            "--dry-run",
        ]
        start = time.perf_counter()
        done = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}
        )
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert done.returncode == 0, done.stderr
    assert not os.path.exists(os.path.join(work, "country.zarr"))
    # RUSAGE_CHILDREN's maxrss: the largest child reaped so far, i.e. the dry run (the emulator is reaped later).
    return seconds, peak / 1024, done.stdout


def country_graph(work):
    """What a real run of the country builds before it runs: plan, store set-up, the Beam graph (not run)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.core import grid as gridlib
    from transforms.core.chunk_plan import ChunkPlan
    from transforms.sources import earthengine
    from transforms.sources.fetch import FetchChunks
    from transforms.storage import store

    start = time.perf_counter()
    grid, aoi = gridlib.plan_grid(gridlib.parse_bbox(COUNTRY_BBOX))
    years = list(range(2017, 2025))
    plan = ChunkPlan.for_area(grid, 1024, years, aoi)
    template = store.embedding_template(
        grid, years, earthengine.EMBEDDING_BANDS, "float32", 1024, {"source": "benchmark"}
    )
    output = os.path.join(work, "country-graph.zarr")
    store.prepare(output, template, resume=False, overwrite=False)
    source = earthengine.EarthEngineSource(
        grid=grid,
        years=tuple(years),
        bands=earthengine.EMBEDDING_BANDS,
        store_dtype="float32",
        transfer_itemsize=1,
    )
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    rows = list(plan.rows())  # as extract.main builds it
    written = (
        pipeline
        | beam.Create(rows)
        | beam.FlatMap(plan.expand)
        | FetchChunks(source, threads_per_worker=40)
        | store.WriteChunks(output, template)
    )
    written | store.MarkComplete(output, plan)
    proto = pipeline.to_runner_api().SerializeToString()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"country graph (plan, store set-up, Beam graph of {len(rows)} ChunkRows for {plan.count} chunks; not run): "
        f"{seconds:.1f} s, pipeline proto {len(proto) / 1e3:.0f} kB, peak RSS of this process so far {peak:.0f} MiB"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=2048, help="area side in pixels (default %(default)s)"
    )
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--cap", type=int, default=40)
    parser.add_argument(
        "--country-only", action="store_true", help="only the country's dry run (3.)"
    )
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="efm-plan-bench-")
    try:
        seconds, rss, text = country_dry_run(work)
        print(f"country dry run: {seconds:.1f} s wall, peak RSS {rss:.0f} MiB\n{text}")
        country_graph(work)
        if args.country_only:
            return

        from pipelines import extract  # noqa: F401  (import time is not the pipeline's)

        tile = TileSpec(
            "bench", "EPSG:32631", "31N", 700_000.0, 5_000_000.0, args.size + 256, args.size + 256
        )
        print(f"generating a {args.size} x {args.size} x 64 tile ...", file=sys.stderr)
        images = make_embedding_collection(
            years=(YEAR,), tiles=[tile], seed=7, nodata_fraction=0.01
        )
        rows = []
        with EarthEngineEmulatorProcess(
            images, latency_s=args.latency, max_in_flight=args.cap
        ) as emu:
            for dtype in ("float32", "int8"):
                rows.append(measure_store(emu, tile, work, dtype, args.cap))
                print(f"  {dtype}: {rows[-1]['seconds']:.1f} s", file=sys.stderr)
        print(
            f"area {args.size} x {args.size} px x 64 bands, 1 year, default flags (int8 on the wire, chunk 1024); emulator latency "
            f"{args.latency} s, cap {args.cap}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}\n"
        )
        cols = [
            "store",
            "px",
            "requests",
            "seconds",
            "req/s",
            "wire MB/s",
            "MB uncompressed",
            "MB on disk",
            "ratio",
            "compressor",
        ]
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for row in rows:
            print(
                "| "
                + " | ".join(
                    f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols
                )
                + " |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
