"""Benchmark: which compressor and which chunk layout for the embedding stores (int8 codes and
float32 values; issue 17, item 1: Zstd against today's LZ4).

On one chunk of generated embeddings (sample_data: the mirror's int8 codes, and their float32
de-quantisation), in both layouts side by side in one run:

  band-last   (1, size, size, 64): today's v2 stores, `embedding (time, y, x, band)`;
  band-first  (1, 64, size, size): the convention's `embedding (time, band, y, x)`, each band's
              2-D plane contiguous (the new stores, and the public AEF mosaic's inner chunks).

For each codec: bytes on disk per byte of data (ratio), and encode / decode speed of the chunk in
MB/s of data, single-threaded (Blosc's own threads off), as a fetch or compute thread of a
pipeline runs it; best of --repeat. The codecs: today's Blosc-LZ4 5 with byte shuffle, Blosc-Zstd
at levels 1/3/5 with no/byte/bit shuffle, and plain Zstd 3 (what aef-mosaic writes). Generated
embeddings are not real AEF codes: they carry more per-pixel noise and less spatial structure, so
every codec's ratio is worse than on the real mosaic, and a layout or shuffle that exploits
spatial smoothness gains less here than there; the ranking is what these figures show.

    PYTHONPATH=$PWD python benchmarks/store_codecs.py [--size 1024] [--float-size 512] [--repeat 3]

The tables are printed and written to benchmarks/RESULTS.md under "## Store codecs".
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
TITLE = f"{SECTION} (issues 11 and 17: LZ4 vs Zstd, band-last vs band-first)"
LAYOUTS = ("band-last", "band-first")
DECISION = """
**The choice (issue 17): Blosc-Zstd level 1, no shuffle, for int8 codes and float32 values alike**
(`BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle", typesize=<itemsize>)`; figures from
the band-first columns, the layout the convention fixes). int8: 0.840 of the data against LZ4's
0.986 (15 % smaller), encoding a 67 MB chunk at ~280 MB/s (0.24 s; LZ4 0.05 s) and decoding at
~650 MB/s (0.1 s; LZ4 0.03 s). Levels 3 and 5 save another 0.3-0.5 % at 3-6x level 1's encode
time; plain Zstd 3 (aef-mosaic) is level 3's size at half level 1's speed. Shuffle must be set
explicitly: zarr-python 3 gives a 1-byte dtype **bit** shuffle (and level 5) when it is not,
and bit shuffle makes int8 codes 15 % bigger (0.968); byte shuffle is a no-op on 1-byte values.
float32 values are de-quantised codes (transforms/core/quantize.py: bit for bit Earth Engine's
values, so 255 distinct values): no shuffle keeps each value's 4 bytes together and Zstd finds
the repeats, 0.465 against LZ4's 0.910 (2x smaller) at ~155 MB/s (a 256 MiB float32 shard in
~1.7 s); byte shuffle splits them (0.733), bit shuffle more (0.863). Level 3 would make float32
another 28 % smaller (0.333) at 64 MB/s (4 s a shard), level 5 0.314 at 22 MB/s; plain Zstd 3
does best on float32 (0.307 at ~170 MB/s) but is not Blosc. Band-first vs band-last: with Zstd
the planes compress ~2 % better but encode 2x (level 1) to 4.5x (level 3) slower, Zstd finding
more matches to weigh; LZ4 is 1 % worse band-first. Generated codes are dominated by per-pixel
noise (0.84 even with Zstd); real AEF codes have more spatial structure, so Zstd on band-first
planes should gain more on them than here (not measured: no real codes offline).
(Issue 11's run of this benchmark, 2026-11-29, band-last only, kept Blosc-LZ4 for its speed;
its tables are in this file's git history.)
"""


def candidates():
    from numcodecs import Blosc, Zstd

    shuffles = (("no", Blosc.NOSHUFFLE), ("byte", Blosc.SHUFFLE), ("bit", Blosc.BITSHUFFLE))
    out = [("Blosc lz4 5, byte shuffle (today)", Blosc("lz4", 5, Blosc.SHUFFLE))]
    for level in (1, 3, 5):
        for name, shuffle in shuffles:
            out.append((f"Blosc zstd {level}, {name} shuffle", Blosc("zstd", level, shuffle)))
    out.append(("Zstd 3 (aef-mosaic)", Zstd(3)))
    return out


def sample_codes(size: int) -> np.ndarray:
    """One size x size tile of the generated mirror's int8 codes, (y, x, band): the file with the
    fewest no-data pixels (no-data compresses to nothing and would flatter every codec)."""
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
    print(f"chunk: {best[0] / best[1][0].size:.1%} no data", flush=True)
    return np.ascontiguousarray(np.moveaxis(best[1], 0, -1))


def chunk_data(size: int, float_size: int) -> dict[str, dict[str, np.ndarray]]:
    """{dtype: {layout: chunk}}: int8 codes (size x size px) and float32 values (the top-left
    float_size x float_size px of the same codes, de-quantised), each band-last (1, y, x, band)
    and band-first (1, band, y, x), C-contiguous as a store's chunk is."""
    from transforms.core import quantize

    codes = sample_codes(max(size, float_size))
    out = {}
    for dtype, values in (
        ("int8", codes[:size, :size]),
        ("float32", quantize.dequantize(codes[:float_size, :float_size])),
    ):
        out[dtype] = {
            "band-last": np.ascontiguousarray(values)[None],
            "band-first": np.ascontiguousarray(np.moveaxis(values, -1, 0))[None],
        }
    return out


def measure(codec, array: np.ndarray, repeat: int) -> tuple[float, float, float]:
    """(ratio, encode MB/s, decode MB/s) of one chunk; checks the round trip."""
    enc = dec = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        encoded = codec.encode(array)
        t1 = time.perf_counter()
        decoded = codec.decode(encoded)
        t2 = time.perf_counter()
        enc, dec = min(enc, t1 - t0), min(dec, t2 - t1)
    if bytes(decoded) != array.tobytes():
        raise AssertionError(f"{codec!r} did not round-trip")
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
        help="chunk side in px (default: %(default)s, efm's extract chunk and shard)",
    )
    parser.add_argument(
        "--float-size",
        type=int,
        default=512,
        help="float32 chunk side in px (default: %(default)s: the int8 chunk's bytes, so that the "
        "slowest codecs keep the run short; MB/s and ratios are per byte)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--no-results", action="store_true", help="print only; do not write benchmarks/RESULTS.md"
    )
    args = parser.parse_args()
    # as in a pipeline's worker threads (Blosc threads only from the main thread)
    numcodecs.blosc.use_threads = False
    started = time.perf_counter()
    arrays = chunk_data(args.size, args.float_size)
    lines = []
    for dtype, layouts in arrays.items():
        nbytes, side = layouts["band-last"].nbytes, layouts["band-last"].shape[1]
        lines.append(
            f"\n**{dtype}** chunk: {side} x {side} px x 64 bands = {nbytes / 1e6:.0f} MB"
            " (ratio = bytes on disk / bytes; MB/s of data)\n"
        )
        lines.append(
            "| codec | "
            + " | ".join(f"{lay} ratio | {lay} encode MB/s | {lay} decode MB/s" for lay in LAYOUTS)
            + " |"
        )
        lines.append("|---|" + "---:|" * 3 * len(LAYOUTS))
        for name, codec in candidates():
            cells = []
            for layout in LAYOUTS:
                ratio, enc, dec = measure(codec, layouts[layout], args.repeat)
                cells += [f"{ratio:.3f}", f"{enc:.0f}", f"{dec:.0f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numcodecs {numcodecs.__version__}"
    )
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    markdown = (
        f"{TITLE}\n\n`PYTHONPATH=$PWD python benchmarks/store_codecs.py --size {args.size} "
        f"--float-size {args.float_size} --repeat {args.repeat}` on {machine}, {time.strftime('%Y-%m-%d')}, "
        f"{time.perf_counter() - started:.0f} s, load average {load} at the end. "
        f"One thread, best of {args.repeat}. Data: generated embeddings (sample_data), "
        "which compress differently from real AEF codes (more per-pixel noise, less spatial "
        "structure): real ratios are lower for every codec; the ranking is what counts.\n"
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
