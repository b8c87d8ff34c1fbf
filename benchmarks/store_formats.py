"""Benchmark: efm's stores before and after issue 17, read by classify and similarity, side by side in one run.

The same embeddings (a generated COG mirror, `efm extract --source cog` over its whole area:
--size px a side, 2 years, 64 bands, 1024 px chunks) in three places:

  (a) v2      a local Zarr 2 store as efm wrote it before issue 17 (`embedding (time, y, x,
              band)`, Blosc-LZ4), extracted by efm at commit 713b4f6 (exported to the workdir);
  (b) v3      the same data as efm writes it now (Zarr 3, `embedding (time, band, y, x)`, 1024 px
              shards of 256 px inner chunks, Blosc-Zstd 1, float32 in 256 KiB
              Blosc blocks), extracted by this tree;
  (c) v3 S3   store (b) served as S3 on loopback by `rclone serve s3` (benchmarks/loopback_s3.py:
              moto, the tests' server, serves ranges at ~50 MiB/s, no stand-in for a bucket's
              speed), read anonymously through s3fs as a public bucket is.

Each of `efm classify` (a random forest, or --model knn; .skops) and `efm similarity` (reference
points from a CSV) runs as users run it (`python -m pipelines.cli ...`, default flags: the local
runner), in a fresh process; wall and CPU seconds (user + system) of the process tree
(benchmarks/process_tree.py). Every configuration gets the same unmeasured warm-up run (the
store in the page cache), then the measured runs are interleaved
(a, b, c, a, b, c, ...) and each column keeps its best of --repeat. Outputs of (a), (b) and (c)
are compared value for value.

Extraction: `efm extract --source cog --dtype int8` of the same area, by 713b4f6 (Zarr 2) and by
this tree (Zarr 3), interleaved, best of --repeat (fresh output each time); and, less noisy,
`zarr_direct.ChunkWriter.write` of the same in-memory chunks (band last, as the sources give
them) into a fresh v2 and a fresh v3 store, in this process, best of --repeat.

    PYTHONPATH=$PWD python benchmarks/store_formats.py [--size 2048] [--repeat 3] [--model random-forest] [--keep]

Needs the bench extra (rclone): pip install -c constraints.txt -e '.[bench]'.

The tables are printed and written to benchmarks/RESULTS.md under "## Store formats (issue 17)".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

SECTION = "## Store formats (issue 17)"
OLD = "713b4f6"  # the last commit whose efm wrote Zarr 2 stores
LABEL = "target"
CONFIGS = ("a", "b", "c")
FINDINGS = """
**Where (b) spends CPU that (a) does not, profiled** (`getrusage` per phase, one process, the
same 8 windows (4 x 1024 px, 2 years) of each 2048 px store, `StoreReader.read_codes` then
`store.as_float` then the product's function; load 2-4):

| CPU s, 8 windows | int8 (a) | int8 (b) | float32 (a) | float32 (b), before |
|---|---:|---:|---:|---:|
| read (file + decode [+ interleave]) | 0.59 | 1.64-1.72 | 2.46 | 5.99 |
| of which: file read / Blosc decode / interleave to (pixels, bands) | - | 0.17 / 0.67 / 0.85 | - | 0.39 / 3.24 / 2.30 |
| de-quantise (int8 -> float32 table) | 1.46 | 1.52 | 0 | 0 |
| similarity (`einsum` dot product) | 0.20 | 0.19 | 0.19 | 0.19 |

Side by side under load 6-9 (same script, 8 windows): float32 (b) before 7.49-7.59 (file 0.52-0.65,
decode 3.37-3.46, interleave 3.42-3.44), now 6.46-6.56 (0.38-0.39, 2.87-3.00, 3.09-3.11). The rest
of each run (~5.5 s of a similarity run: imports, Beam, the output store, the reference points) is
the same for (a) and (b).

**What changed, measured: float32 inner chunks in Blosc blocks of 256 KiB**
(`transforms/storage/zarr_direct.py`: `codec(dtype)`, `WIDE_BLOCKSIZE`). Blosc compresses each
block alone, and the block it picks itself at Zstd level 1 is small; on this mirror's float32
inner chunks (one 1024 px shard, 16 inner chunks, one thread, best of 3):

| float32, Blosc-Zstd | ratio | decode s / shard | encode s / shard |
|---|---:|---:|---:|
| level 1, no shuffle, blosc's own block (before) | 0.464 | 0.41-0.42 | 1.46-1.50 |
| level 1, no shuffle, 64 / 128 KiB | 0.428 / 0.407 | 0.365 / 0.345 | 1.39 / 1.35 |
| **level 1, no shuffle, 256 KiB (now)** | **0.357** | **0.344-0.356** | **1.30-1.35** |
| level 1, no shuffle, 512 KiB / 1 MiB | 0.393 / 0.390 | 0.354 / 0.330 | 1.26 / 1.21 |
| level 2 / 3, no shuffle, 256 KiB | 0.321 / 0.309 | 0.430 / 0.351 | 1.72 / 3.84 |
| level 1, byte shuffle, 256 KiB / 2 MiB | 0.635 / 0.545 | 0.307 / 0.273 | 0.79 / 0.72 |
| level 1, bit shuffle, 1 MiB | 0.846 | 0.197 | 0.47 |
| (a)'s Blosc-LZ4 5, byte shuffle | 0.911 | 0.081 | 0.28 |

Against blosc's own block, 256 KiB is smaller and faster to decode and encode; among block sizes
it is the smallest, within 8 % of the fastest decode (1 MiB); the shuffles decode faster but make
the store 1.5-2.4x bigger. Whole store: float32 (b) 996,651,536 -> 766,819,599 bytes (0.506 -> 0.389 of
(a)); similarity float32 (b) 11.7 -> 10.6 CPU s, (b)/(a) 1.23 -> 1.12 side by side (the table
above); against the previous run of this section (another day and load): similarity float32
1.31 -> 1.17, classify float32 1.10 -> 1.06. int8
keeps blosc's own block: 256 KiB or 1 MiB make the codes 2 % bigger (0.837 -> 0.852) for
0.005-0.007 s a shard less decode; bit shuffle with 1 MiB blocks decodes 16 % faster but is 13 %
bigger; (a)'s LZ4 "decodes" int8 in 0.007 s because these generated codes do not compress under
LZ4 and blosc stores its blocks as they are. Stores written before keep their codec (the reader
takes any block size). The extract plan's `COMPRESSION_RATIO` (float32 0.506,
`transforms/sources/extract_plan.py`) now overstates the size: an upper bound still, left.

