"""Bad stores and bad areas given to every command that reads a store (issue 17, "Bad input"):
one line `efm <cmd>: error: <flag>: ...`, exit 2, nothing written, no Beam pipeline started.

Stores: one in the public AEF mosaic's layout (EPSG:4326, int8 signed_square, 64 bands) and one
in TESSERA's zone-group layout holding floats (UTM 31N, 128 bands), built by
tests/helpers/field_stores.py; broken copies are made by editing their zarr.json by hand.
Remote roots (unreachable, silent, access denied): tests/test_store_remote_refusals.py.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import zarr

from pipelines import cli, common
from tests.helpers import field_stores
from tests.helpers.runners import FNAPI

YEARS = (2023, 2024)
WEST, NORTH, RES = -122.5, 38.0, 0.00009  # the mosaic
UTM_WEST, UTM_NORTH = 500000.0, 4200000.0  # the float store (10 m pixels)
COMMANDS = ("predict", "classify", "similarity", "sample", "change", "export", "cluster", "label")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    rng = np.random.default_rng(17)
    mosaic = str(folder / "aef-mosaic.zarr")
    array = field_stores.aef_mosaic(mosaic, width=300, height=200, years=YEARS)
    array[:] = rng.integers(-127, 128, size=array.shape, dtype=np.int8)
    tessera = str(folder / "tessera.zarr")
    embeddings, _ = field_stores.tessera(
        tessera, 31, width=80, height=60, years=YEARS, dtype="float32"
    )
    embeddings[:] = rng.normal(size=embeddings.shape).astype(np.float32)
    return {"4326": mosaic, "utm": f"{tessera}/utm31"}


def _points(folder, kind: str) -> tuple[str, list[str]]:
    """Six labelled points inside a store (CSV; UTM ones with --tuning points_crs)."""
    path = folder / f"points-{kind}.csv"
    if kind == "4326":
        rows = [(WEST + (c + 0.5) * RES, NORTH - (r + 0.5) * RES) for r, c in _PIXELS]
        path.write_text(
            "lon,lat,cls\n" + "".join(f"{x},{y},{k}\n" for (x, y), k in _labelled(rows))
        )
        return str(path), []
    rows = [(UTM_WEST + (c + 0.5) * 10, UTM_NORTH - (r + 0.5) * 10) for r, c in _PIXELS]
    path.write_text("x,y,cls\n" + "".join(f"{x},{y},{k}\n" for (x, y), k in _labelled(rows)))
    return str(path), ["--tuning", "points_crs=EPSG:32631"]


_PIXELS = [(5, 5), (10, 40), (30, 20), (40, 50), (50, 10), (20, 70)]


def _labelled(rows):
    return zip(rows, ["a", "b"] * 3)


@pytest.fixture(scope="module")
def models(stores, tmp_path_factory):
    """A k-NN trained (efm sample + efm train) on each store: 64 bands, and 128."""
    folder = tmp_path_factory.mktemp("models")
    made = {}
    for kind, store in stores.items():
        points, crs = _points(folder, kind)
        table, model = str(folder / f"{kind}.parquet"), str(folder / f"{kind}.skops")
        argv = ["sample", "--embeddings", store, "--points", points, "--label-column", "cls"]
        assert cli.main(argv + crs + ["--output", table] + FNAPI) == 0
        train = ["train", "--samples", table, "--classifier", "knn", "--tuning", "folds=2"]
        assert cli.main(train + ["--param", "n_neighbors=1", "--output", model]) == 0
        made[kind] = model
    return made


@pytest.fixture
def no_pipeline(monkeypatch):
    """A refusal must come before any Beam pipeline (any worker) or label's server starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("a Beam pipeline started before the refusal")

    monkeypatch.setattr(common, "run_pipeline", refuse)
    # efm label: a store let through would be served until Ctrl-C; refuse to listen instead
    from label_page import server as serverlib

    monkeypatch.setattr(serverlib, "make_server", refuse)


