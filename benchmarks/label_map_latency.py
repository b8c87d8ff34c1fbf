"""Benchmark: `efm label`'s map (issue 19) in a real browser on a 4096 x 4096 store: click to
painted preview, and pan to painted tiles, median and max.

Writes (once) a 4096^2 float32 store of 64 bands in 512-px chunks (4.3 GB: classify_vs_reference's
synthetic classes), starts `efm label` on it, opens it in headless Chromium (1200 x 800) and:
- clicks: points of two classes at pixels in view (alternating classes). The page measures each
  one: performance.now() in the click handler, then in the requestAnimationFrame after the
  preview layer's tiles have all loaded (Leaflet's "load"): locate + update (k-NN fit) + every
  visible preview tile fetched, predicted and drawn.
- pans: map.panBy 300 px down and 300 px left or right (no animation; pans that load no new
  tile are not counted); from Leaflet's movestart to the frame after the
  false-colour layer's tiles have all loaded. At zoom 14 (1 tile px ~ 0.3 store px: tiles read
  from the chunks) and zoom 11 (1 tile px ~ 5 store px: tiles from the overview at stride 4,
  built on the first zoomed-out tile: its time is reported apart).

    python benchmarks/label_map_latency.py [--store /tmp/efm-bench-4096.zarr] [--clicks 12] [--pans 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "benchmarks")]

from tests.helpers.label_browser import (
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    click_lonlat,
    pick_class,
    start_label,
    wait_for,
)

N_CLASSES = 6


def pattern(rows, cols):
    return ((rows // 97) + (cols // 89) * 2) % N_CLASSES


def make_store(path: str, size: int, chunk: int, seed: int = 0) -> None:
    """int8 store, (time, band, y, x): well-separated classes (unit directions + noise), 2 % no
    data, written chunk by chunk (memory: one chunk). Kept between runs."""
    import shutil

    import zarr

    from transforms.core import quantize
    from transforms.core.grid import Grid
    from transforms.storage import store

    if os.path.exists(os.path.join(path, "zarr.json")):
        from transforms.storage import store as st

        if st.open_embeddings(path).sizes["x"] == size:
            return
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(seed)
    bands = [f"A{i:02d}" for i in range(64)]
    directions = rng.normal(size=(N_CLASSES, 64))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    grid = Grid("EPSG:32631", 10.0, 500_000.0, 5_000_000.0, size, size)
    template = store.embedding_template(grid, [2022], bands, "int8", chunk, {"source": "bench"})
    store.setup(path, template)
    array = zarr.open_group(path, mode="r+", zarr_format=store.ZARR_FORMAT)["embedding"]
    for r in range(0, size, chunk):
        for c in range(0, size, chunk):
            rows, cols = np.mgrid[r : min(r + chunk, size), c : min(c + chunk, size)]
            labels = pattern(rows, cols)
            v = directions[labels] + rng.normal(scale=0.15, size=labels.shape + (64,))
            v /= np.linalg.norm(v, axis=-1, keepdims=True)
            v[rng.random(labels.shape) < 0.02] = np.nan
            with np.errstate(invalid="ignore"):
                codes = quantize.quantize(v)
            array[0, :, r : r + chunk, c : c + chunk] = codes.transpose(2, 0, 1)
    store.set_status(path, "complete")


def stats(xs):
    return f"median {statistics.median(xs):.0f} ms, max {max(xs):.0f} ms (n={len(xs)})"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default="/tmp/efm-bench-4096.zarr")
    parser.add_argument("--clicks", type=int, default=12)
    parser.add_argument("--pans", type=int, default=10)
    args = parser.parse_args()
    import pyproj
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    t = time.perf_counter()
    make_store(args.store, 4096, 512)
    print(f"store ready in {time.perf_counter() - t:.0f} s")
    to_lonlat = pyproj.Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)

    def lonlat(row, col):
        return to_lonlat.transform(500_000 + (col + 0.5) * 10, 5_000_000 - (row + 0.5) * 10)

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir=/tmp/efm-bench-chromium-{os.getpid()}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    out = f"/tmp/efm-bench-points-{os.getpid()}.geojson"
    proc, url, _ = start_label("--embeddings", args.store, "--output", out, "--classes", "c0,c1")
    try:
        driver.get(url)
        centre = lonlat(2048, 2048)
        t = time.perf_counter()
        driver.execute_script(
            "efmLabel.map.setView([arguments[1], arguments[0]], 14, {animate: false});", *centre
        )
        wait_for(driver, "efmLabel.idle() && efmLabel.map.getZoom() === 14", timeout=120)
        print(f"first view at zoom 14: {1000 * (time.perf_counter() - t):.0f} ms")
        # pixels of classes 0 and 1 near the centre, on screen
        rng = np.random.default_rng(0)
        rows, cols = np.mgrid[1900:2200, 1850:2250]
        picks = []
        for i in range(args.clicks):
            k = i % 2
            cand = np.flatnonzero((pattern(rows, cols) == k).ravel())
            j = rng.choice(cand)
            picks.append((int(rows.ravel()[j]), int(cols.ravel()[j]), k))
        for i, (r, c, k) in enumerate(picks):
            pick_class(driver, f"c{k}")
            click_lonlat(driver, *lonlat(r, c))
            wait_for(driver, f"efmLabel.idle() && efmLabel.state.points.length === {i + 1}", 120)
        clicks = [x["ms"] for x in driver.execute_script("return efmLabel.state.timings")]
        print("click to painted preview:", stats(clicks))
        for zoom in (14, 11):
            driver.execute_script(
                "efmLabel.map.setView([arguments[1], arguments[0]], arguments[2], {animate: false});",
                *centre,
                zoom,
            )
            t = time.perf_counter()
            wait_for(driver, f"efmLabel.idle() && efmLabel.map.getZoom() === {zoom}", 600)
            print(f"zoom {zoom}, first view: {1000 * (time.perf_counter() - t):.0f} ms")
            driver.execute_script("efmLabel.state.pans = [];")
            for i in range(args.pans):  # always onto new tiles: 300 px > a tile's 256
                dx = 300 if i % 4 < 2 else -300
                driver.execute_script(
                    "efmLabel.map.panBy([arguments[0], 300], {animate: false});", dx
                )
                wait_for(driver, "efmLabel.idle()", 120)
                time.sleep(0.1)  # the frame after the last tile
            pans = driver.execute_script("return efmLabel.state.pans")
            print(f"zoom {zoom}, pan 300 px to painted tiles:", stats(pans))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        driver.quit()


if __name__ == "__main__":
    main()
