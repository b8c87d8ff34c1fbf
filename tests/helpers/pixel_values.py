"""Pixel values that are a pure function of their position (a source whose every read can be checked)."""

from __future__ import annotations

import numpy as np


def pixel_values(year, rows, cols, bands):
    """The value of every pixel: a pure function of its position."""
    r, c, b = np.meshgrid(rows, cols, np.arange(bands), indexing="ij")
    return ((r * 7 + c * 3 + b + year) % 251).astype(np.float32)
