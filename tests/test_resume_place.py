"""--resume checks the place: a store is continued only where this run would write the same thing.

A complete or an interrupted store, resumed with an area of the same size shifted east, another
CRS, scale, chunk size, years or dtype, is refused with one line naming the difference, and the
store is byte-for-byte untouched. Resumed with the flags that made it, it is finished exactly.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import xarray as xr

from pipelines import classify, extract, train
from sample_data import generate as sample_data
from tests.helpers.cog_mirror import assert_store_is_the_mirror
from tests.helpers.runners import FNAPI
from tests.helpers.store_files import interrupt, snapshot
from transforms.core import grid as gridlib


def bbox_text(bbox) -> str:
    return ",".join(repr(float(v)) for v in bbox)


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """Sample data, an area in its west, the same-size area shifted east, and a complete store of the first."""
    root = tmp_path_factory.mktemp("place")
    data = sample_data.generate(
        str(root / "sample-data"), sample_data.SampleSpec(**sample_data.SMALL, years=(2022, 2023))
    )
    w, s, e, n = data.bbox
    base = (w, s, w + 0.5 * (e - w), n)
    grid, _ = gridlib.plan_grid(gridlib.parse_bbox(bbox_text(base)), data.crs, 10.0)
    shifted = None
    for k in range(1, 200):  # the same number of pixels, whole pixels further east
        candidate = (base[0] + k * 0.0002, s, base[2] + k * 0.0002, n)
        other, _ = gridlib.plan_grid(gridlib.parse_bbox(bbox_text(candidate)), data.crs, 10.0)
        if (other.width, other.height) == (grid.width, grid.height) and other.x0 >= grid.x0 + 500:
            shifted = candidate
            break
    assert shifted is not None
    store = str(root / "emb.zarr")
    p = {
        "data": data,
        "base": bbox_text(base),
        "shifted": bbox_text(shifted),
        "store": store,
        "root": root,
    }
    assert extract.run(extract_argv(p, store)) == 0
    # every test below stands on this store: it must be the source's own pixels
    assert_store_is_the_mirror(store, data.mirror, [2022])
    return p


def extract_argv(p, output, *, bbox=None, **flags) -> list[str]:
    options = {
        "--crs": p["data"].crs,
        "--years": "2022",
        "--dtype": "float32",
    }
    scale = flags.pop("scale", "10")  # --tuning keys
    chunk_size = flags.pop("chunk_size", "128")
    options.update({f"--{k.replace('_', '-')}": v for k, v in flags.items()})
    args = [
        "--source",
        "cog",
        "--cog-root",
        p["data"].mirror,
        f"--bbox={bbox or p['base']}",
        "--output",
        str(output),
        "--tuning",
        f"max_concurrent_requests=2,scale={scale},chunk_size={chunk_size}",
        *FNAPI,
    ]
    for k, v in options.items():
        args += [k, v]
    return args


@pytest.fixture(params=["complete", "interrupted"])
def existing(request, place, tmp_path):
    path = shutil.copytree(place["store"], tmp_path / "emb.zarr")
    if request.param == "interrupted":
        interrupt(str(path))
    return str(path)


CHANGES = {
    "shifted east": (dict(bbox="shifted"), "x origin "),
    "other CRS": (dict(crs="EPSG:32611"), "CRS EPSG:32610 (this run: EPSG:32611)"),
    "other scale": (dict(scale="20"), "pixel width 10 (this run: 20)"),
    "other chunk size": (dict(chunk_size="256"), "chunk size 128 (this run: 256)"),
    "other years": (dict(years="2022,2023"), "years 2022 (this run: 2022, 2023)"),
    "other dtype": (dict(dtype="int8"), "embedding dtype float32 (this run: int8)"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_resume_elsewhere_is_refused_naming_the_difference(place, existing, capsys, change):
    flags, words = CHANGES[change]
    flags = dict(flags)
    bbox = place[flags.pop("bbox")] if "bbox" in flags else None
    before = snapshot(existing)
    capsys.readouterr()
    code = extract.run(extract_argv(place, existing, bbox=bbox, **flags) + ["--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("efm extract: error: --resume: ") and "\n" not in err, err
    assert words in err and "pass --overwrite to replace it" in err, err
    assert snapshot(existing) == before


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_resume_elsewhere_is_refused_before_the_plan(place, existing, capsys, dry_run):
    """No plan counting the other place's chunks as done, and a dry run fails as the run would."""
    before = snapshot(existing)
    capsys.readouterr()
    code = extract.run(
        extract_argv(place, existing, bbox=place["shifted"]) + ["--resume", *dry_run]
    )
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("efm extract: error: --resume: ") and "x origin" in err, err
    assert "chunks already done" not in out, out
    assert snapshot(existing) == before


