"""Smoke test of an installed efm: the notebook's workflow on tiny generated data.

scripts/compat_smoke.sh runs it in a fresh virtualenv where efm was installed without
constraints.txt, next to the newest jupyterlab, geopandas and pandas the index resolves, to
show that the ranges in setup.py admit a working set. It is a plain script (no pytest, nothing
from tests/), run from outside the checkout so that it imports the installed package:

    python scripts/smoke_api.py --installed   # exit 0 and "smoke: ok", or a traceback

Steps: `efm make-sample-data` (the package's own generator, 128 x 160 px), `efm extract
--source cog` on FnApiRunner (the console script, a Beam pipeline), then the Python API:
open_embeddings, sample, train, predict, similarity, change, to_cog, plot, save_model. Checks
are against independent references: the k-NN model's own `predict` on the sampled vectors, a
numpy dot product, rasterio reading the COG back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

# the product's direct dependencies and the three packages the compatibility check installs
# beside it, whose versions the script prints
REPORTED = (
    "apache-beam",
    "xarray-beam",
    "earthengine-api",
    "numpy",
    "pandas",
    "xarray",
    "zarr",
    "dask",
    "scikit-learn",
    "scipy",
    "skops",
    "rasterio",
    "rioxarray",
    "pyproj",
    "shapely",
    "geopandas",
    "pyogrio",
    "pyarrow",
    "fsspec",
    "gcsfs",
    "matplotlib",
    "jupyterlab",
)


def versions() -> str:
    from importlib import metadata

    found = []
    for name in REPORTED:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name}: not installed")
    return "\n".join(found)


def efm_command() -> list[str]:
    """The console script next to this interpreter (what `pip install` made), else the module."""
    script = os.path.join(os.path.dirname(sys.executable), "efm")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "pipelines.cli"]


def run(work: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import rasterio

    import efm

    data = os.path.join(work, "sample-data")
    efm_cmd = efm_command()
    subprocess.run(
        [
            *efm_cmd,
            "make-sample-data",
            "--output",
            data,
            "--size",
            "128x160",
            "--tuning",
            "tile_size=64",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    manifest = json.load(open(os.path.join(data, "sample_data.json")))
    store = os.path.join(work, "embeddings.zarr")
    subprocess.run(
        [
            *efm_cmd,
            "extract",
            "--source",
            "cog",
            "--cog-root",
            os.path.join(data, "mirror"),
            "--bbox=" + ",".join(map(repr, manifest["bbox"])),
            "--crs",
            manifest["crs"],
            "--years",
            "2022,2023",
            "--dtype",
            "int8",
            "--tuning",
            "chunk_size=128",
            "--output",
            store,
            "--runner=FnApiRunner",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )

    ds = efm.open_embeddings(store)
    assert ds.rio.crs is not None and ds["embedding"].dtype == np.float32, ds
    assert list(ds["time"].dt.year.values) == [2022, 2023]

    table = efm.sample(ds, os.path.join(data, "labels.geojson"), label_column="label")
    bands = [str(b) for b in ds["band"].values]
    assert len(table) > 0 and set(bands) <= set(table.columns), table.columns
    # each row holds the store's vector at its pixel (xarray indexing as the reference)
    row = table.iloc[len(table) // 2]
    expected = (
        ds["embedding"]
        .sel(time=ds["time"][ds["time"].dt.year == row["year"]][0])
        .isel(y=int(row["pixel_y"]), x=int(row["pixel_x"]))
        .values
    )
    np.testing.assert_array_equal(row[bands].to_numpy(dtype=np.float32), expected)

    model, report = efm.train(table, classifier="knn", params={"n_neighbors": 1})
    assert str(report)

    classes = efm.predict(ds, model)
    codes = classes.values  # computes the lazy map
    labels = list(classes.attrs["class_labels"])
    picked = table.drop_duplicates(["year", "pixel_y", "pixel_x"]).head(40)
    got = [
        labels[codes[list(ds["time"].dt.year.values).index(y), r, c]]
        for y, r, c in zip(picked["year"], picked["pixel_y"], picked["pixel_x"])
    ]
    want = model.predict(picked[bands].to_numpy(dtype=np.float32))
    assert [str(g) for g in got] == [str(w) for w in want], (got, want)

    sim = efm.similarity(ds, os.path.join(data, "refs.geojson")).values
    change = efm.change(ds, 2022, 2023).values
    e = ds["embedding"].values
    reference = np.einsum("yxb,yxb->yx", e[0].astype(np.float64), e[1].astype(np.float64))
    np.testing.assert_allclose(change, reference, rtol=0, atol=1e-5)
    assert np.isfinite(sim).any()

    cog = efm.to_cog(classes, os.path.join(work, "classes_2022.tif"), year=2022)
    with rasterio.open(cog) as src:
        np.testing.assert_array_equal(src.read(1), codes[0])
    efm.plot(classes, year=2023)
    efm.save_model(model, os.path.join(work, "model.skops"), report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--installed",
        action="store_true",
        help="require efm to be imported from site-packages (not a checkout on sys.path)",
    )
    args = parser.parse_args()
    print(versions())
    if args.installed:
        import efm

        where = os.path.dirname(os.path.dirname(os.path.abspath(efm.__file__)))
        assert "site-packages" in where, f"efm imported from {where}, not from an installed package"
    work = tempfile.mkdtemp(prefix="efm-smoke-")
    try:
        run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the folder this script made
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
