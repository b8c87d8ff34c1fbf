"""Spatial cross-validation and learning curves (`efm train --cv spatial`, `--learning-curve`).

Spatial blocks: squares of side `size` (in the units of the store's CRS, metres for UTM) laid
from the CRS's origin: a sample at (x, y) lies in block (floor(x / size), floor(y / size)),
where (x, y) is the centre of its pixel in the store's CRS (the table's `pixel_x`/`pixel_y` and
the grid its metadata records). Blocks are the groups of a group k-fold (stratified for
classes): every sample of a block is tested in the same fold, so a model is never scored on a
neighbour of what it was fitted on. A point's years (or a polygon's samples: the table's
`group_column`) go to the block of their mean coordinate, so a group is never split either.

Learning curve: in each fold of the chosen CV, the model is fitted on n labels per class drawn
from the fold's training part (nested draws: the 10 include the 5; a class with fewer gives all
it has) and scored on the fold's test part: accuracy for a classifier, R² for a regressor (with
n training samples in all). Each point is the mean (and standard deviation) over the folds; the
last point uses every training sample. The curve is "still rising" when its last step gained
more than RISING_GAIN (1 point of accuracy, 0.01 of R²).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from transforms.core.errors import InputError

RISING_GAIN = 0.01  # last step's gain above which the curve counts as still rising
FIRST_SIZE = 5  # the curve's first point: 5 labels per class (then 10, 20, 40 ...)
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(km|m)?\s*$", re.IGNORECASE)
CV_CHOICES = ("random", "spatial")


def parse_block_size(text, flag: str = "--block-size") -> tuple[float, str | None]:
    """'5km' -> (5000.0, 'km'), '500m' -> (500.0, 'm'), '5000' or 5000 -> (5000.0, None): metres
    with a unit, the CRS's own units without one (metres for a UTM store)."""
    if isinstance(text, bool):
        text = str(text)
    if isinstance(text, (int, float)):
        value, unit = float(text), None
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise InputError(
                flag,
                f"cannot read {text!r} as a size: give it as 5km, 500m or 5000 (metres)",
            )
        value, unit = float(match.group(1)), (match.group(2) or "").lower() or None
        value *= 1000.0 if unit == "km" else 1.0
    if not math.isfinite(value) or value <= 0:
        raise InputError(flag, f"a block size must be a positive length, e.g. 5km, got {text!r}")
    return value, unit


def check_cv_choice(cv, block_size, *, cv_flag: str = "--cv", size_flag: str = "--block-size"):
    """--cv random|spatial; --block-size goes with (and is needed by) --cv spatial."""
    if cv not in CV_CHOICES:
        raise InputError(cv_flag, f"expected one of {', '.join(CV_CHOICES)}, got {cv!r}")
    if block_size is not None and cv != "spatial":
        raise InputError(
            size_flag,
            f"sets the blocks of spatial cross-validation: add {cv_flag} spatial, or drop {size_flag}",
        )
    if cv == "spatial" and block_size is None:
        raise InputError(
            size_flag,
            "--cv spatial needs the side of its square blocks, e.g. --block-size 5km (several "
            "times the distance over which nearby samples look alike)",
        )
    return parse_block_size(block_size, size_flag) if cv == "spatial" else None


@dataclasses.dataclass
class Blocks:
    """Each usable row's block (an int id) and what the summary says about them."""

    ids: np.ndarray  # block id of each row
    size: float  # side, in CRS units
    crs: str
    metre: bool  # the CRS's unit is the metre

    @property
    def count(self) -> int:
        return len(np.unique(self.ids))

    def size_text(self) -> str:
        return format_size(self.size, self.metre)


def format_size(size: float, metre: bool) -> str:
    if not metre:
        return f"{size:g} CRS units"
    return f"{size / 1000:g} km" if size >= 1000 else f"{size:g} m"


def pixel_centres(frame, meta: dict, path: str, flag: str = "--cv"):
    """(x, y) in the store's CRS of each row's pixel centre, the CRS, and the pixel's side."""
    grid = meta.get("grid") or {}
    if meta.get("product") == "zonal":
        raise InputError(
            flag,
            f"{path} is a zonal table (one row per polygon) and records no coordinates; spatial "
            "blocks need a table from `efm sample` (points), or use --cv random, which keeps "
            "each polygon's years in one fold",
        )
    missing = [c for c in ("pixel_x", "pixel_y") if c not in frame.columns]
    if missing or "transform" not in grid or "crs" not in grid:
        lacks = ", ".join(missing) if missing else "the grid (CRS and transform) in its metadata"
        raise InputError(
            flag,
            f"spatial cross-validation needs each sample's place, and {path} lacks {lacks}; "
            "make the table with `efm sample` (or efm.sample), or use --cv random",
        )
    a, b, c, d, e, f = (float(v) for v in list(grid["transform"])[:6])
    col = frame["pixel_x"].to_numpy(np.float64) + 0.5
    row = frame["pixel_y"].to_numpy(np.float64) + 0.5
    return a * col + b * row + c, d * col + e * row + f, str(grid["crs"]), max(abs(a), abs(e))


