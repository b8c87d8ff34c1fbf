"""The grid a convention store names (transforms/storage/layouts.py): its CRS (`proj:wkt2`,
`proj:code`, `proj:projjson`, which must agree), its affine transform (`spatial:transform` with
`spatial:shape`, checked against the coordinates when the store has them), and an extent check
that refuses a grid which cannot be where it says.
"""

from __future__ import annotations

import json
import math

import numpy as np

from transforms.core.errors import InputError, first_line


def crs_of(attrs: dict, path: str, flag: str) -> str:
    """The CRS the store names, as WKT2; every key that names one must name the same CRS."""
    import pyproj

    found = []
    for key in ("proj:wkt2", "proj:code", "proj:projjson"):
        value = attrs.get(key)
        if value:
            try:
                text = json.dumps(value) if isinstance(value, dict) else str(value)
                found.append((key, pyproj.CRS.from_user_input(text)))
            except pyproj.exceptions.CRSError as exc:
                raise InputError(
                    flag, f"{path}: {key} {str(value)[:60]!r} is not a CRS: {first_line(exc)}"
                ) from None
    if not found:
        raise InputError(
            flag, f"{path} names no CRS (proj:code, proj:wkt2 or proj:projjson); efm needs one"
        )
    (key, crs), others = found[0], found[1:]
    for other_key, other in others:
        codes = crs.to_epsg(min_confidence=70), other.to_epsg(min_confidence=70)
        same = (
            codes[0] == codes[1] if None not in codes else crs.equals(other, ignore_axis_order=True)
        )
        if not same:
            raise InputError(
                flag,
                f"{path}: {key} ({crs.name}) and {other_key} ({other.name}) name different CRSs; "
                "the store's metadata contradicts itself: fix the one that is wrong",
            )
    return crs.to_wkt()


# Coordinate values read to check them against the transform: all of an array up to this many,
# else its first and last chunk when those are no bigger, else none (then only its length is
# checked). Each open of a store checks them, and the public AEF mosaic keeps each axis in one
# chunk: a global grid at 0.00009 deg has 4,000,000 columns, x alone 32 MB to fetch every time.
COORDINATES_READ = 2**17  # 1 MiB of float64


def coordinate_parts(stored, n: int) -> list[slice]:
    """The parts of a coordinate array of `n` values that are read to check it (all of it, or
    its first and last chunk, or none)."""
    if n <= COORDINATES_READ:
        return [slice(0, n)]
    chunk = int(stored.chunks[0])
    if chunk > COORDINATES_READ:
        return []
    last = (n - 1) // chunk * chunk
    return [slice(0, chunk), slice(last, n)]


def transform_of(attrs: dict, coordinates: dict, height: int, width: int, path: str, flag: str):
    values = attrs.get("spatial:transform")
    if not (
        isinstance(values, list)
        and len(values) >= 6
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values[:6])
    ):
        raise InputError(
            flag, f"{path} has no usable spatial:transform (six finite numbers); efm needs one"
        )
    a, b, c, d, e, f = (float(v) for v in values[:6])
    if b or d or not a or not e:
        raise InputError(
            flag,
            f"{path}: spatial:transform {values[:6]} is rotated or degenerate; efm reads north-up grids",
        )
    kind = attrs.get("spatial:transform_type", "affine")
    if kind != "affine":
        raise InputError(
            flag, f"{path}: spatial:transform_type {kind!r}; efm reads affine grids only"
        )
    registration = attrs.get("spatial:registration", "pixel")
    if registration == "node":  # the transform places the border cells' centres: to corners
        c, f = c - a / 2, f - e / 2
    elif registration != "pixel":
        raise InputError(
            flag,
            f"{path}: spatial:registration {registration!r} is neither 'pixel' nor 'node' (the "
            "spatial convention's two values)",
        )
    shape = attrs.get("spatial:shape")
    if shape is not None and list(shape) != [height, width]:
        raise InputError(
            flag,
            f"{path}: spatial:shape {list(shape)} disagrees with the array's y, x size "
            f"[{height}, {width}]",
        )
    # Coordinates, when stored, must be the centres the transform gives (`coordinates`: x and y
    # as layouts._look_up read them: the array, and the values of its parts read).
    for name, n, origin, step in (("x", width, c, a), ("y", height, f, e)):
        stored, read = coordinates[name]
        if stored is None:
            continue
        agree = tuple(getattr(stored, "shape", ())) == (n,) and all(
            np.allclose(
                np.asarray(values, dtype=np.float64),
                origin + (np.arange(start, stop) + 0.5) * step,
                rtol=0,
                atol=abs(step) * 1e-3,
            )
            for (start, stop), values in read.items()
        )
        if not agree:
            raise InputError(
                flag,
                f"{path}: the {name} coordinates are not the pixel centres spatial:transform "
                "gives; the store's grid is inconsistent",
            )
    bbox = attrs.get("spatial:bbox")
    if bbox is not None:  # [xmin, ymin, xmax, ymax] of the cells' edges (of the centres: node)
        inset = (abs(a) / 2, abs(e) / 2) if registration == "node" else (0.0, 0.0)
        xs, ys = (c, c + width * a), (f, f + height * e)
        want = [
            min(xs) + inset[0],
            min(ys) + inset[1],
            max(xs) - inset[0],
            max(ys) - inset[1],
        ]
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) for v in bbox)
            and all(
                abs(v - w) <= tol  # a pixel of slack: a writer may round its bbox
                for v, w, tol in zip(bbox, want, (abs(a), abs(e), abs(a), abs(e)))
            )
        ):
            raise InputError(
                flag,
                f"{path}: spatial:bbox {bbox} disagrees with spatial:transform and the array's "
                f"size (which give {[round(v, 9) for v in want]}); the store's grid is inconsistent",
            )
    return (a, b, c, d, e, f)


def check_extent(crs: str, transform, height: int, width: int, path: str, flag: str) -> None:
    """A grid in degrees must lie on the globe: a grid in metres labelled EPSG:4326 (or the
    reverse's CRS on a grid in degrees, seen as far off the globe) is refused here, not mapped."""
    import pyproj

    geographic = pyproj.CRS.from_user_input(crs)
    if not geographic.is_geographic:
        return
    a, _, c, _, e, f = transform
    xs, ys = sorted((c, c + width * a)), sorted((f, f + height * e))
    slack_x, slack_y = abs(a), abs(e)  # a node-registered global grid reaches half a cell beyond
    if (
        ys[0] < -90 - slack_y
        or ys[1] > 90 + slack_y
        or xs[0] < -180 - slack_x
        or xs[1] > 360 + slack_x
        or xs[1] - xs[0] > 360 + 2 * slack_x
    ):
        raise InputError(
            flag,
            f"{path}: its grid spans x {xs[0]:.6g}..{xs[1]:.6g}, y {ys[0]:.6g}..{ys[1]:.6g}, "
            f"which is not on the globe in {geographic.name} (degrees): the CRS "
            "(proj:code) and spatial:transform do not belong together",
        )
