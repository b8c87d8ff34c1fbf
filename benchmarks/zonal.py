"""Benchmark: `efm zonal` (mean per field) vs numpy with one rasterised label image + bincount.

One generated int8 store (one year, --size x --size px, 64 bands, chunks/shards of --chunk px,
1 % no-data pixels) and synthetic fields: one jittered quadrilateral per cell of a square grid
(no overlaps), --fields of them (e.g. 10,000, 100,000, 1,000,000). Side by side, each in its
own process (wall s, CPU s of the process tree, peak RSS of the tree):
  (a) `efm zonal --stat mean` as a user runs it on one machine (the default local runner), end to
      end: reading the GeoParquet fields, reprojection check, chunk index, the pipeline, the table;
  (b) the reference: read the whole year into memory (int8, 1 GB at 4096 px), rasterise every
      field into one int32 label image (rasterio.features.rasterize), drop no-data pixels, then
      np.bincount per band (de-quantised band by band) -- the fastest independent way found on one
      machine (exactextract weights pixels by their covered fraction, a different statistic).
The two results are compared (counts equal, max |mean difference|).

    python benchmarks/zonal.py [--size 4096] [--chunk 1024] [--fields 10000,100000,1000000] [--workdir /tmp/efm-zonal-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from transforms.core import quantize
from transforms.core.grid import Grid
from transforms.storage import store

BANDS = [f"A{i:02d}" for i in range(64)]
CRS, X0, Y0, SCALE = "EPSG:32631", 500_000.0, 5_000_000.0, 10.0


def make_store(path: str, size: int, chunk: int, seed: int = 0) -> None:
    import zarr

    marker = path + ".made"
    if os.path.exists(marker) and open(marker).read() == f"{size} {chunk}":
        return
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    grid = Grid(CRS, SCALE, X0, Y0, size, size)
    template = store.embedding_template(
        grid, [2022], BANDS, "int8", chunk, {"source": "synthetic:benchmark"}
    )
    store.setup(path, template)
    array = zarr.open_group(path, mode="r+", zarr_format=3)["embedding"]  # (time, band, y, x)
    rng = np.random.default_rng(seed)
    for r in range(0, size, chunk):
        for c in range(0, size, chunk):
            h, w = min(chunk, size - r), min(chunk, size - c)
            codes = rng.integers(-127, 128, size=(64, h, w), dtype=np.int8)
            codes[:, rng.random((h, w)) < 0.01] = -128  # no data in every band
            array[0, :, r : r + h, c : c + w] = codes
    store.set_status(path, "complete")
    open(marker, "w").write(f"{size} {chunk}")


def make_fields(path: str, size: int, n: int, seed: int = 1) -> int:
    """~n jittered quadrilaterals, one per cell of a square grid over the store (GeoParquet)."""
    import geopandas
    import pandas as pd
    import shapely

    if os.path.exists(path):
        return len(pd.read_parquet(path, columns=["field_id"]))
    side = int(np.sqrt(n))
    cell = size / side
    rng = np.random.default_rng(seed)
    i, j = np.divmod(np.arange(side * side), side)
    corners = np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]])
    jitter = rng.uniform(-0.08, 0.08, size=(side * side, 4, 2))
    unit = corners[None] + jitter  # inside the cell, never touching the next one
    cols = (j[:, None] + unit[..., 0]) * cell
    rows = (i[:, None] + unit[..., 1]) * cell
    coords = np.stack([X0 + cols * SCALE, Y0 - rows * SCALE], axis=-1)
    coords = np.concatenate([coords, coords[:, :1]], axis=1)
    polygons = shapely.polygons(coords)
    frame = geopandas.GeoDataFrame(
        {"field_id": np.arange(len(polygons)), "crop": rng.integers(0, 5, len(polygons))},
        geometry=polygons,
        crs=CRS,
    )
    frame.to_parquet(path)
    return len(frame)


def reference(store_path: str, fields_path: str, out: str) -> None:
    """(b), in its own process: means (fields, 64) and counts -> out (.npz)."""
    import geopandas
    import zarr
    from rasterio import features

    start = time.perf_counter()
    frame = geopandas.read_parquet(fields_path)
    codes = zarr.open_group(store_path, mode="r")["embedding"][0]  # (band, y, x) int8
    size = codes.shape[-1]
    label = features.rasterize(
        zip(frame.geometry.values, range(1, len(frame) + 1)),
        out_shape=(size, size),
        transform=Grid(CRS, SCALE, X0, Y0, size, size).transform,
        fill=0,
        dtype=np.int32,
    ).ravel()
    valid = ~(codes == -128).any(axis=0).ravel()
    keep = np.flatnonzero(valid & (label > 0))
    lab = label[keep]
    n = len(frame) + 1
    counts = np.bincount(lab, minlength=n)
    means = np.empty((len(frame), 64))
    for b in range(64):
        band = quantize.dequantize(codes[b].ravel()[keep])
        with np.errstate(invalid="ignore", divide="ignore"):
            means[:, b] = (np.bincount(lab, weights=band, minlength=n) / counts)[1:]
    np.savez(out, counts=counts[1:], means=means, seconds=time.perf_counter() - start)


def run_efm(store_path: str, fields_path: str, out: str) -> dict:
    from process_tree import measure

    argv = [sys.executable, "-m", "pipelines.cli", "zonal", "--embeddings", store_path]
    argv += ["--polygons", fields_path, "--id-column", "field_id", "--output", out, "--overwrite"]
    return measure(argv, ROOT, env={**os.environ, "PYTHONPATH": ROOT})


def run_reference(store_path: str, fields_path: str, out: str) -> dict:
    from process_tree import measure

    argv = [sys.executable, os.path.abspath(__file__), "--reference", store_path, fields_path, out]
    return measure(argv, ROOT, env={**os.environ, "PYTHONPATH": ROOT})


def markdown(rows: list[dict]) -> str:
    def cell(v):
        return (
            ("yes" if v else "NO")
            if isinstance(v, (bool, np.bool_))
            else (f"{v:,}" if isinstance(v, int) else f"{v:.3g}")
        )

    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--fields", default="10000,100000,1000000")
    parser.add_argument("--workdir", default="/tmp/efm-zonal-bench")
    parser.add_argument("--reference", nargs=3, metavar=("STORE", "FIELDS", "OUT"))
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()
    if args.reference:
        reference(*args.reference)
        return
    import pandas as pd

    os.makedirs(args.workdir, exist_ok=True)
    path = os.path.join(args.workdir, f"store_{args.size}.zarr")
    t0 = time.perf_counter()
    make_store(path, args.size, args.chunk)
    print(f"store {path}: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for n in [int(x) for x in args.fields.split(",")]:
        fields = os.path.join(args.workdir, f"fields_{args.size}_{n}.parquet")
        n = make_fields(fields, args.size, n)
        ref_out = os.path.join(args.workdir, f"ref_{n}.npz")
        table_out = os.path.join(args.workdir, f"zonal_{n}.parquet")
        ref = run_reference(path, fields, ref_out)
        efm_run = run_efm(path, fields, table_out)
        got = pd.read_parquet(table_out).sort_values("field_id")
        want = np.load(ref_out)
        same_counts = np.array_equal(got["pixel_count"].to_numpy(), want["counts"])
        diff = np.nanmax(np.abs(got[BANDS].to_numpy(np.float64) - want["means"]))
        row = {
            "fields": n,
            "efm s": efm_run["s"],
            "efm CPU s": efm_run["cpu"],
            "efm peak RSS MB": efm_run["peak_tree"] / 2**20,
            "numpy s": ref["s"],
            "numpy CPU s": ref["cpu"],
            "numpy peak RSS MB": ref["peak_tree"] / 2**20,
            "numpy / efm (wall)": ref["s"] / efm_run["s"],
            "numpy / efm (CPU)": ref["cpu"] / efm_run["cpu"],
            "counts equal": same_counts,
            "max abs mean diff": diff,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    text = markdown(rows)
    print(text)
    if not args.no_write:
        from results import write_section

        write_section(
            "## Zonal means per field",
            "## Zonal means per field\n\n"
            f"`python benchmarks/zonal.py --size {args.size} --chunk {args.chunk} --fields {args.fields}`: "
            f"`efm zonal --stat mean` (default local runner, end to end) vs numpy (whole year in memory, one "
            f"rasterised label image, np.bincount per band), one int8 store of {args.size}^2 px x 64 bands, "
            "chunks of "
            f"{args.chunk} px, synthetic non-overlapping fields. Each in its own process; peak RSS of the "
            "process tree. A ratio > 1 means efm is faster. Machine shared (2 cores): CPU seconds are the "
            "load-independent figure.\n\n" + text + "\n",
        )


if __name__ == "__main__":
    main()
