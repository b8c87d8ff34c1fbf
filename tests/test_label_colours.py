"""The class palette shared by `efm export` and the labelling page (transforms/products/colours.py):
matplotlib's tab10 / tab20 / evenly spaced hues, byte for byte, without importing matplotlib; and the
page's colour tables (preview, uncertainty) built on first use, so importing the page loads no
matplotlib."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import store_factory
from transforms.products import colours, export

YEAR = 2021


def matplotlib_palette(n: int) -> list[tuple[int, int, int]]:
    """The palette as matplotlib's colour maps give it (the reference)."""
    import matplotlib
    import matplotlib.colors

    if n <= 20:
        table = matplotlib.colormaps["tab10" if n <= 10 else "tab20"].colors
        floats = [table[i] for i in range(n)]
    else:
        floats = [matplotlib.colors.hsv_to_rgb((i / n, 0.65, 0.9)) for i in range(n)]
    return [tuple(int(round(255 * c)) for c in f[:3]) for f in floats]


@pytest.mark.parametrize("n", [1, 2, 9, 10, 11, 19, 20, 21, 37, 250])
def test_the_class_palette_is_matplotlib_s_byte_for_byte(n):
    values = [3 * v + 1 for v in range(n)]  # class values need not be 0..n-1
    got = colours.class_colors(values)
    assert list(got) == values
    assert list(got.values()) == matplotlib_palette(n)
    assert colours.hex_colours(n) == [
        "#{:02x}{:02x}{:02x}".format(*c) for c in matplotlib_palette(n)
    ]


def test_export_and_the_page_share_one_palette():
    assert export.class_colors is colours.class_colors


def test_importing_the_label_page_loads_no_matplotlib():
    code = (
        "import sys, label_page.server, label_page.session, label_page.layers; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib' "
        "or m.startswith('transforms.products.export')); "
        "assert not loaded, loaded"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return store_factory.make_store(
        str(tmp_path_factory.mktemp("label-colours") / "emb.zarr"), years=(YEAR,)
    )


def test_preview_and_uncertainty_tiles_take_their_colours_from_matplotlib_s_tables(synthetic):
    import matplotlib
    import pyproj
    from PIL import Image
    from sklearn.neighbors import KNeighborsClassifier

    from label_page import guide, tiles
    from label_page import server as serverlib
    from label_page.view import StoreView
    from transforms.storage import readers

    s = synthetic
    session = serverlib.Session(
        StoreView(readers.store_info(s.path), YEAR), ["water", "forest"], [], "unused.geojson",
        overwrite=False, rgb=None, meta={},
    )  # fmt: skip
    picks = [(r, c) for r in range(5, s.grid.height, 23) for c in range(5, s.grid.width, 29)]
    picks = [(r, c) for r, c in picks if s.labels[0, r, c] >= 0][:12]
    body = {
        "points": [
            {"id": f"p{i}", "label": ["water", "forest"][i % 2], "row": r, "col": c}
            for i, (r, c) in enumerate(picks)
        ],
        "polygons": [],
    }
    k = session.update(body)["k"]
    assert k is not None
    h, w = s.grid.height, s.grid.width
    cx, cy = store_factory.pixel_centre(s, h // 2, w // 2)
    mx, my = pyproj.Transformer.from_crs(s.grid.crs, "EPSG:3857", always_xy=True).transform(cx, cy)
    z = 14
    span = 2 * tiles.HALF / 2**z
    x, y = int((mx + tiles.HALF) // span), int((tiles.HALF - my) // span)
    rows, cols, _ = session.tiles.grid.pixels(z, x, y)
    inside = rows >= 0
    flat = s.values[0].reshape(-1, s.values.shape[-1])
    data = np.zeros_like(inside)
    data[inside] = ~np.isnan(flat[rows[inside] * w + cols[inside]]).any(axis=-1)
    assert data.sum() > 1000

    def rgba(layer):
        png = session.tile(layer, z, x, y, None)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))

    # preview: scikit-learn's k-NN class of each data pixel, opaque, in tab10's colour of the class
    train = np.stack([flat[r * w + c] for r, c in picks])
    labels = np.array([i % 2 for i in range(len(picks))])
    predicted = (
        KNeighborsClassifier(n_neighbors=k)
        .fit(train, labels)
        .predict(flat[rows[data] * w + cols[data]])
    )
    tab10 = np.array(matplotlib.colormaps["tab10"].colors)[:2]
    preview = rgba("preview")
    assert (preview[data][:, 3] == 255).all() and (preview[~inside][:, 3] == 0).all()
    expected = np.round(tab10[predicted] * 255).astype(np.uint8)
    assert (preview[data][:, :3] == expected).all(axis=1).mean() > 0.999
    assert len(set(predicted.tolist())) == 2

    # uncertainty: matplotlib's plasma at round(u * 255), alpha 40 (sure) .. 255 (on the boundary)
    u = guide.uncertainty(train, labels, flat[rows[data] * w + cols[data]])
    index = np.clip(np.round(u * 255).astype(int), 0, 255)
    plasma = np.array(matplotlib.colormaps["plasma"].colors)
    expected_rgb = np.round(plasma[index] * 255).astype(np.uint8)
    expected_alpha = np.round(40 + index * (255 - 40) / 255).astype(np.uint8)
    got = rgba("uncertainty")[data]
    np.testing.assert_array_equal(got[:, :3], expected_rgb)
    np.testing.assert_array_equal(got[:, 3], expected_alpha)
    assert index.min() < 100 < index.max()  # the ramp's both ends are exercised