def test_shifted_area_message_names_both_origins(place, existing, capsys):

    zattrs = json.loads((pathlib.Path(existing) / "spatial_ref" / "zarr.json").read_text())[
        "attributes"
    ]
    x0 = float(zattrs["GeoTransform"].split()[0])
    extract.run(extract_argv(place, existing, bbox=place["shifted"]) + ["--resume"])
    err = capsys.readouterr().err
    assert (
        f"x origin {x0:.10g} (this run: " in err and "shape" not in err
    )  # same size: only the place differs


def test_resume_in_the_same_place_finishes_the_store_exactly(place, tmp_path, capsys):
    path = str(shutil.copytree(place["store"], tmp_path / "emb.zarr"))
    interrupt(path)
    assert extract.run(extract_argv(place, path) + ["--resume"]) == 0, capsys.readouterr().err
    assert "chunks already done (resume)" in capsys.readouterr().out
    assert xr.open_zarr(path).attrs["efm_status"] == "complete"
    # the oracle is the mirror's files (rasterio, numpy), not a store this code wrote
    assert_store_is_the_mirror(path, place["data"].mirror, [2022])


# ---------------------------------------------------------------- classify --resume


@pytest.fixture(scope="module")
def class_place(place):
    """A class map of the base store, a second model, and a store of the shifted area."""
    import pandas as pd

    root = place["root"]
    ds = xr.open_zarr(place["store"], mask_and_scale=False).transpose("time", "y", "x", "band")
    values = ds["embedding"].isel(time=0).values.reshape(-1, ds.sizes["band"])
    rng = np.random.default_rng(0)
    picked = values[rng.choice(np.flatnonzero(~np.isnan(values[:, 0])), 90, replace=False)]
    for name, labels in (
        ("a", np.repeat(["x", "y", "z"], 30)),
        ("b", np.tile(["x", "y", "z"], 30)),
    ):
        frame = pd.DataFrame(picked, columns=[str(b) for b in ds["band"].values])
        frame.insert(0, "label", labels)
        frame.insert(0, "point_id", np.arange(90))
        frame.to_parquet(root / f"samples-{name}.parquet")
        assert (
            train.run(
                [
                    "--samples",
                    str(root / f"samples-{name}.parquet"),
                    "--classifier",
                    "knn",
                    "--tuning",
                    "folds=3",
                    "--output",
                    str(root / f"{name}.skops"),
                ]
            )
            == 0
        )
    shifted = str(root / "shifted.zarr")
    assert extract.run(extract_argv(place, shifted, bbox=place["shifted"])) == 0
    classes = str(root / "classes.zarr")
    assert (
        classify.run(
            [
                "--embeddings",
                place["store"],
                "--model",
                str(root / "a.skops"),
                "--output",
                classes,
                *FNAPI,
            ]
        )
        == 0
    )
    return {
        "classes": classes,
        "model_a": str(root / "a.skops"),
        "model_b": str(root / "b.skops"),
        "shifted": shifted,
    }


@pytest.mark.parametrize("state", ["complete", "interrupted"])
@pytest.mark.parametrize(
    "change, words",
    [
        ("model", "model sha256 "),
        ("confidence", "no confidence (this run: --confidence)"),
        ("shifted", "x origin "),
    ],
)
def test_classify_resume_elsewhere_is_refused(
    place, class_place, tmp_path, capsys, state, change, words
):
    path = str(shutil.copytree(class_place["classes"], tmp_path / "classes.zarr"))
    if state == "interrupted":
        interrupt(path)
    embeddings = class_place["shifted"] if change == "shifted" else place["store"]
    model = class_place["model_b"] if change == "model" else class_place["model_a"]
    extra = ["--confidence"] if change == "confidence" else []
    before = snapshot(path)
    capsys.readouterr()
    code = classify.run(
        ["--embeddings", embeddings, "--model", model, "--output", path, "--resume", *extra, *FNAPI]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("efm classify: error: --resume: ") and "\n" not in err, err
    assert words in err, err
    assert snapshot(path) == before
