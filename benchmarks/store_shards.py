"""Benchmark: shard and inner-chunk sizes of the new stores (issue 17, item 1), side by side in one run.

A 4096 x 4096 px x 64-band int8 store `embedding (time, band, y, x)` in Zarr 3 with the sharding
codec (zarr-python 3), Blosc-Zstd, for each shard side (1024 = efm's extract chunk: one worker
writes one shard; 2048; 4096 = the public AEF mosaic's) and inner chunk side (64 ... 1024):

  write    one whole shard, written as a worker writes it (`array[shard] = values`), in a fresh
           process with zarr's thread pool at 1 thread: seconds, and the process's peak RSS
           (VmHWM, reset just before the write) over its RSS before (= what writing costs on top
           of the shard's values, which the worker holds anyway);
  disk     bytes on disk / bytes of data, and each shard's index (16 bytes per inner chunk + 4);
  read     a 64 x 64, 256 x 256 and 1024 x 1024 px window (all bands) at an unaligned position,
           read by zarr over HTTP range requests from a loopback server (tests/helpers/range_http.py) that
           counts the requests and the bytes it sends, and sleeps --latency-ms before each answer
           (an object store's first-byte latency): requests, bytes fetched / bytes of the window,
           and the read's wall time. Each read is checked against the values written.

The data is generated (sample_data's embeddings, one 1024 x 1024 tile, turned and mirrored into
16 tiles): it compresses differently from real AEF codes (more per-pixel noise, less spatial
structure), so real stores are smaller; sizes relative to each other are what counts.

    PYTHONPATH=$PWD python benchmarks/store_shards.py [--level 1] [--shuffle noshuffle]

The tables are printed and written to benchmarks/RESULTS.md under "## Store shards".
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

SECTION = "## Store shards"
SIDE = 4096  # the store: SIDE x SIDE px
BANDS = 64
TILE = 1024  # the generated tile the store is made of
SHARDS = (1024, 2048, 4096)
INNERS = (64, 128, 256, 512, 1024)
BIG_SHARD_INNERS = (
    256,
)  # by default the larger shards only with this inner chunk (--all: every one)
WINDOWS = (64, 256, 1024)
# Unaligned to every inner chunk; the 1024 px window stays inside one 2048 and one 4096 shard
# (so only the shards it touches need writing) and crosses four 1024 px shards.
ORIGIN = (2148, 2348)
DECISION = """
With `--all` (every inner size for the 2048 and 4096 px shards too; one run at load ~6): the
writer's extra memory is 1.7-2.3x the shard's bytes at 2048 px (inner 128-1024) and 1.7-1.8x at
4096 px whatever the inner size; disk and index as above; reads as for 1024 px shards, except that
a 1024 px window inside one shard pays that shard's requests in sequence (64 px inner: 290
requests, 7.7 s; 128 px: 82, 2.7-3.0 s; 256 px: 26, 1.0-1.3 s).