def _argv(command: str, store: str, out_dir, model: str | None = None) -> tuple[list[str], str]:
    """The command's argv reading `store`, and the output it would write."""
    ext = {"sample": "parquet", "export": "tif", "cluster": "skops", "label": "geojson"}
    out = str(out_dir / f"out-{command}.{ext.get(command, 'zarr')}")
    refs = out_dir / "refs.csv"
    refs.write_text(f"lon,lat\n{WEST + RES},{NORTH - RES}\n")
    flag = "--input" if command == "export" else "--embeddings"
    argv = [command, flag, store, "--output", out]
    argv += {
        "predict": ["--model", model or "m.skops"],
        "classify": ["--model", model or "m.skops"],
        "similarity": ["--points", str(refs)],
        "sample": ["--points", str(refs)],
        "change": ["--years", "2023,2024"],
        "export": ["--band", "A01", "--years", "2024"],
        "cluster": ["--clusters", "2", "--tuning", "sample_size=100"],
        "label": ["--classes", "a,b", "--tuning", "port=0"],
    }[command]
    return argv + (FNAPI if command not in ("export", "label") else []), out


def _one_line(capsys, command: str, flag: str, *fragments: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"efm {command}: error: {flag}: "), err
    assert all(f in err[0] for f in fragments), (fragments, err)
    return err[0]


def _nothing_written(out: str, *others: str) -> None:
    for path in (out, *others):
        assert not os.path.exists(path), path


# ---------------------------------------------------------------- (a) not an embedding store


def _not_stores(folder) -> dict:
    """Zarr stores (and non-Zarr paths) that are not embedding stores -> what the line must say."""
    made = {}
    path = str(folder / "ndvi.zarr")  # Zarr 3, another array
    zarr.open_group(path, mode="w", zarr_format=3).create_array("ndvi", shape=(4, 4), dtype="f4")
    made[path] = ("not an embedding store", "no 'embedding' or 'embeddings' array", "ndvi")
    path = str(folder / "v2.zarr")  # Zarr 2 (as xarray writes it), another variable
    import xarray as xr

    xr.Dataset({"temperature": (("y", "x"), np.zeros((3, 3), "f4"))}).to_zarr(
        path, zarr_format=2, consolidated=True
    )
    made[path] = ("not an embedding store", "temperature")
    path = str(folder / "flat.zarr")  # an `embeddings` array without time and band axes
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.create_array("embeddings", shape=(4, 4), dtype="f4", dimension_names=["y", "x"])
    made[path] = ("'embeddings' has dimensions ['y', 'x']", "(time, band, y, x)")
    path = str(folder / "notime.zarr")  # the mosaic's layout without its time coordinate
    field_stores.aef_mosaic(path, width=20, height=10, years=(2024,))
    shutil.rmtree(os.path.join(path, "time"))
    made[path] = ("has no time coordinate",)
    path = str(folder / "int16.zarr")  # codes of a dtype no quantisation names
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.create_array(
        "embeddings", shape=(1, 2, 4, 4), dtype="i2", dimension_names=["time", "band", "y", "x"]
    )
    made[path] = ("dtype int16", "neither floats nor int8")
    path = str(folder / "folder")  # a folder that is no Zarr store
    os.makedirs(path)
    with open(os.path.join(path, "readme.txt"), "w") as f:
        f.write("not a store")
    made[path] = ("does not exist (or is not a Zarr store)",)
    path = str(folder / "missing.zarr")
    made[path] = ("does not exist",)
    return made


@pytest.mark.parametrize("command", COMMANDS)
def test_a_zarr_that_is_not_an_embedding_store_says_what_is_missing(
    models, tmp_path, capsys, no_pipeline, command
):
    for store, fragments in _not_stores(tmp_path / "in").items():
        argv, out = _argv(command, store, tmp_path, models["4326"])
        assert cli.main(argv) == 2, store
        flag = "--input" if command == "export" else "--embeddings"
        _one_line(capsys, command, flag, store, *fragments)
        _nothing_written(out)
    # and, where a store is not a group at all: a single file
    tif = tmp_path / "map.tif"
    tif.write_bytes(b"II*\x00not really")
    argv, out = _argv(command, str(tif), tmp_path, models["4326"])
    assert cli.main(argv) == 2
    _one_line(capsys, command, "--input" if command == "export" else "--embeddings", str(tif))
    _nothing_written(out)