**Checked, measured, not done:**
- Blosc's own threads: no spinning cost: a window's decode costs the same or less CPU with
  numcodecs' threads (main thread) than without (int8 1.72 vs 2.23, float32 5.99 vs 6.47 CPU s
  per 8 windows; in a product run the decode is in the read-ahead thread, single-threaded).
  zarr's codec pool and `async.concurrency` are not on this path: (b)'s windows are read by
  `ShardWindows`, without zarr; the output stores are written the same way for (a) and (b).
- The interleave to (pixels, bands) is at numpy's floor: per 1024 px window, 0.18-0.25 s int8 /
  0.24-0.29 float32 (16-64 rows a pass: within 5 %), against 1.2-2.0 / 0.43-0.52 for
  `np.copyto` of the transposed view (whole, in row or column blocks).
- int8 de-quantise fused with the interleave (16-row slabs interleaved into a cache-sized buffer,
  then the table look-up into the float32 window): 0.40 s a window against 0.38 for the two
  passes; a look-up with the transposed codes as index: 1.03 s. No gain.
- Classify without the interleave: scikit-learn's trees take a band-first window as a
  Fortran-ordered (pixels, bands) view and predict the same classes, but the random forest's
  `predict_proba` took 2.72-2.80 s on half a window against 1.91-1.92 s pixel-major: 40 % more,
  against ~0.1-0.3 s saved.
