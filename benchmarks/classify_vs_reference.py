"""Benchmark: `efm classify` vs model.predict in memory vs the notebook's xarray.apply_ufunc.

On one generated float32 store (one year, --size x --size px, --chunk-size px chunks), with a
k-NN (k=5, 1,000 training points), a random forest (100 trees) and a logistic regression,
saved as .skops (default) or pickle, side by side in one run:
  (a) efm classify as a user runs it on one machine (default: the local runner's one in-process
      worker, predicting in as many threads as there are cores; --efm-workers 2: DirectRunner,
      2 worker processes), end to end (process start, reading, predicting, writing the class
      store); peak RSS of the whole process tree sampled every 50 ms; CPU seconds of the whole tree;
  (b) model.predict on the whole (pixels, 64) array in memory, all cores (the physical
      reference; the time to load the array is printed apart);
  (c) the notebook way: xarray.apply_ufunc(predict, dask='parallelized') over the
      dask-chunked store, written to Zarr.
Then (a) again on a store of 4x the area, for its peak memory and its CPU seconds per pixel
against (b)'s (fixed start-up weighs less there).
Wall times depend on what else runs on the machine; CPU seconds (user + system, all threads
and processes) are printed next to them as the load-independent figure.

    python benchmarks/classify_vs_reference.py [--size 2048] [--chunk-size 512] [--model-format skops] [--efm-workers 1] [--workdir /tmp/efm-bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from transforms.core.grid import Grid, Window  # noqa: E402
from transforms.learning import models  # noqa: E402
from transforms.storage import store

BANDS = [f"A{i:02d}" for i in range(64)]
N_CLASSES = 6


def pattern(rows, cols):
    return ((rows // 97) + (cols // 89) * 2) % N_CLASSES


def make_store(path: str, size: int, chunk: int, seed: int = 0) -> None:
    """Well-separated classes (unit directions + noise), 2 % NaN pixels; written chunk by chunk."""
    if os.path.exists(os.path.join(path, ".zattrs")):
        ds = store.open_embeddings(path, require_complete=False)
        if (
            ds.sizes["x"] == size
            and ds["embedding"].encoding["chunks"][1] == chunk
            and ds.attrs.get(store.STATUS_ATTR) == "complete"
        ):
            return
    shutil.rmtree(path, ignore_errors=True)
    import zarr

    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(N_CLASSES, 64))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    grid = Grid("EPSG:32631", 10.0, 500_000.0, 5_000_000.0, size, size)
    store.setup(
        path,
        store.embedding_template(
            grid, [2022], BANDS, "float32", chunk, {"source": "synthetic:benchmark"}
        ),
    )
    array = zarr.open_group(path, mode="r+", zarr_format=store.ZARR_FORMAT)["embedding"]
    for r in range(0, size, chunk):
        for c in range(0, size, chunk):
            rows, cols = np.mgrid[r : min(r + chunk, size), c : min(c + chunk, size)]
            labels = pattern(rows, cols)
            v = directions[labels].astype(np.float32) + rng.normal(
                scale=0.15, size=labels.shape + (64,)
            ).astype(np.float32)
            v /= np.linalg.norm(v, axis=-1, keepdims=True)
            v[rng.random(labels.shape) < 0.02] = np.nan
            array[0, r : r + labels.shape[0], c : c + labels.shape[1], :] = v
    store.set_status(path, "complete")


def train_models(path: str, workdir: str, chunk: int, suffix: str) -> dict[str, str]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    from transforms.storage.readers import StoreReader

    values = StoreReader(path).read(0, Window(0, 0, chunk, chunk)).reshape(-1, 64)
    pick = np.random.default_rng(1).choice(
        np.flatnonzero(~np.isnan(values).any(axis=1)), 1000, replace=False
    )
    r, c = np.divmod(pick, chunk)
    y = pattern(r, c)
    noisy = np.random.default_rng(2).random(1000) < 0.1  # some wrong labels, as real ones have
    y = np.where(noisy, np.random.default_rng(3).integers(0, N_CLASSES, 1000), y)
    out = {}
    for name, est in [
        ("knn", KNeighborsClassifier(5)),
        ("random-forest", RandomForestClassifier(100, n_jobs=-1, random_state=0)),
        ("logistic-regression", LogisticRegression(max_iter=1000)),
    ]:
        est.fit(values[pick], y)
        out[name] = os.path.join(workdir, f"{name}{suffix}")
        models.save_model(
            est, out[name], {"kind": "classifier", "classes": est.classes_, "bands": BANDS}
        )
    return out


def run_efm(path: str, model: str, output: str, workers: int = 1) -> dict:
    """(a): wall seconds, peak RSS of the process tree, pixels classified, CPU seconds of the tree."""
    from process_tree import measure

    sha = (
        ["--model-sha256", models.read_sidecar(model)["sha256"]]
        if not model.endswith(".skops")
        else []
    )
    runner = (
        []
        if workers == 1
        else [
            "--runner=DirectRunner",
            f"--direct_num_workers={workers}",
            "--direct_running_mode=multi_processing",
        ]
    )
    argv = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "classify",
        "--embeddings",
        path,
        "--model",
        model,
        *sha,
        "--output",
        output,
        "--overwrite",
        *runner,
    ]
    try:
        run = measure(argv, ROOT)
    except RuntimeError as exc:
        raise RuntimeError(f"efm classify failed:\n{exc}") from None
    out = run["out"]
    pixels = int(next(line for line in out.splitlines() if "pixels classified" in line).split()[-1])
    return {"s": run["s"], "peak": run["peak_tree"], "pixels": pixels, "cpu": run["cpu"]}


def reference(path: str, model) -> dict:
    """(b): load seconds, predict seconds and CPU seconds, predictions (-1 on no data)."""
    import zarr

    start = time.perf_counter()
    values = zarr.open_group(path, mode="r")["embedding"][0].reshape(-1, 64)
    valid = ~np.isnan(values).any(axis=1)
    features = values[valid]
    del values
    loaded, cpu = time.perf_counter(), time.process_time()
    predicted = model.predict(features)
    seconds, cpu = time.perf_counter() - loaded, time.process_time() - cpu
    out = np.full(valid.shape[0], -1, dtype=np.int64)
    out[valid] = predicted
    return {"s": seconds, "cpu": cpu, "load": loaded - start, "predicted": out}


def notebook(path: str, model, output: str) -> dict:
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
    start, cpu = time.perf_counter(), time.process_time()
    ds = xr.open_zarr(path, chunks={})  # the store's own chunks
    classes = xr.apply_ufunc(
        predict,
        ds["embedding"],
        input_core_dims=[["band"]],
        dask="parallelized",
        output_dtypes=[np.uint8],
    )
    classes.encoding = {}
    classes.to_dataset(name="class").to_zarr(output, mode="w", zarr_format=2, consolidated=True)
    return {"s": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def table(rows, size: int, chunk: int, workers: int = 1) -> str:
    """Speed ratios are (a)'s pixels/s over (b)'s or (c)'s: > 1 means (a) is faster. 'CPU' ratios
    compare pixels per CPU second (user + system, all threads and processes), which other work
    on the machine does not distort."""
    mb = 1024 * 1024
    lines = [
        f"Store {size} x {size} px = {size * size / 1e6:.1f} Mpx (1 year, 64 bands float32, {chunk}-px chunks), {os.cpu_count()} cores. "
        "Pixels/s over valid pixels; CPU s = user + system of all threads and processes.",
        "",
        f"| model | (a) efm classify, {'1 in-process worker, threads' if workers == 1 else f'DirectRunner {workers} procs'} | (b) model.predict in memory | (c) xarray.apply_ufunc, dask "
        "| (a)/(b) wall | (a)/(b) CPU | (a)/(c) wall | (a)/(c) CPU | (a) peak RSS, area | (a) at 4x area: peak RSS, speed | (a) = (b) pixel for pixel |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b, c, px = r["a"], r["b"], r["c"], r["a"]["pixels"]
        big = r.get("a4")
        at4 = (
            f"{big['peak'] / mb:,.0f} MiB, {big['pixels'] / big['s']:,.0f} px/s ({big['s']:.0f} s, {big['cpu']:.0f} CPU s; CPU vs (b): {(big['pixels'] / big['cpu']) / (px / b['cpu']):.2f})"
            if big
            else "-"
        )
        lines.append(
            f"| {r['model']} | {px / a['s']:,.0f} px/s ({a['s']:.1f} s, {a['cpu']:.0f} CPU s) "
            f"| {px / b['s']:,.0f} px/s ({b['s']:.1f} s, {b['cpu']:.0f} CPU s; +{b['load']:.1f} s to load) "
            f"| {px / c['s']:,.0f} px/s ({c['s']:.1f} s, {c['cpu']:.0f} CPU s) "
            f"| {b['s'] / a['s']:.2f} | {b['cpu'] / a['cpu']:.2f} | {c['s'] / a['s']:.2f} | {c['cpu'] / a['cpu']:.2f} "
            f"| {a['peak'] / mb:,.0f} MiB | {at4} | {'yes' if r['same'] else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=2048, help="store side in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=512,
        help="store chunk side in pixels (default: %(default)s)",
    )
    parser.add_argument("--workdir", default="/tmp/efm-bench")
    parser.add_argument(
        "--model-format",
        choices=["pickle", "skops"],
        default="skops",
        help="model files: skops (what the README recommends) or pickle (loaded with --model-sha256) (default: %(default)s)",
    )
    parser.add_argument(
        "--efm-workers",
        type=int,
        default=1,
        help="(a)'s worker processes: 1 = efm's default local run (in-process, predicting in threads), more = DirectRunner multi_processing (default: %(default)s)",
    )
    parser.add_argument("--skip-4x", action="store_true", help="skip the 4x-area memory runs")
    parser.add_argument(
        "--keep", action="store_true", help="keep the generated stores for another run"
    )
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    load_before = os.getloadavg()[0]
    small, large = os.path.join(args.workdir, "emb.zarr"), os.path.join(args.workdir, "emb4x.zarr")
    t = time.perf_counter()
    make_store(small, args.size, args.chunk_size)
    print(
        f"store: {args.size} x {args.size} px, ready in {time.perf_counter() - t:.0f} s", flush=True
    )
    paths = train_models(
        small, args.workdir, args.chunk_size, ".pkl" if args.model_format == "pickle" else ".skops"
    )
    import xarray as xr

    rows = []
    for name, path in paths.items():
        model = models.load_model(path, trust_pickle=True).model  # we just wrote it
        a_out = os.path.join(args.workdir, f"a-{name}.zarr")
        a = run_efm(small, path, a_out, args.efm_workers)
        b = reference(small, model)
        got = xr.open_zarr(a_out, mask_and_scale=False)["class"].values.reshape(-1).astype(np.int64)
        same = bool(np.array_equal(np.where(got == 255, -1, got), b.pop("predicted")))
        c = notebook(small, model, os.path.join(args.workdir, f"c-{name}.zarr"))
        rows.append({"model": name, "a": a, "b": b, "c": c, "same": same})
        print(rows[-1], flush=True)
    if not args.skip_4x:
        t = time.perf_counter()
        make_store(large, 2 * args.size, args.chunk_size, seed=1)
        print(
            f"4x store: {2 * args.size} x {2 * args.size} px, ready in {time.perf_counter() - t:.0f} s",
            flush=True,
        )
        for row in rows:
            row["a4"] = run_efm(
                large,
                paths[row["model"]],
                os.path.join(args.workdir, f"a4-{row['model']}.zarr"),
                args.efm_workers,
            )
            print(row["model"], row["a4"], flush=True)
    print()
    print(table(rows, args.size, args.chunk_size, args.efm_workers))
    print(
        f"\nload average (1 min) before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f} (2 cores: above 2, other work shared them)"
    )
    for name in paths:
        for prefix in ("a", "c", "a4"):
            shutil.rmtree(os.path.join(args.workdir, f"{prefix}-{name}.zarr"), ignore_errors=True)
    if not args.keep:
        shutil.rmtree(small, ignore_errors=True)
        shutil.rmtree(large, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