# ---------------------------------------------------------------- (b) a grid missing or inconsistent


def _edited_copy(source: str, folder, name: str, **changes) -> str:
    """A copy of the mosaic whose root zarr.json attributes are changed (None removes one)."""
    path = str(folder / name)
    shutil.copytree(source, path)
    with open(os.path.join(path, "zarr.json")) as f:
        meta = json.load(f)
    for key, value in changes.items():
        key = key.replace("__", ":")
        if value is None:
            meta["attributes"].pop(key, None)
        else:
            meta["attributes"][key] = value
    with open(os.path.join(path, "zarr.json"), "w") as f:
        json.dump(meta, f)
    return path


_H, _W = 200, 300  # the mosaic's size
BAD_GRIDS = {
    "no-crs": ({"proj__code": None}, ("names no CRS", "proj:code")),
    "not-a-crs": ({"proj__code": "EPSG:999999"}, ("proj:code", "is not a CRS")),
    "crs-keys-disagree": (
        {"proj__wkt2": "EPSG:32610"},
        ("proj:wkt2", "proj:code", "name different CRSs"),
    ),
    "no-transform": ({"spatial__transform": None}, ("names no grid", "spatial:transform")),
    "transform-not-numbers": (
        {"spatial__transform": [RES, 0, "west", 0, -RES, NORTH]},
        ("no usable spatial:transform",),
    ),
    "rotated": (
        {"spatial__transform": [RES, 0.1, WEST, 0, -RES, NORTH]},
        ("rotated or degenerate",),
    ),
    "x-coords-off": (
        {"spatial__transform": [RES, 0, WEST + 1, 0, -RES, NORTH]},
        ("x coordinates are not",),
    ),
    "y-coords-off": (
        {"spatial__transform": [RES, 0, WEST, 0, -RES, NORTH - 0.01]},
        ("y coordinates are not",),
    ),
    "shape-off": ({"spatial__shape": [_H, _W + 1]}, ("spatial:shape", "disagrees")),
    "bbox-off": (
        {"spatial__bbox": [WEST, NORTH - 2 * _H * RES, WEST + _W * RES, NORTH]},
        ("spatial:bbox", "disagrees with spatial:transform"),
    ),
    "utm-transform-in-4326": (  # metres labelled degrees (coords checks are off for this one)
        {"spatial__transform": [10, 0, 500000, 0, -10, 4200000], "spatial__bbox": None},
        ("not on the globe",),
    ),
    "transform-type": ({"spatial__transform_type": "rpc"}, ("transform_type 'rpc'",)),
    "registration": ({"spatial__registration": "corner"}, ("registration 'corner'",)),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_store_whose_crs_or_transform_is_missing_or_inconsistent(
    stores, models, tmp_path, capsys, no_pipeline, command
):
    for name, (changes, fragments) in BAD_GRIDS.items():
        store = _edited_copy(stores["4326"], tmp_path, f"{name}.zarr", **changes)
        if name == "utm-transform-in-4326":  # its own x/y coordinates agree with it
            for axis, n, origin, step in (("x", _W, 500000, 10), ("y", _H, 4200000, -10)):
                zarr.open_array(os.path.join(store, axis), mode="r+")[:] = (
                    origin + (np.arange(n) + 0.5) * step
                )
        argv, out = _argv(command, store, tmp_path, models["4326"])
        assert cli.main(argv) == 2, name
        flag = "--input" if command == "export" else "--embeddings"
        _one_line(capsys, command, flag, store, *fragments)
        _nothing_written(out)


def test_a_node_registered_grid_is_read_at_its_cell_centres(stores, tmp_path):
    """spatial:registration "node": the transform places the border cells' centres; the grid is
    read half a cell up and left of what "pixel" would give, and the x/y coordinates agree."""
    import efm

    store = _edited_copy(
        stores["4326"],
        tmp_path,
        "node.zarr",
        spatial__registration="node",
        spatial__transform=[RES, 0, WEST + RES / 2, 0, -RES, NORTH - RES / 2],
        spatial__bbox=[
            WEST + RES / 2,
            NORTH - (_H - 0.5) * RES,
            WEST + (_W - 0.5) * RES,
            NORTH - RES / 2,
        ],
    )
    ds = efm.open_embeddings(store)
    assert tuple(ds.rio.transform())[:6] == pytest.approx((RES, 0, WEST, 0, -RES, NORTH), abs=1e-12)
    np.testing.assert_allclose(
        ds["x"].values, WEST + (np.arange(_W) + 0.5) * RES, rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(
        ds["y"].values, NORTH - (np.arange(_H) + 0.5) * RES, rtol=0, atol=1e-9
    )


# ---------------------------------------------------------------- (c) an area outside the store


def _areas(kind: str) -> dict:
    """Areas outside the store: far away, and just past its east edge (lon/lat)."""
    if kind == "4326":
        east = WEST + _W * RES
        return {
            "far": "10.0,45.0,10.1,45.1",
            "next to it": f"{east + RES},{NORTH - 0.01},{east + 0.01},{NORTH - RES}",
        }
    import pyproj

    to_lonlat = pyproj.Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    lon0, lat0 = to_lonlat.transform(UTM_WEST + 80 * 10 + 20, UTM_NORTH - 300)
    lon1, lat1 = to_lonlat.transform(UTM_WEST + 80 * 10 + 200, UTM_NORTH - 100)
    return {"far": "-60.0,-10.0,-59.9,-9.9", "next to it": f"{lon0},{lat0},{lon1},{lat1}"}


@pytest.mark.parametrize("kind", ["4326", "utm"])
@pytest.mark.parametrize("command", ["predict", "similarity", "change", "export", "sample"])
def test_an_area_outside_the_store_is_refused(
    stores, models, tmp_path, capsys, no_pipeline, kind, command
):
    store = stores[kind]
    for where, bbox in _areas(kind).items():
        argv, out = _argv(command, store, tmp_path, models[kind])
        if command == "sample":  # sample takes points, not an area: every point outside
            west, south, east, north = (float(v) for v in bbox.split(","))
            points = tmp_path / "outside.csv"
            points.write_text(f"lon,lat,cls\n{west},{south},a\n{east},{north},b\n")
            argv[argv.index("--points") + 1] = str(points)
            assert cli.main(argv + ["--label-column", "cls"]) == 2, where
            _one_line(capsys, command, "--points", "none of the 2 points", store)
        else:
            assert cli.main(argv + ["--bbox", bbox]) == 2, where
            _one_line(capsys, command, "--bbox", "lies outside", store, "which covers lon")
        _nothing_written(out)


# ---------------------------------------------------------------- (e) a model of another band count


@pytest.mark.parametrize("command", ["predict", "classify"])
@pytest.mark.parametrize("trained_on, applied_to", [("4326", "utm"), ("utm", "4326")])
def test_a_model_trained_on_another_number_of_bands_is_refused_naming_both(
    stores, models, tmp_path, capsys, no_pipeline, command, trained_on, applied_to
):
    bands = {"4326": 64, "utm": 128}
    argv, out = _argv(command, stores[applied_to], tmp_path, models[trained_on])
    assert cli.main(argv) == 2
    line = _one_line(
        capsys,
        command,
        "--model",
        f"trained on {bands[trained_on]} bands",
        f"has {bands[applied_to]} bands",
        stores[applied_to],
    )
    assert models[trained_on] in line
    _nothing_written(out)