def crs_is_metre(crs: str) -> bool:
    import pyproj

    try:
        axes = pyproj.CRS.from_user_input(crs).axis_info
    except Exception:
        return False
    return bool(axes) and axes[0].unit_name in ("metre", "meter")


def block_index(x: np.ndarray, y: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    return np.floor(x / size).astype(np.int64), np.floor(y / size).astype(np.int64)


def make_blocks(
    frame,
    meta: dict,
    size: float,
    unit: str | None,
    units: np.ndarray | None,
    folds: int,
    path: str,
    *,
    cv_flag: str = "--cv",
    size_flag: str = "--block-size",
    folds_flag: str = "--folds",
) -> Blocks:
    """The block of each row of `frame` (the rows training uses, in order); `units`: the group of
    each row (a point's years, a polygon's samples) or None. Refuses a block smaller than a pixel,
    a unit in a CRS that is not in metres, and fewer blocks holding samples than folds."""
    x, y, crs, pixel = pixel_centres(frame, meta, path, cv_flag)
    metre = crs_is_metre(crs)
    if unit is not None and not metre:
        raise InputError(
            size_flag,
            f"the store's CRS ({crs}) is not in metres: give the block size in its own units, "
            f"without km or m (its pixel is {pixel:g} wide)",
        )
    if size < pixel:
        raise InputError(
            size_flag,
            f"{format_size(size, metre)} is smaller than a pixel of the store "
            f"({format_size(pixel, metre)}): a block must hold at least one pixel; "
            f"try {suggest(x, y, pixel, folds, metre, start=pixel * 100)}",
        )
    if units is not None:  # a group goes to the block of its mean coordinate
        _, inverse = np.unique(units, return_inverse=True)
        counts = np.bincount(inverse)
        x = (np.bincount(inverse, weights=x) / counts)[inverse]
        y = (np.bincount(inverse, weights=y) / counts)[inverse]
    bx, by = block_index(x, y, size)
    _, ids = np.unique(np.stack([bx, by], axis=1), axis=0, return_inverse=True)
    ids = ids.ravel()
    count = int(ids.max()) + 1 if len(ids) else 0
    if count < folds:
        raise InputError(
            size_flag,
            f"the samples lie in {count} block{'s' if count != 1 else ''} of "
            f"{format_size(size, metre)}, fewer than the {folds} folds (the blocks are larger "
            f"than the samples' extent); try {suggest(x, y, pixel, folds, metre, start=size)} "
            f"or {lower_folds(folds_flag)}",
        )
    return Blocks(ids, size, crs, metre)


def lower_folds(flag: str) -> str:
    """How to ask for fewer folds where `flag` took them (the command line: `--tuning folds=N`)."""
    return "lower folds (--tuning folds=N)" if flag == "--tuning" else f"lower {flag}"


def folds_key(flag: str) -> str:
    """The key a refusal about the folds names after `--tuning:` on the command line."""
    return "folds: " if flag == "--tuning" else ""


def suggest(x, y, pixel: float, folds: int, metre: bool, *, start: float) -> str:
    """A rounder size that gives at least 2 x folds blocks (or at least folds), halving from `start`."""
    best = None
    size = _round(start)
    while size >= pixel:
        bx, by = block_index(x, y, size)
        n = len(np.unique(np.stack([bx, by], axis=1), axis=0))
        if n >= folds and best is None:
            best = (size, n)
        if n >= 2 * folds:
            best = (size, n)
            break
        size = _round(size / 2)
    if best is None:
        return "more places: the samples lie in too few pixels to make blocks"
    size, n = best
    text = (f"{size / 1000:g}km" if size >= 1000 else f"{size:g}m") if metre else f"{size:g}"
    return f"--block-size {text} ({n} blocks)"


def _round(value: float) -> float:
    """1, 2 or 5 times a power of ten, at most `value`."""
    if value <= 0:
        return value
    power = 10 ** math.floor(math.log10(value))
    for m in (5, 2, 1):
        if m * power <= value:
            return m * power
    return power


def class_gaps(labels: np.ndarray, splits: list) -> dict:
    """Classes some fold's training part lacks -> the number of such folds."""
    classes = np.unique(labels)
    gaps = {}
    for train, _ in splits:
        for c in np.setdiff1d(classes, np.unique(labels[train])):
            gaps[str(c)] = gaps.get(str(c), 0) + 1
    return gaps


def curve_sizes(largest: int) -> list[int]:
    """5, 10, 20, 40 ... below `largest`, then `largest` (every training label)."""
    sizes, n = [], FIRST_SIZE
    while n < largest:
        sizes.append(n)
        n *= 2
    return sizes + [largest]


def learning_curve(
    estimator, X, y, groups, splits: list, *, classifier: bool, seed: int = 0
) -> dict:
    """The score against the number of labels per class (classifier) or of training samples
    (regressor), over the folds `splits`; see the module's docstring."""
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, r2_score

    units = groups if groups is not None else np.arange(len(y))
    k = estimator.get_params(deep=False).get("n_neighbors")
    draws, largest = [], 0
    for fold, (train, _) in enumerate(splits):
        rng = np.random.default_rng([seed, fold])
        fold_units, first = np.unique(units[train], return_index=True)
        keys = y[train][first] if classifier else np.zeros(len(fold_units))
        order = {}  # class -> its training units in a random order (nested draws)
        for c in np.unique(keys):
            members = fold_units[keys == c]
            order[c] = members[rng.permutation(len(members))]
            largest = max(largest, len(members))
        draws.append(order)
    sizes = curve_sizes(largest)
    rows = []
    for n in sizes:
        scores, used = [], []
        for (train, test), order in zip(splits, draws):
            chosen = np.concatenate([members[:n] for members in order.values()])
            rows_in = train[np.isin(units[train], chosen)]
            if isinstance(k, int) and len(rows_in) < k:
                break
            if classifier and len(np.unique(y[rows_in])) < 2:
                break
            model = clone(estimator).fit(X[rows_in], y[rows_in])
            predicted = model.predict(X[test])
            score = accuracy_score if classifier else r2_score
            scores.append(float(score(y[test], predicted)))
            used.append(len(rows_in))
        if len(scores) == len(splits):
            rows.append(
                {
                    "n": n,
                    "mean": float(np.mean(scores)),
                    "std": float(np.std(scores)),
                    "fold_scores": scores,
                    "training_samples": float(np.mean(used)),
                }
            )
    rising = len(rows) >= 2 and rows[-1]["mean"] - rows[-2]["mean"] > RISING_GAIN
    return {
        "metric": "accuracy" if classifier else "r2",
        "x": "labels per class" if classifier else "training samples",
        "points": rows,
        "still_rising": bool(rising),
        "rule": f"still rising when the last step gains more than {RISING_GAIN:g} "
        f"({'1 point of accuracy' if classifier else 'R²'})",
    }


def format_curve(curve: dict) -> str:
    metric = "accuracy" if curve["metric"] == "accuracy" else "R²"
    head = "labels/class" if curve["metric"] == "accuracy" else "samples"
    lines = [
        f"learning curve ({metric} over the folds against {curve['x']}):",
        f"{head:>12}  {'mean':>7}  {'std':>7}  training samples",
    ]
    for i, p in enumerate(curve["points"]):
        n = f"all ({p['n']})" if i == len(curve["points"]) - 1 else str(p["n"])
        lines.append(f"{n:>12}  {p['mean']:7.4f}  {p['std']:7.4f}  {p['training_samples']:.0f}")
    if len(curve["points"]) < 2:
        lines.append("too few labels for a curve: a single point")
    elif curve["still_rising"]:
        gain = curve["points"][-1]["mean"] - curve["points"][-2]["mean"]
        lines.append(
            f"still rising: the last step gained {gain:+.4f}; more labels would likely help"
        )
    else:
        gain = curve["points"][-1]["mean"] - curve["points"][-2]["mean"]
        lines.append(f"levelling off: the last step gained {gain:+.4f} (rule: {curve['rule']})")
    return "\n".join(lines)


def curve_png_path(output: str) -> str:
    """Where --learning-curve without a path writes: beside the model."""
    return f"{output}.learning-curve.png"


def write_curve_png(curve: dict, path: str, title: str) -> str:
    """The curve as a PNG (mean ± std over the folds), written whole or not at all."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from transforms.core import atomic
    from transforms.storage.kinds import PNG_KEY

    points = curve["points"]
    n = np.array([p["n"] for p in points], dtype=float)
    mean = np.array([p["mean"] for p in points])
    std = np.array([p["std"] for p in points])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.fill_between(n, mean - std, mean + std, alpha=0.25, label="± std over folds")
    ax.plot(n, mean, "o-", label="mean over folds")
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(int(v)) for v in n])
    ax.set_xlabel(curve["x"])
    ax.set_ylabel("accuracy" if curve["metric"] == "accuracy" else "R²")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic.open_write(path) as f:
        # the text chunk is how a later --overwrite knows the file is efm's
        fig.savefig(f, format="png", bbox_inches="tight", metadata={PNG_KEY: "quicklook"})
    plt.close(fig)
    return path
