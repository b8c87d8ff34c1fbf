"""Benchmark: how long `efm label`'s live preview takes, click to painted frame, in a real browser.

Starts `efm label` on a store (default: the demo's, `make demo` -> demo-output/embeddings.zarr,
1018 x 1274 px, float32, 512-px chunks: the whole store is one screen-sized view, read at full
resolution, 1.3 M pixels), opens it in headless Chromium (1200 x 800 window), and clicks labelled
points of the sample data's ground truth (demo-output/sample-data/labels.geojson), alternating
between the classes. The page measures each click itself: performance.now() in the click
handler, then again in the requestAnimationFrame after the preview is drawn (the frame that
shows it); the server reports its own share (point read + k-NN fit + predict). The first click
of a class pair gives no preview (one class); every later click is measured.

    python benchmarks/label_preview_latency.py [--embeddings demo-output/embeddings.zarr]
        [--points demo-output/sample-data/labels.geojson] [--classes water,forest,cropland]
        [--per-class 4] [--screenshot docs/label.png]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

from test_label_browser import (
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    click_pixel,
    pick_class,
    start_label,
    wait_for,
)  # noqa: E402

from transforms.learning import sampling
from transforms.storage import readers  # noqa: E402


def pick_points(labels, rows, cols, classes, per_class, seed, apart):
    """per_class points of each class (rows >= 0), apart on screen (a click within a few pixels of a
    point removes it), in the order clicked: alternating between the classes."""
    rng = np.random.default_rng(seed)
    picks, taken = [], []
    for name in classes:
        chosen = []
        for i in rng.permutation(np.flatnonzero((labels == name) & (rows >= 0))):
            if len(chosen) < per_class and all(
                abs(rows[i] - r) + abs(cols[i] - c) > apart for r, c in taken
            ):
                chosen.append((int(rows[i]), int(cols[i])))
                taken.append(chosen[-1])
        if len(chosen) < per_class:
            raise SystemExit(
                f"only {len(chosen)} points of {name!r} in view, apart; ask for fewer with --per-class"
            )
        picks.append(chosen)
    return [(classes[k], picks[k][i]) for i in range(per_class) for k in range(len(classes))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--embeddings", default=os.path.join(REPO, "demo-output", "embeddings.zarr")
    )
    parser.add_argument(
        "--points", default=os.path.join(REPO, "demo-output", "sample-data", "labels.geojson")
    )
    parser.add_argument("--classes", default="water,forest,cropland")
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument(
        "--colors", help="passed to efm label, e.g. demo-output/sample-data/colors.json"
    )
    parser.add_argument("--screenshot", help="save the page, all points clicked, preview showing")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--scale",
        type=float,
        help="zoom to this many screen px per store px around the store's centre "
        "(1: a full-resolution view as large as the canvas); default: the whole store in view",
    )
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    classes = args.classes.split(",")
    info = readers.store_info(args.embeddings)
    given = sampling.read_points(args.points, "label")
    rows, cols = sampling.to_pixels(info, given)
    work = tempfile.mkdtemp(prefix="efm-label-bench-")
    proc, url, _ = start_label(
        "--embeddings",
        args.embeddings,
        "--output",
        os.path.join(work, "points.geojson"),
        "--classes",
        args.classes,
        *(["--colors", args.colors] if args.colors else []),
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={os.path.join(work, 'profile')}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(url)
        wait_for(driver, "efmLabel.state.image !== null && efmLabel.idle()", timeout=120)
        if args.scale:
            driver.execute_script(
                "efmLabel.setView(arguments[0], arguments[1], arguments[2])",
                args.scale,
                info.height / 2,
                info.width / 2,
            )
            wait_for(driver, "efmLabel.idle()", timeout=120)
        v = driver.execute_script("return efmLabel.state.image.win")
        inside = (
            (rows >= v["row0"] + 8)
            & (rows < v["row0"] + v["rows"] - 8)
            & (cols >= v["col0"] + 8)
            & (cols < v["col0"] + v["cols"] - 8)
        )
        apart = 20 / driver.execute_script(
            "return efmLabel.state.view.scale"
        )  # store px: 20 screen px
        order = pick_points(
            given.labels,
            np.where(inside, rows, -1),
            cols,
            classes,
            args.per_class,
            args.seed,
            apart,
        )
        for name, (row, col) in order:
            pick_class(driver, name)
            click_pixel(driver, row, col)
            wait_for(driver, "efmLabel.idle()", timeout=60)
        wait_for(driver, f"efmLabel.state.timings.length >= {len(order) - 1}")
        timings = driver.execute_script("return efmLabel.state.timings")
        win = driver.execute_script("return efmLabel.state.preview.win")
        if args.screenshot:
            driver.save_screenshot(args.screenshot)
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
    ms = [t["ms"] for t in timings]
    server = [t["server_ms"] for t in timings]
    print(
        f"store {args.embeddings}: {info.height} x {info.width} px, {info.dtype}, chunks {info.chunk_rows} px"
    )
    print(
        f"view: rows {win['row0']}+{win['rows']}, cols {win['col0']}+{win['cols']}, every {win['step']} px -> {timings[-1]['pixels']:,} px previewed"
    )
    print(f"clicks measured: {len(ms)} ({len(classes)} classes, {args.per_class} points each)")
    print(
        f"click to painted preview (ms): median {statistics.median(ms):.0f}, max {max(ms):.0f}  [{', '.join(f'{x:.0f}' for x in ms)}]"
    )
    print(
        f"of which the server (ms):      median {statistics.median(server):.0f}, max {max(server):.0f}"
    )
    compare_knn(info, win, order, classes)


def compare_knn(info, win: dict, order, classes) -> None:
    """In this process, on the last preview's pixels and the clicked points: the preview's k-NN
    (view.knn_predict) against KNeighborsClassifier.predict, best of 3 each, outputs compared."""
    import time

    from label_page.view import StoreView, Window, neighbours
    from transforms.learning import models

    view = StoreView(info, info.years[-1])
    w = Window(win["row0"], win["col0"], win["rows"], win["cols"], 1)
    values = view.read(Window(w.row0, w.col0, w.rows, w.cols, win["step"]))
    flat = values.reshape(-1, values.shape[-1])
    pixels = flat[~np.isnan(flat).any(axis=1)]
    labels = [classes.index(name) for name, _ in order]
    model = models.make_classifier("knn", {"n_neighbors": neighbours(labels)})
    model.fit(np.stack([view.vector(r, c) for _, (r, c) in order]), labels)
    from label_page.view import knn_predict

    timed = {}
    for name, predict in (
        ("view.knn_predict", lambda: knn_predict(model, pixels)),
        ("KNeighborsClassifier.predict", lambda: model.predict(pixels)),
    ):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            timed[name] = predict()
            best = min(best, time.perf_counter() - start)
        print(f"{name:<30} {best * 1000:6.0f} ms on {len(pixels):,} px (best of 3)")
    print("equal:", bool(np.array_equal(*timed.values())))


if __name__ == "__main__":
    main()
