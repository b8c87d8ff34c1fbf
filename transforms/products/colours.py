"""Class colours shared by `efm export` (the COG's colour table, the quick-look's legend) and the
labelling page (its classes, the preview layer): one palette, pure Python, no matplotlib.

The palette is matplotlib's tab10 (up to 10 classes), tab20 (up to 20), then evenly spaced hues
(saturation 0.65, value 0.9); the tables below are those colour maps' values, byte for byte
(tests/test_export.py compares them with matplotlib's).
"""

from __future__ import annotations

import colorsys

TAB10 = (
    "1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22",
    "17becf",
)  # fmt: skip
TAB20 = (
    "1f77b4", "aec7e8", "ff7f0e", "ffbb78", "2ca02c", "98df8a", "d62728", "ff9896", "9467bd",
    "c5b0d5", "8c564b", "c49c94", "e377c2", "f7b6d2", "7f7f7f", "c7c7c7", "bcbd22", "dbdb8d",
    "17becf", "9edae5",
)  # fmt: skip


def _rgb(hex6: str) -> tuple[int, int, int]:
    return tuple(int(hex6[i : i + 2], 16) for i in (0, 2, 4))


def class_colors(values) -> dict[int, tuple[int, int, int]]:
    """A distinct colour per class value (tab10/tab20, then evenly spaced hues)."""
    n = len(values)
    if n <= 20:
        palette = [_rgb(h) for h in (TAB10 if n <= 10 else TAB20)]
    else:
        palette = [
            tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(i / n, 0.65, 0.9))
            for i in range(n)
        ]
    return {int(v): palette[i] for i, v in enumerate(values)}


def hex_colours(n: int) -> list[str]:
    """The palette of n classes 0..n-1 as "#rrggbb" (the labelling page's default colours)."""
    return ["#{:02x}{:02x}{:02x}".format(*rgb) for rgb in class_colors(list(range(n))).values()]
