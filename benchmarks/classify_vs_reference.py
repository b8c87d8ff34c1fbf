"""Benchmark: `efm classify` vs model.predict in memory vs the notebook's xarray.apply_ufunc.

On one generated float32 store (one year, --size x --size px, 1024-px chunks: the contract's
default), with a k-NN (k=5, 1,000 training points) and a random forest (100 trees), side by side:
  (a) efm classify on DirectRunner, 2 worker processes (multi_processing), end to end
      (process start, reading, predicting, writing the class store), peak RSS of the whole
      process tree sampled every 50 ms;
  (b) model.predict on the whole (pixels, 64) array in memory, all cores (the physical
      reference; the time to load the array is printed apart);
  (c) the notebook way: xarray.apply_ufunc(predict, dask='parallelized') over the
      dask-chunked store, written to Zarr.
Then (a) again on a store of 4x the area, for its peak memory.

    /work/venv/bin/python benchmarks/classify_vs_reference.py [--size 2560] [--workdir /tmp/efm-bench]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transforms import models, store  # noqa: E402
from transforms.grid import Grid  # noqa: E402

BANDS = [f"A{i:02d}" for i in range(64)]
CHUNK = 1024
N_CLASSES = 6


def make_store(path: str, size: int, seed: int = 0) -> None:
    """Well-separated classes (unit directions + noise), NaN holes; written chunk by chunk."""
    if os.path.exists(os.path.join(path, ".zattrs")) and store.open_embeddings(path).sizes["x"] == size:
        return
    shutil.rmtree(path, ignore_errors=True)
    import zarr

    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(N_CLASSES, 64))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    grid = Grid("EPSG:32631", 10.0, 500_000.0, 5_000_000.0, size, size)
    store.setup(path, store.embedding_template(grid, [2022], BANDS, "float32", CHUNK, {"source": "synthetic:benchmark"}))
    array = zarr.open_group(path, mode="r+", zarr_format=store.ZARR_FORMAT)["embedding"]
    for r in range(0, size, CHUNK):
        for c in range(0, size, CHUNK):
            rows, cols = np.mgrid[r : min(r + CHUNK, size), c : min(c + CHUNK, size)]
            labels = ((rows // 97) + (cols // 89) * 2) % N_CLASSES
            v = directions[labels].astype(np.float32) + rng.normal(scale=0.15, size=labels.shape + (64,)).astype(np.float32)
            v /= np.linalg.norm(v, axis=-1, keepdims=True)
            v[rng.random(labels.shape) < 0.02] = np.nan
            array[0, r : r + labels.shape[0], c : c + labels.shape[1], :] = v
    store.set_status(path, "complete")


def train_models(path: str, workdir: str) -> dict[str, str]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier

    from transforms.readers import StoreReader
    from transforms.grid import Window

    values = StoreReader(path).read(0, Window(0, 0, CHUNK, CHUNK)).reshape(-1, 64)
    rows = np.flatnonzero(~np.isnan(values).any(axis=1))
    pick = np.random.default_rng(1).choice(rows, 1000, replace=False)
    r, c = np.divmod(pick, CHUNK)
    y = ((r // 97) + (c // 89) * 2) % N_CLASSES
    y = np.where(np.random.default_rng(2).random(1000) < 0.1, np.random.default_rng(3).integers(0, N_CLASSES, 1000), y)  # label noise
    out = {}
    for name, est in [("knn", KNeighborsClassifier(5)), ("random-forest", RandomForestClassifier(100, n_jobs=-1, random_state=0))]:
        est.fit(values[pick], y)
        out[name] = os.path.join(workdir, f"{name}.skops")
        models.save_model(est, out[name], {"kind": "classifier", "classes": est.classes_, "bands": BANDS})
    return out


def tree_rss(proc) -> int:
    import psutil

    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_efm(path: str, model: str, output: str) -> tuple[float, int, int]:
    """(a): wall seconds, peak RSS of the process tree, pixels classified."""
    import psutil

    argv = [sys.executable, "-m", "pipelines.classify", "--embeddings", path, "--model", model, "--output", output, "--overwrite",
            "--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps, peak, done = psutil.Process(proc.pid), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(ps))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"efm classify failed:\n{err[-3000:]}")
    pixels = int(next(line for line in out.splitlines() if "pixels classified" in line).split()[-1])
    return seconds, peak[0], pixels


def reference(path: str, model) -> tuple[float, float, np.ndarray]:
    """(b): load seconds, predict seconds, predictions (pixels,) with -1 on no data."""
    import zarr

    start = time.perf_counter()
    values = zarr.open_group(path, mode="r")["embedding"][0].reshape(-1, 64)
    valid = ~np.isnan(values).any(axis=1)
    features = values[valid]
    loaded = time.perf_counter()
    predicted = model.predict(features)
    predicted_at = time.perf_counter()
    out = np.full(values.shape[0], -1, dtype=np.int64)
    out[valid] = predicted
    return loaded - start, predicted_at - loaded, out


def notebook(path: str, model, output: str) -> float:
    """(c): xarray.apply_ufunc(dask='parallelized') over the dask-chunked store, to Zarr."""
    import xarray as xr

    def predict(block):
        flat = block.reshape(-1, block.shape[-1])
        valid = ~np.isnan(flat).any(axis=1)
        out = np.full(flat.shape[0], 255, dtype=np.uint8)
        if valid.any():
            out[valid] = model.predict(flat[valid])
        return out.reshape(block.shape[:-1])

    shutil.rmtree(output, ignore_errors=True)
    start = time.perf_counter()
    ds = xr.open_zarr(path, chunks={})  # the store's own chunks
    classes = xr.apply_ufunc(predict, ds["embedding"], input_core_dims=[["band"]], dask="parallelized", output_dtypes=[np.uint8])
    classes.encoding = {}
    classes.to_dataset(name="class").to_zarr(output, mode="w", zarr_format=2, consolidated=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2560, help="store side in pixels (default: %(default)s)")
    parser.add_argument("--workdir", default="/tmp/efm-bench")
    parser.add_argument("--skip-4x", action="store_true", help="skip the 4x-area memory runs")
    parser.add_argument("--keep", action="store_true", help="keep the generated stores")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    small, large = os.path.join(args.workdir, "emb.zarr"), os.path.join(args.workdir, "emb4x.zarr")
    t = time.perf_counter()
    make_store(small, args.size)
    print(f"store: {args.size} x {args.size} px x 64 bands float32, chunks {CHUNK} ({time.perf_counter() - t:.0f} s to generate)", flush=True)
    paths = train_models(small, args.workdir)
    import xarray as xr

    rows = []
    for name, path in paths.items():
        model = models.load_model(path).model
        a_s, a_peak, pixels = run_efm(small, path, os.path.join(args.workdir, f"a-{name}.zarr"))
        load_s, b_s, expected = reference(small, model)
        got = xr.open_zarr(os.path.join(args.workdir, f"a-{name}.zarr"), mask_and_scale=False)["class"].values.reshape(-1).astype(np.int64)
        same = bool(np.array_equal(np.where(got == 255, -1, got), expected))
        c_s = notebook(small, model, os.path.join(args.workdir, f"c-{name}.zarr"))
        row = {"model": name, "pixels": pixels, "a": a_s, "b": b_s, "load": load_s, "c": c_s, "peak": a_peak, "same": same}
        print(row, flush=True)
        rows.append(row)
    if not args.skip_4x:
        t = time.perf_counter()
        make_store(large, args.size * 2, seed=1)
        print(f"4x store: {2 * args.size} x {2 * args.size} px ({time.perf_counter() - t:.0f} s to generate)", flush=True)
        for row in rows:
            a4_s, a4_peak, pixels4 = run_efm(large, paths[row["model"]], os.path.join(args.workdir, f"a4-{row['model']}.zarr"))
            row.update(a4=a4_s, peak4=a4_peak, pixels4=pixels4)
            print(row, flush=True)
    print()
    print(table(rows, args.size))
    for p in [small, large] if not args.keep else []:
        shutil.rmtree(p, ignore_errors=True)
    for name in paths:
        for prefix in ("a", "c", "a4"):
            shutil.rmtree(os.path.join(args.workdir, f"{prefix}-{name}.zarr"), ignore_errors=True)
    return 0


def table(rows, size) -> str:
    mb = 1024 * 1024
    lines = [
        f"Store {size} x {size} px (1 year, 64 bands float32, {CHUNK}-px chunks), {os.cpu_count()} cores. Pixels/s over valid pixels.",
        "",
        "| model | (a) efm classify, DirectRunner 2 procs | (b) model.predict in memory | (c) xarray.apply_ufunc dask | (a)/(b) speed | (a)/(c) speed | (a) peak RSS, area | (a) peak RSS, 4x area | (a) = (b) pixel for pixel |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        px = r["pixels"]
        peak4 = f"{r['peak4'] / mb:,.0f} MiB ({r['pixels4'] / r['a4']:,.0f} px/s)" if "peak4" in r else "-"
        lines.append(
            f"| {r['model']} | {px / r['a']:,.0f} px/s ({r['a']:.1f} s) | {px / r['b']:,.0f} px/s ({r['b']:.1f} s; +{r['load']:.1f} s to load) "
            f"| {px / r['c']:,.0f} px/s ({r['c']:.1f} s) | {r['b'] / r['a']:.2f} | {r['c'] / r['a']:.2f} | {r['peak'] / mb:,.0f} MiB | {peak4} | {'yes' if r['same'] else 'NO'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
