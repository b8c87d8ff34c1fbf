"""The demo's picture: the ground truth next to each year's class map in the same colours, and
a row of the biomass, similarity and change maps against their truth."""

from __future__ import annotations

import json

from sample_data import fields as sample_fields
from sample_data import generate as sample_data
from sample_data import truth as sample_truth
from sample_data.scores import FieldScores, open_store
from transforms.core import atomic


def comparison_figure(
    classes_path: str,
    data: sample_data.SampleData,
    scores: dict[int, dict],
    path: str,
    fields: FieldScores | None = None,
) -> str:
    """Ground truth next to each year's classified map, in the same colours; with `fields`, a
    second row: the true and predicted biomass, the similarity to the reference class, and change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    truth, _, _, names = sample_truth.read_ground_truth(data.ground_truth)
    colours = json.load(open(data.colors))
    ds = open_store(classes_path)
    labels = [str(v) for v in ds["class"].attrs["class_labels"]]
    fill = int(ds["class"].attrs.get("fill_value", 255))
    cmap = ListedColormap([colours[n] for n in names])
    years = list(scores)
    n_cols = 1 + len(years) + (1 if fields is not None else 0)
    n_rows = 2 if fields is not None else 1
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(5.2 * n_cols, (4.4 if fields is not None else 5.2) * n_rows),
        constrained_layout=True,
        squeeze=False,
    )
    top = axes[0]
    shown = np.ma.masked_equal(truth, sample_truth.NODATA_CLASS)
    top[0].imshow(shown, cmap=cmap, vmin=0, vmax=len(names) - 1, interpolation="nearest")
    top[0].set_title("ground truth")
    to_truth = np.array([names.index(label) for label in labels] + [0] * (256 - len(labels)))
    for ax, (t, year) in zip(top[1:], enumerate(years)):
        predicted = np.asarray(ds["class"].isel(time=t).values)
        image = np.ma.masked_where(predicted == fill, to_truth[predicted])
        ax.imshow(image, cmap=cmap, vmin=0, vmax=len(names) - 1, interpolation="nearest")
        ax.set_title(f"k-NN map {year}: held-out accuracy {scores[year]['accuracy']:.1%}")
    if fields is not None:
        field_panels(fig, top[-1], axes[1], fields)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.legend(
        handles=[Patch(color=colours[n], label=n) for n in names],
        loc="lower center",
        ncol=len(names),
        frameon=False,
        bbox_to_anchor=(0.5, -0.03 if fields is not None else -0.06),
    )
    with atomic.local_path(path) as temp:  # whole or the old one (transforms/core/atomic.py)
        fig.savefig(temp, format="png", dpi=90 if fields is None else 72, bbox_inches="tight")
    plt.close(fig)
    return path


def field_panels(fig, truth_ax, row, fields: FieldScores) -> None:
    """True biomass (above), then predicted biomass, similarity, change similarity, and change found."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    a = fields.arrays
    top = float(np.nanpercentile(a["truth_field"], 99))
    image = truth_ax.imshow(
        a["truth_field"], cmap="YlGn", vmin=0, vmax=top, interpolation="nearest"
    )
    truth_ax.set_title("true biomass (synthetic)")
    fig.colorbar(image, ax=truth_ax, shrink=0.8, label="Mg/ha")
    image = row[0].imshow(a["predicted"], cmap="YlGn", vmin=0, vmax=top, interpolation="nearest")
    r = fields.regression
    row[0].set_title(f"k-NN biomass {fields.year}: held-out R² {r['r2']:.2f}")
    fig.colorbar(image, ax=row[0], shrink=0.8, label="Mg/ha")
    image = row[1].imshow(a["similarity"], cmap="magma", interpolation="nearest")
    s = fields.similarity
    row[1].set_title(
        f"similarity to {s['class']} points: {s['reference']:.2f} vs {s['others']:.2f}"
    )
    fig.colorbar(image, ax=row[1], shrink=0.8, label="dot product")
    if fields.change is None:
        for ax in row[2:]:
            ax.set_visible(False)
        return
    image = row[2].imshow(
        a["change_similarity"], cmap="RdYlBu", vmin=0.4, vmax=1, interpolation="nearest"
    )
    row[2].set_title("year-to-year similarity (1 = unchanged)")
    fig.colorbar(image, ax=row[2], shrink=0.8, label="dot product")
    if len(row) > 3:
        # 0 neither, 1 found (true), 2 missed, 3 false alarm; masked where there is no data
        found, true = a["changed"] == 1, a["change_truth"] == 1
        code = np.where(found & true, 1, np.where(true, 2, np.where(found, 3, 0)))
        shown = np.ma.masked_where(
            (a["change_truth"] == sample_fields.CHANGE_NODATA) | (a["changed"] > 1), code
        )
        row[3].imshow(
            shown,
            cmap=ListedColormap(["#eeeeee", "#1a9850", "#d73027", "#fc8d59"]),
            vmin=0,
            vmax=3,
            interpolation="nearest",
        )
        c = fields.change
        row[3].set_title(
            f"changed: found (green) {c['recall']:.0%}, missed (red),\nfalse alarms (orange); precision {c['precision']:.0%}"
        )


def palette(classes_path: str, data: sample_data.SampleData) -> str:
    """`efm export --tuning colors=...` for the class map: each class in its ground-truth colour
    (`;`-separated pairs: `,` separates --tuning's items)."""
    labels = [str(v) for v in open_store(classes_path)["class"].attrs["class_labels"]]
    colours = json.load(open(data.colors))
    return ";".join(f"{label}={colours[label]}" for label in labels if label in colours)