**The choice (issue 17): shard 1024 px (= efm's extract chunk; one worker writes one shard),
inner chunk 256 px, Blosc-Zstd level 1 without shuffle (section "Store codecs").**

*Shard.* Writing a shard costs the writer ~1.7-1.9x the shard's bytes on top of the values it
holds (1.7-2.5x at 1024 px, where the allocator's noise is a larger share): zarr 3.1.6 keeps
every encoded inner chunk, then joins them into one shard buffer: two encoded copies. An int8
shard of 1024 px (64 MiB) peaks the writing process at ~0.3 GiB, 2048 px at 0.85 GiB, 4096 px
(the public mosaic's) at 2.9 GiB: more than issue 8's 2 GiB per worker by itself. A float32
store is 4x: 1024 px = 256 MiB + at most ~0.5 GiB to write, inside the budget with the process's
512 MiB and two open chunks; 2048 px = 1 GiB + 1-1.8 GiB, not. For the writer:
`fetch_bounds.CHUNK_COST_FACTOR` (2.5 = the chunk, its tiles in flight, one encoded copy) undercounts a
zarr sharded write by about one encoded copy (~0.85x the chunk at these ratios, up to 1x on
incompressible data); writing the shard file directly (inner chunks encoded one at a time and
appended, the index last) would need neither copy.

*Inner chunk.* 256 px serves both kinds of reader. A notebook's 256 px window fetches 3.3x its
bytes in 5 requests (128 px: 1.9x in 10; 64 px: 1.4x in 26); a browser's 64 px window 13x
(3.5 MB, one inner chunk) in 2 (128 px: 6.8x in 3; 64 px: 3.5x in 5). A 1024 px window (a Beam
unit read off the shard grid) fetches 1.31x in 26-29 requests, 0.6-1.1 s at 20 ms a request,
against 85 requests and 1.9 s at 128 px and 293 requests and 5 s at 64 px: zarr 3.1.6 fetches
one shard's inner chunks one after another, so each request's latency (and price) adds up.
Units on the shard grid read a whole shard in one request (zarr reads a shard whole when every
inner chunk of it is wanted: one request per shard in the 1024/1024 row). 512 and 1024 px make
a 64 px window fetch 54x and 215x its bytes. Smaller inner chunks also compress worse (0.861 at
64 px, 0.852 at 128, 0.838-0.840 at 256-1024); the shard index is negligible at every size
(260 B per 1024 px shard at 256 px). A viewer of single fields would fetch half the bytes with
128 px, at 3x the requests of every larger read. 256 px is also the public AEF mosaic's inner
chunk, so efm's stores and the mosaic read alike, and item 3's bound (bytes fetched at most 1.3x
those of the chunks that touch the area) holds: zarr fetches the shard's index and exactly the
inner chunks touched (the request counts and byte ratios above).
"""


# --- the data -------------------------------------------------------------------------------


def variant(tile: np.ndarray, ty: int, tx: int) -> np.ndarray:
    """The tile at tile position (ty, tx): one of the tile's 8 turns and mirrors (band, y, x)."""
    k = (ty * 4 + tx) % 8
    turned = np.rot90(tile, k % 4, axes=(1, 2))
    return turned[:, :, ::-1] if k >= 4 else turned


def region(tile: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """The store's values in rows y0:y1, cols x0:x1: (band, y, x) int8, C-contiguous."""
    side = tile.shape[1]
    out = np.empty((tile.shape[0], y1 - y0, x1 - x0), dtype=tile.dtype)
    for ty in range(y0 // side, (y1 - 1) // side + 1):
        for tx in range(x0 // side, (x1 - 1) // side + 1):
            ys, ye = max(y0, ty * side), min(y1, (ty + 1) * side)
            xs, xe = max(x0, tx * side), min(x1, (tx + 1) * side)
            out[:, ys - y0 : ye - y0, xs - x0 : xe - x0] = variant(tile, ty, tx)[
                :, ys - ty * side : ye - ty * side, xs - tx * side : xe - tx * side
            ]
    return out


def shards_touched(shard: int, windows=WINDOWS, origin=ORIGIN) -> list[tuple[int, int]]:
    """(shard row, shard col) of every shard a window touches, the first one's first."""
    out = []
    for w in windows:
        y0, x0 = origin
        for sy in range(y0 // shard, (y0 + w - 1) // shard + 1):
            for sx in range(x0 // shard, (x0 + w - 1) // shard + 1):
                if (sy, sx) not in out:
                    out.append((sy, sx))
    return out


# --- the store ------------------------------------------------------------------------------


def codec(level: int, shuffle: str):
    from zarr.codecs import BloscCodec

    # typesize and shuffle explicit: zarr's default for an int8 array is bit shuffle
    return BloscCodec(cname="zstd", clevel=level, shuffle=shuffle, typesize=1)


def create(path: str, shard: int, inner: int, level: int, shuffle: str):
    import zarr

    root = zarr.open_group(path, mode="w", zarr_format=3)
    return root.create_array(
        "embedding",
        shape=(1, BANDS, SIDE, SIDE),
        shards=(1, BANDS, shard, shard),
        chunks=(1, BANDS, inner, inner),
        dtype="int8",
        fill_value=-128,
        compressors=codec(level, shuffle),
        dimension_names=("time", "band", "y", "x"),
    )


def _status(field: str) -> int:
    """A /proc/self/status field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def child_write(spec: dict) -> dict:
    """In a fresh process: write the shards `spec` lists; the first one measured."""
    import zarr

    zarr.config.set({"threading.max_workers": 1})  # one thread, as one Beam work item
    tile = np.load(spec["tile"])
    array = zarr.open_array(os.path.join(spec["store"], "embedding"), mode="r+")
    shard, out = spec["shard"], {}
    for i, (sy, sx) in enumerate(spec["shards"]):
        y0, x0 = sy * shard, sx * shard
        values = region(tile, y0, y0 + shard, x0, x0 + shard)[None]
        if i == 0:
            gc.collect()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            before = _status("VmRSS")
            t0 = time.perf_counter()
            array[:, :, y0 : y0 + shard, x0 : x0 + shard] = values
            out = {
                "seconds": time.perf_counter() - t0,
                "rss_before": before,
                "peak": _status("VmHWM"),
            }
        else:
            array[:, :, y0 : y0 + shard, x0 : x0 + shard] = values
        del values
    return out


def write(path: str, tile_path: str, shard: int, inner: int, level: int, shuffle: str) -> dict:
    create(path, shard, inner, level, shuffle)
    spec = {"store": path, "tile": tile_path, "shard": shard, "shards": shards_touched(shard)}
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child-write", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def disk(path: str, shard: int, inner: int) -> dict:
    folder = os.path.join(path, "embedding", "c")
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    stored = sum(os.path.getsize(f) for f in files)
    return {
        "ratio": stored / (len(files) * shard * shard * BANDS),
        "index": 16 * (shard // inner) ** 2 + 4,
        "shard_bytes": stored / len(files),
    }


# --- reading over HTTP ----------------------------------------------------------------------


def serve(folder: str, latency_s: float):
    """tests/helpers/range_http.py's server on `folder`, each answer `latency_s` late."""
    from tests.helpers import range_http

    server, url = range_http.serve(folder)
    handler = server.RequestHandlerClass.func  # this server's own subclass: patch only it
    send_head = handler.send_head

    def late_send_head(self):
        time.sleep(latency_s)
        return send_head(self)

    handler.send_head = late_send_head
    return server, url


def read_windows(server, url: str, name: str, tile: np.ndarray) -> list[dict]:
    import zarr
    from zarr.storage import FsspecStore

    store = FsspecStore.from_url(f"{url}/{name}", read_only=True)
    array = zarr.open_array(store, path="embedding", mode="r")  # metadata: not counted
    out = []
    for w in WINDOWS:
        y0, x0 = ORIGIN
        seen, sent = len(server.requests_seen), len(server.bytes_sent)
        t0 = time.perf_counter()
        got = array[0, :, y0 : y0 + w, x0 : x0 + w]
        seconds = time.perf_counter() - t0
        requests = len(server.requests_seen) - seen
        deadline = time.monotonic() + 5  # the server counts a body once it has sent all of it
        while len(server.bytes_sent) - sent < requests and time.monotonic() < deadline:
            time.sleep(0.01)
        fetched = sum(server.bytes_sent[sent:])
        if not np.array_equal(got, region(tile, y0, y0 + w, x0, x0 + w)):
            raise AssertionError(f"{name}: the {w} px window differs from what was written")
        out.append(
            {"requests": requests, "bytes": fetched, "raw": BANDS * w * w, "seconds": seconds}
        )
    return out


# --- the run --------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def run(args) -> tuple[list[str], list[str]]:
    import zarr

    sys.path.insert(0, HERE)
    import store_codecs

    tmp = tempfile.mkdtemp(prefix="store_shards_")
    try:
        tile = np.ascontiguousarray(np.moveaxis(store_codecs.sample_codes(TILE), -1, 0))
        tile_path = os.path.join(tmp, "tile.npy")
        np.save(tile_path, tile)
        stores = os.path.join(tmp, "stores")
        os.makedirs(stores)
        server, url = serve(stores, args.latency_ms / 1000)
        writes = [
            "| shard | inner | write s | MB/s | writer peak RSS | peak - RSS before | "
            "/ shard bytes | on disk / data | index per shard |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        reads = [
            "| shard | inner | "
            + " | ".join(
                f"{w} px: requests | {w} px: fetched / window | {w} px: s" for w in WINDOWS
            )
            + " |",
            "|---:|---:|" + "---:|" * 3 * len(WINDOWS),
        ]
        for shard in args.shards:
            inners = args.inners if args.all or shard == SHARDS[0] else BIG_SHARD_INNERS
            for inner in [c for c in inners if c <= shard]:
                name = f"s{shard}_c{inner}.zarr"
                path = os.path.join(stores, name)
                w = write(path, tile_path, shard, inner, args.level, args.shuffle)
                d = disk(path, shard, inner)
                raw = shard * shard * BANDS
                extra = w["peak"] - w["rss_before"]
                writes.append(
                    f"| {shard} | {inner} | {w['seconds']:.2f} | {raw / 1e6 / w['seconds']:.0f} | "
                    f"{_mib(w['peak'])} | {_mib(extra)} | {extra / raw:.2f} | {d['ratio']:.3f} | "
                    f"{d['index']:,} B = {d['index'] / d['shard_bytes'] * 1e6:.0f} ppm |"
                )
                print(writes[-1], flush=True)
                cells = []
                for r in read_windows(server, url, name, tile):
                    cells += [
                        f"{r['requests']}",
                        f"{r['bytes'] / r['raw']:.2f}",
                        f"{r['seconds']:.2f}",
                    ]
                reads.append(f"| {shard} | {inner} | " + " | ".join(cells) + " |")
                print(reads[-1], flush=True)
                shutil.rmtree(path)
        server.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"zarr {zarr.__version__}")
    return writes, reads


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child-write":
        print(json.dumps(child_write(json.loads(sys.argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--level", type=int, default=1, help="Blosc-Zstd level (%(default)s)")
    parser.add_argument(
        "--shuffle",
        default="noshuffle",
        choices=("noshuffle", "shuffle", "bitshuffle"),
        help="Blosc shuffle (default: %(default)s; byte shuffle is the same for int8)",
    )
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--shards", type=lambda s: [int(v) for v in s.split(",")], default=list(SHARDS)
    )
    parser.add_argument(
        "--inners", type=lambda s: [int(v) for v in s.split(",")], default=list(INNERS)
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="every inner size for every shard size (default: the larger shards only with "
        f"{', '.join(map(str, BIG_SHARD_INNERS))} px inner chunks, to keep the run short)",
    )
    parser.add_argument(
        "--no-results", action="store_true", help="print only; do not write benchmarks/RESULTS.md"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    writes, reads = run(args)
    import zarr

    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, zarr {zarr.__version__}"
    )
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    command = (
        "PYTHONPATH=$PWD python benchmarks/store_shards.py"
        + (f" --level {args.level} --shuffle {args.shuffle} --latency-ms {args.latency_ms:g}")
        + (" --all" if args.all else "")
    )
    markdown = (
        f"{SECTION} (issue 17: shard and inner-chunk sizes)\n\n`{command}` on {machine}, "
        f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s, load average "
        f"{load} at the end. Store: {SIDE} x {SIDE} px x {BANDS} bands int8, "
        f"`embedding (time, band, y, x)`, Blosc-Zstd {args.level} {args.shuffle}; generated "
        "embeddings (sample_data), which compress differently from real AEF codes.\n\n"
        "**Writing one whole shard** (a fresh process, zarr's pool at 1 thread; peak RSS = VmHWM "
        "reset just before the write; the shard's values are held before it, and counted in the "
        "RSS before):\n\n"
        + "\n".join(writes)
        + f"\n\n**Reading a window** at row {ORIGIN[0]}, col {ORIGIN[1]} (all bands) with zarr "
        f"over HTTP range requests, {args.latency_ms:g} ms before each answer (array metadata "
        "read beforehand, not counted; fetched = body bytes the server sent / the window's "
        "bytes of data):\n\n" + "\n".join(reads) + "\n" + DECISION
    )
    print("\n" + markdown)
    if not args.no_results:
        sys.path.insert(0, HERE)
        from results import write_section

        print(f"written to {write_section(SECTION, markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
