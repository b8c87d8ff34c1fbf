"""Benchmark: which compressor for the embedding stores' chunks (int8 codes and float32 values).

On chunks of generated embeddings (sample_data: the mirror's int8 codes, and their float32
de-quantisation), side by side in one run: bytes on disk per byte of data (ratio), and encode /
decode speed of one chunk in MB/s, single-threaded (Blosc's own threads off), as a fetch or
compute thread of a pipeline runs it. Best of --repeat. Generated noise compresses worse than
real embeddings: the ratios are an upper bound, and their ranking what matters.

    PYTHONPATH=$PWD python benchmarks/store_codecs.py [--size 1024] [--repeat 3]

The table is printed and written to benchmarks/RESULTS.md under "## Store codecs".
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SECTION = "## Store codecs"
DECISION = """
**The choice: the stores keep Blosc lz4 (level 5, byte shuffle), zarr's v2 default.** On int8 codes
it costs next to nothing either way (GB/s; a 64 MB chunk in ~15 ms) and saves ~3 %; Zstd 1 would
save ~14 % more at ~4x the encode and ~10x the decode time, and decoding is what every pipeline
after `extract` pays, chunk after chunk. On float32 values Zstd 1 or plain LZ4 would be 2.2x / 1.6x
smaller at 3x / 2.4x the encode time: there the store that is small is the int8 one (`--dtype
int8`, 4x smaller before compression, and lossless for this dataset), so float32 keeps the
fastest codec too. Generated noise compresses worse than real embeddings, so the real ratios are
lower for every codec; their order is what these figures show.
"""


def candidates():
    from numcodecs import LZ4, Blosc, Zstd

    return [
        (
            "Blosc lz4 5, byte shuffle (zarr's v2 default; efm <= this issue)",
            Blosc("lz4", 5, Blosc.SHUFFLE),
        ),
        ("Blosc lz4 1, no shuffle", Blosc("lz4", 1, Blosc.NOSHUFFLE)),
        ("LZ4", LZ4()),
        ("Zstd 1", Zstd(1)),
        ("Zstd 3", Zstd(3)),
        ("Blosc zstd 1, byte shuffle", Blosc("zstd", 1, Blosc.SHUFFLE)),
        ("Blosc zstd 1, bit shuffle", Blosc("zstd", 1, Blosc.BITSHUFFLE)),
        ("none", None),
    ]


def chunk_data(size: int) -> dict[str, np.ndarray]:
    """One size x size chunk of the generated mirror's codes, (y, x, band) as in the store: the
    file with the fewest no-data pixels (no-data compresses to nothing and would flatter every codec)."""
    import rasterio

    from sample_data import generate as sample_data
    from transforms.core import quantize

    with tempfile.TemporaryDirectory() as tmp:
        data = sample_data.generate(
            tmp, sample_data.SampleSpec(rows=size, cols=2 * size, tile_size=size, years=(2022,))
        )
        best = None
        for path in data.files:
            with rasterio.open(path) as ds:
                planar = ds.read()
            nodata = int((planar[0] == quantize.NODATA_CODE).sum())
            if best is None or nodata < best[0]:
                best = (nodata, planar)
    print(f"chunk: {best[0] / best[1][0].size:.1%} no data")
    codes = np.ascontiguousarray(np.moveaxis(best[1], 0, -1))
    return {"int8": codes, "float32": quantize.dequantize(codes)}


def measure(codec, array: np.ndarray, repeat: int) -> tuple[float, float, float]:
    """(ratio, encode MB/s, decode MB/s) of one chunk."""
    if codec is None:
        return 1.0, float("nan"), float("nan")
    enc = dec = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        encoded = codec.encode(array)
        t1 = time.perf_counter()
        codec.decode(encoded)
        t2 = time.perf_counter()
        enc, dec = min(enc, t1 - t0), min(dec, t2 - t1)
    mb = array.nbytes / 1e6
    return len(encoded) / array.nbytes, mb / enc, mb / dec


def write_results(markdown: str) -> str:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from results import write_section

    return write_section(SECTION, markdown)


def main() -> int:
    import numcodecs.blosc

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--size",
        type=int,
        default=1024,
        help="chunk side in px (default: %(default)s, efm's default chunk)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--no-results", action="store_true", help="print only; do not write benchmarks/RESULTS.md"
    )
    args = parser.parse_args()
    numcodecs.blosc.use_threads = (
        False  # as in a pipeline's worker threads (Blosc threads only from the main thread)
    )
    arrays = chunk_data(args.size)
    lines = []
    for dtype, array in arrays.items():
        lines.append(
            f"\n**{dtype}** chunk: {args.size} x {args.size} px x 64 bands = {array.nbytes / 1e6:.0f} MB\n"
        )
        lines.append("| codec | bytes on disk / bytes | encode MB/s | decode MB/s |")
        lines.append("|---|---:|---:|---:|")
        for name, codec in candidates():
            ratio, enc, dec = measure(codec, array, args.repeat)
            lines.append(f"| {name} | {ratio:.3f} | {enc:.0f} | {dec:.0f} |")
        print("\n".join(lines[-(len(candidates()) + 3) :]), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    markdown = (
        f"{SECTION}\n\n`PYTHONPATH=$PWD python benchmarks/store_codecs.py --size {args.size} --repeat {args.repeat}` on {machine}, "
        f"{time.strftime('%Y-%m-%d')}, load average {load} at the end. One thread, best of {args.repeat}.\n"
        + "\n".join(lines)
        + "\n"
        + DECISION
    )
    print("\n" + markdown)
    if not args.no_results:
        print(f"written to {write_results(markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