- Similarity band first (`refs @ X` on (bands, pixels)): numpy's `einsum('ijk,k->ij')` on
  band-last data sums each pixel's 64 products in SIMD lanes with fused multiply-adds; no numpy
  formula over band-first planes gives the same float32 bits (the previous run: 18.6 % of
  results bit-equal), so (a)'s, (b)'s and earlier outputs would differ. Not done.
- Classify on band-first inner chunks as cache-sized Fortran-ordered blocks (no interleave):
  a random forest of 50 trees on 1024^2 px, 65,536 px a block, 4.4-4.6 CPU s against 3.4-3.5
  pixel-major: the trees read a pixel's features from 64 cache lines instead of 4, in cache or
  not. Not done.
- The shard writer without zarr (numcodecs' Blosc on each inner chunk, the shard put together
  by hand): 0.22 against zarr's 0.29 CPU s an int8 shard, against LZ4's 0.05: extract would stay
  ~1.1x (a)'s CPU. Not done: a second writer of the shard format for a few per cent.

**Why (b) misses (b) <= (a) where it does: the codec the convention asks for.** Blosc-Zstd
decodes and encodes slower than (a)'s Blosc-LZ4: float32, Zstd's decode alone (0.34 s a shard)
is above (a)'s whole read (~0.31 s a window), and the interleave to (pixels, bands) (~0.15 s a
window, at numpy's floor) comes on top; classify hides most of it behind the model (1.02-1.06),
similarity float32 (one dot product a pixel) does not need to (band-first reads are cheaper
than (a)'s partial-chunk reads through zarr: 0.75-0.90). Writing, an int8 shard costs ~0.2 s of
Zstd level 1 (the lowest level Blosc has) against ~0.05 s of LZ4, which gives up on these
incompressible codes early: that is most of extract's +16-21 % CPU. The convention's codec is
kept (it is the point of the format, and it makes the stores 0.39 / 0.86 of (a)'s size, bytes
that a cloud read does not move); docs/data-contract.md records the decision.

**(c) over (b)**: read by `ShardWindows._read_streamed`: a remote shard's index, then its inner
chunks in ranged requests of up to 8 MiB, 8 at a time, each decoded as it arrives while the
others are on the wire. Before it, a window took its shard whole in one request (s3fs: a HEAD,
then 50 MiB pieces copied into one buffer; 1.6x the client CPU of the same bytes in 6 MiB ranges,
`s3_read_rate.py`) and decoded only after the last byte. A remote root is looked at once per
process (`reach.check_root` looked six times, each with an S3 client of its own) and the
collection check no longer opens a signing client besides (with both, a (c) similarity run took
10.8-11.1 s against 13.7-16.4 s with the streamed read alone; `/usr/bin/time`, same machine).
Earlier, on moto's server, (c) could not be measured for efm's part: moto copies the whole
object out for every ranged GET (~50 MiB/s here) and ran in the benchmark's own process.
Earlier changes of this section (read-ahead of the next chunk's windows, reference points from
inner chunks, inner chunks sliced as memoryviews) and their measurements: this file's git
history.
"""
NAMES = {"a": "(a) v2 local", "b": "(b) v3 local", "c": "(c) v3 over S3 (rclone, loopback)"}


# ---------------------------------------------------------------- the data


def old_tree(workdir: str) -> str:
    """efm at OLD, exported (git archive) into the workdir: the writer of Zarr 2 stores."""
    from trees import export

    return export(OLD, os.path.join(workdir, f"efm-{OLD}"))


def make_mirror(workdir: str, size: int) -> dict:
    """A generated COG mirror (sample_data) whose inner area is about `size` px a side."""
    out = os.path.join(workdir, f"mirror-{size}")
    manifest = os.path.join(out, "bench.json")
    if os.path.exists(manifest):
        return json.load(open(manifest))
    from sample_data import generate as sample_data
    from sample_data.mirror import write_index, write_mirror
    from sample_data.world import inner_bbox, make_world

    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    # inner_bbox keeps 2 px each side, and the grid planned on its lon/lat box loses one more:
    # 6 px more than `size` make an extracted grid of `size` px a side.
    spec = sample_data.SampleSpec(rows=size + 6, cols=size + 6, tile_size=1024)
    world = make_world(spec)
    mirror = os.path.join(out, "mirror")
    write_index(write_mirror(world, mirror), mirror)
    saved = {
        "mirror": mirror,
        "crs": world.crs,
        "bbox": list(inner_bbox(world)),
        "years": list(spec.years),
    }
    json.dump(saved, open(manifest, "w"))
    return saved


def extract_argv(data: dict, output: str, dtype: str, old: bool = False) -> list[str]:
    """`old`: the argv of efm at OLD, before the chunk size became a --tuning key."""
    return [
        sys.executable,
        "-m",
        "pipelines.cli",
        "extract",
        "--source",
        "cog",
        "--cog-root",
        data["mirror"],
        f"--bbox={','.join(repr(v) for v in data['bbox'])}",
        "--crs",
        data["crs"],
        "--years",
        ",".join(map(str, data["years"])),
        "--output",
        output,
        "--dtype",
        dtype,
        *(["--chunk-size", "1024"] if old else ["--tuning", "chunk_size=1024"]),
    ]


def run(argv: list[str], tree: str, environment: dict | None = None) -> dict:
    """argv measured with `tree` on PYTHONPATH, in `environment` (default: this process's)."""
    from process_tree import measure

    return measure(argv, tree, env={**(environment or os.environ), "PYTHONPATH": tree})


def extract(data: dict, output: str, dtype: str, tree: str) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    return run(extract_argv(data, output, dtype, old=tree != ROOT), tree)


def disk_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, names in os.walk(path)
        for f in names
        if "efm_done" not in d  # the done markers: bookkeeping, not data
    )


def same_codes(a: str, b: str) -> bool:
    """The two stores hold the same values (read with zarr alone, each in its own dim order)."""
    from tests.helpers.store_factory import raw_embedding

    return bool(np.array_equal(raw_embedding(a), raw_embedding(b), equal_nan=True))


# ---------------------------------------------------------------- the model and the points


def train(store_path: str, workdir: str, kind: str) -> str:
    """A model on 2,000 pixels of the store, labelled by which of 6 bands is largest."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier

    from transforms.core.grid import Window
    from transforms.learning import models
    from transforms.storage.readers import StoreReader, store_info

    info = store_info(store_path)
    values = StoreReader(store_path).read(0, Window(0, 0, 1024, 1024)).reshape(-1, 64)
    rng = np.random.default_rng(1)
    pick = rng.choice(np.flatnonzero(~np.isnan(values).any(axis=1)), 2000, replace=False)
    x = values[pick]
    y = np.argmax(x[:, :6], axis=1)
    est = (
        KNeighborsClassifier(5)
        if kind == "knn"
        else RandomForestClassifier(50, n_jobs=-1, random_state=0)
    )
    est.fit(x, y)
    path = os.path.join(workdir, f"{kind}.skops")
    models.save_model(
        est, path, {"kind": "classifier", "classes": est.classes_, "bands": info.bands}
    )
    return path


def points(store_path: str, workdir: str) -> str:
    """50 reference points (pixel centres, in the store's CRS) as a CSV."""
    from transforms.storage.readers import store_info

    info = store_info(store_path)
    rng = np.random.default_rng(2)
    rows, cols = rng.integers(0, info.height, 50), rng.integers(0, info.width, 50)
    a, _, c, _, e, f = info.transform
    path = os.path.join(workdir, "points.csv")
    with open(path, "w") as out:
        out.write(f"x,y,{LABEL}\n")
        for r, col in zip(rows, cols):
            out.write(f"{c + (col + 0.5) * a},{f + (r + 0.5) * e},yes\n")
    return path


def product_argv(product: str, store: str, output: str, model: str, pts: str, crs: str):
    common = [sys.executable, "-m", "pipelines.cli", product, "--embeddings", store]
    if product == "classify":
        return [*common, "--model", model, "--output", output, "--overwrite"]
    return [
        *common,
        "--points",
        pts,
        "--tuning",
        f"points_crs={crs}",
        "--label",
        f"{LABEL}=yes",
        "--output",
        output,
        "--overwrite",
    ]


def output_values(path: str) -> np.ndarray:
    import zarr

    group = zarr.open_group(path, mode="r")
    name = "class" if "class" in group else "similarity"
    return np.asarray(group[name][...])


# ---------------------------------------------------------------- ChunkWriter on the same chunks


def cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def writer_speed(source: str, workdir: str, repeat: int) -> dict:
    """Best wall and CPU s of ChunkWriter.write of every chunk of `source` (read once, band last)
    into a fresh v2 and v3 store; {"v2": (wall, cpu), "v3": ..., "bytes": raw bytes}."""
    from tests.helpers.store_factory import write_v2
    from transforms.core.chunks import chunk_dataset, plan_chunks
    from transforms.core.grid import Grid
    from transforms.storage import store, zarr_direct
    from transforms.storage.readers import StoreReader, store_info

    info = store_info(source)
    a, _, c, _, e, f = info.transform
    grid = Grid(info.crs, a, c, f, info.width, info.height)
    reader = StoreReader(source)
    specs = plan_chunks(list(info.years), info.windows())
    chunks = [
        (
            spec,
            chunk_dataset(
                grid,
                info.years,
                info.bands,
                spec,
                reader.read_codes(
                    spec.time_index,
                    slice(spec.window.row, spec.window.row + spec.window.rows),
                    slice(spec.window.col, spec.window.col + spec.window.cols),
                ),
            ),
        )
        for spec in specs
    ]
    template = store.embedding_template(
        grid, list(info.years), info.bands, info.dtype, 1024, {"source": "benchmark"}
    )
    sizes = {"time": 1, "band": len(info.bands), "y": 1024, "x": 1024}
    best = {"v2": (float("inf"), 0.0), "v3": (float("inf"), 0.0)}
    for _ in range(repeat + 1):  # the first round is the warm-up
        for fmt in ("v2", "v3"):
            path = os.path.join(workdir, f"writer-{fmt}.zarr")
            shutil.rmtree(path, ignore_errors=True)
            if fmt == "v2":
                write_v2(path, template)
            else:
                store.setup(path, template)
            writer = zarr_direct.ChunkWriter(path, template, sizes)
            c0, t0 = cpu_seconds(), time.perf_counter()
            for spec, chunk in chunks:
                offsets = {"time": spec.time_index, "y": spec.window.row, "x": spec.window.col}
                writer.write(offsets, chunk)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            if wall < best[fmt][0]:
                best[fmt] = (wall, cpu)
            shutil.rmtree(path)
    raw = sum(chunk["embedding"].nbytes for _, chunk in chunks)
    return {**best, "bytes": raw}


# ---------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="store side, px (%(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs each (%(default)s)")
    parser.add_argument("--model", choices=("random-forest", "knn"), default="random-forest")
    parser.add_argument("--dtypes", default="int8,float32")
    parser.add_argument("--products", default="classify,similarity")
    parser.add_argument("--workdir", default="/tmp/efm-store-formats")
    parser.add_argument("--keep", action="store_true", help="keep the mirror and stores")
    parser.add_argument("--no-results", action="store_true", help="print only")
    args = parser.parse_args()
    started = time.perf_counter()
    os.makedirs(args.workdir, exist_ok=True)
    old = old_tree(args.workdir)
    data = make_mirror(args.workdir, args.size)
    dtypes, products = args.dtypes.split(","), args.products.split(",")
    from loopback_s3 import anonymous_env, rclone_s3

    load_before = os.getloadavg()
    stores, extracts, sizes = {}, {}, {}
    for dtype in dtypes:
        a = os.path.join(args.workdir, f"a-{dtype}.zarr")
        b = os.path.join(args.workdir, f"b-{dtype}.zarr")
        extracts[dtype] = {"a": [], "b": []}
        rounds = args.repeat + 1 if dtype == "int8" else 1
        for i in range(rounds):  # the first round: the warm-up (and the stores kept)
            for key, path, tree in (("a", a, old), ("b", b, ROOT)):
                if (
                    i == 0
                    and os.path.exists(os.path.join(path, "zarr.json" if key == "b" else ".zattrs"))
                    and args.keep
                ):
                    continue
                m = extract(data, path if i == 0 else path + ".again", dtype, tree)
                if i:
                    extracts[dtype][key].append(m)
                    shutil.rmtree(path + ".again")
                print(
                    f"extract {dtype} {key} round {i}: {m['s']:.1f} s, {m['cpu']:.1f} CPU s",
                    flush=True,
                )
        if not same_codes(a, b):
            raise SystemExit(f"{a} and {b} hold different values")
        sizes[dtype] = (disk_bytes(a), disk_bytes(b))
        stores[dtype] = {"a": a, "b": b}
    writes = {
        dtype: writer_speed(stores[dtype]["b"], args.workdir, args.repeat) for dtype in dtypes
    }
    print("writer", writes, flush=True)

    model = train(stores[dtypes[0]]["a"], args.workdir, args.model)
    pts = points(stores[dtypes[0]]["a"], args.workdir)
    results = {}
    served = os.path.join(args.workdir, "served")  # the bucket "bench": links to the (b) stores
    shutil.rmtree(served, ignore_errors=True)
    os.makedirs(os.path.join(served, "bench"))
    for dtype in dtypes:
        os.symlink(stores[dtype]["b"], os.path.join(served, "bench", f"b-{dtype}.zarr"))
        stores[dtype]["c"] = f"s3://bench/b-{dtype}.zarr"
    with rclone_s3(served) as endpoint:
        anonymous = anonymous_env(endpoint, args.workdir)
        for dtype in dtypes:
            for product in products:
                best = {k: None for k in CONFIGS}
                outputs = {}
                for i in range(args.repeat + 1):
                    for key in CONFIGS:
                        out = os.path.join(args.workdir, f"out-{product}-{dtype}-{key}.zarr")
                        argv = product_argv(
                            product, stores[dtype][key], out, model, pts, data["crs"]
                        )
                        m = run(argv, ROOT, anonymous if key == "c" else None)
                        print(
                            f"{product} {dtype} {key} round {i}: {m['s']:.1f} s, {m['cpu']:.1f} CPU s",
                            flush=True,
                        )
                        if i == 0:
                            outputs[key] = output_values(out)
                            continue
                        old_best = best[key]
                        best[key] = {
                            "s": min(m["s"], old_best["s"]) if old_best else m["s"],
                            "cpu": min(m["cpu"], old_best["cpu"]) if old_best else m["cpu"],
                        }
                same = all(
                    np.array_equal(outputs["a"], outputs[k], equal_nan=True) for k in CONFIGS
                )
                results[(dtype, product)] = {"best": best, "same": same}
                for key in CONFIGS:
                    shutil.rmtree(
                        os.path.join(args.workdir, f"out-{product}-{dtype}-{key}.zarr"),
                        ignore_errors=True,
                    )
    markdown = report(args, data, results, extracts, writes, sizes, started, load_before)
    print("\n" + markdown)
    if not args.no_results:
        from results import write_section

        print(f"written to {write_section(SECTION, markdown)}")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


def report(args, data, results, extracts, writes, sizes, started, load_before) -> str:
    import zarr

    lines = [
        "| dtype | product | run | wall s | CPU s | wall / (a) | CPU / (a) | target | same output as (a) |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for (dtype, product), r in results.items():
        best, a, b = r["best"], r["best"]["a"], r["best"]["b"]
        for key in CONFIGS:
            m = best[key]
            if key == "b":
                target = "<= 1 and <= 1: " + (
                    "met" if m["s"] <= a["s"] and m["cpu"] <= a["cpu"] else "NOT met"
                )
            elif key == "c":
                ratio = m["s"] / b["s"]
                target = f"wall / (b) = {ratio:.2f} <= 1.3: " + (
                    "met" if ratio <= 1.3 else "NOT met"
                )
            else:
                target = ""
            lines.append(
                f"| {dtype} | {product} | {NAMES[key]} | {m['s']:.1f} | {m['cpu']:.1f} | "
                f"{m['s'] / a['s']:.2f} | {m['cpu'] / a['cpu']:.2f} | {target} | "
                f"{'yes' if r['same'] or key == 'a' else 'NO'} |"
            )
    ext = [
        "| dtype | extract --source cog | wall s | CPU s | wall / v2 | CPU / v2 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for dtype, e in extracts.items():
        if not e["a"]:
            continue
        best = {k: (min(m["s"] for m in v), min(m["cpu"] for m in v)) for k, v in e.items()}
        for key, name in (("a", f"{OLD} (Zarr 2)"), ("b", "this tree (Zarr 3)")):
            ext.append(
                f"| {dtype} | {name} | {best[key][0]:.1f} | {best[key][1]:.1f} | "
                f"{best[key][0] / best['a'][0]:.2f} | {best[key][1] / best['a'][1]:.2f} |"
            )
    wr = [
        "| dtype | ChunkWriter.write, all chunks | wall s | CPU s | MB/s of data | wall / v2 | CPU / v2 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for dtype, w in writes.items():
        for key in ("v2", "v3"):
            wr.append(
                f"| {dtype} | {key} | {w[key][0]:.2f} | {w[key][1]:.2f} | "
                f"{w['bytes'] / 1e6 / w[key][0]:.0f} | {w[key][0] / w['v2'][0]:.2f} | "
                f"{w[key][1] / w['v2'][1]:.2f} |"
            )
    disk = ["| dtype | (a) v2 bytes | (b) v3 bytes | (b) / (a) |", "|---|---:|---:|---:|"]
    for dtype, (a, b) in sizes.items():
        disk.append(f"| {dtype} | {a:,} | {b:,} | {b / a:.3f} |")
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, zarr {zarr.__version__}"
    )
    command = (
        f"PYTHONPATH=$PWD python benchmarks/store_formats.py --size {args.size} "
        f"--repeat {args.repeat} --model {args.model}"
        + (f" --dtypes {args.dtypes}" if args.dtypes != "int8,float32" else "")
        + (f" --products {args.products}" if args.products != "classify,similarity" else "")
    )
    load = os.getloadavg()
    return (
        f"{SECTION}\n\n`{command}` on {machine}, {time.strftime('%Y-%m-%d')}, "
        f"{time.perf_counter() - started:.0f} s; load average (1 min) {load_before[0]:.1f} before, "
        f"{load[0]:.1f} after (the machine's cores are shared: CPU s is the steadier figure). "
        f"Stores: `efm extract --source cog` of a generated mirror, about {args.size} x "
        f"{args.size} px x 2 years x 64 bands, 1024 px chunks; (a) written by efm {OLD} (Zarr 2, "
        "band last, Blosc-LZ4), (b) by this tree (Zarr 3, band first, 1024 px shards of 256 px "
        "inner chunks, Blosc-Zstd 1, float32 in 256 KiB blocks), (c) = (b) served by `rclone serve s3` on loopback, read anonymously (the server's CPU not counted). Each run is "
        "`python -m pipelines.cli <product>` in a fresh process, default flags; one warm-up run "
        f"each, then best of {args.repeat} (interleaved a, b, c); model: {args.model} (.skops); "
        "similarity: 50 reference points.\n\n"
        + "\n".join(lines)
        + "\n\n**Store size on disk** (chunk files and metadata, done markers excluded):\n\n"
        + "\n".join(disk)
        + "\n\n**Extraction writes** (int8, the same mirror; fresh output each run; best of "
        f"{args.repeat} after a warm-up):\n\n"
        + "\n".join(ext)
        + "\n\n`zarr_direct.ChunkWriter.write` of the same in-memory chunks (band last, as the "
        "sources give them) into a fresh store of each format, in one process, best of "
        f"{args.repeat}:\n\n" + "\n".join(wr) + "\n" + FINDINGS
    )


if __name__ == "__main__":
    sys.exit(main())
