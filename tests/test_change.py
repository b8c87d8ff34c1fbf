"""efm change: the change store equals an independent float64 numpy computation on the whole array."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pipelines import change as change_cli
from tests.helpers.runners import FNAPI, MULTIPROCESS
from tests.helpers.store_factory import make_store
from transforms.storage import store

ATOL = 1e-5  # float32 dot products of 64-band unit vectors against float64


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    # store_factory's class pattern shifts by one class a year (4 classes): 2021 -> 2023 changes every pixel, 2021 -> 2025 none
    return {
        dtype: make_store(
            str(root / f"{dtype}.zarr"), dtype=dtype, years=(2021, 2022, 2023, 2024, 2025)
        )
        for dtype in ("float32", "int8")
    }


def store_values(s) -> np.ndarray:
    """(time, y, x, band) float64 read straight from the store (float32) or the factory's de-quantised truth (int8)."""
    return s.values.astype(np.float64)


def expected_change(s, t0, t1, threshold=None):
    v = store_values(s)
    a, b = v[t0], v[t1]
    nodata = np.isnan(a).any(axis=-1) | np.isnan(b).any(axis=-1)
    sim = np.einsum("yxb,yxb->yx", np.nan_to_num(a), np.nan_to_num(b))
    sim[nodata] = np.nan
    if threshold is None:
        return sim, None
    changed = np.where(nodata, 255, np.where(sim < threshold, 1, 0)).astype(np.uint8)
    return sim, changed


def run(*argv):
    return change_cli.run([*map(str, argv)])


@pytest.mark.parametrize(
    "dtype,runner", [("float32", FNAPI), ("int8", FNAPI), ("float32", MULTIPROCESS)]
)
def test_change_equals_numpy(stores, tmp_path, dtype, runner, capsys):
    s = stores[dtype]
    output = tmp_path / "change.zarr"
    assert (
        run(
            "--embeddings",
            s.path,
            "--years",
            "2021,2023",
            "--output",
            output,
            "--threshold",
            0.5,
            *runner,
        )
        == 0
    )
    assert "complete" in capsys.readouterr().out
    got = xr.open_zarr(output, mask_and_scale=False)
    sim, changed = expected_change(s, 0, 2, 0.5)
    assert got["similarity"].dims == ("y", "x") and got["similarity"].dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got["similarity"].values), np.isnan(sim))
    np.testing.assert_allclose(got["similarity"].values, sim, rtol=0, atol=ATOL)
    assert np.all(changed[changed != 255] == 1)  # two classes on: every pixel changed
    # the mask from the float32 map, so that pixels within ATOL of the threshold cannot flip
    ref_mask = np.where(np.isnan(sim), 255, got["similarity"].values < 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got["changed"].values, ref_mask)
    np.testing.assert_array_equal(got["changed"].values, changed)
    assert got["changed"].dtype == np.uint8 and got["changed"].attrs["fill_value"] == 255
    assert got.attrs["efm_product"] == "change" and got.attrs[store.STATUS_ATTR] == "complete"
    assert got.attrs["from_year"] == 2021 and got.attrs["to_year"] == 2023
    emb = store.open_embeddings(s.path)
    assert got.rio.crs == emb.rio.crs and got.rio.transform() == emb.rio.transform()
    np.testing.assert_array_equal(got["y"].values, emb["y"].values)


def test_change_without_threshold_and_resume_overwrite(stores, tmp_path):
    s = stores["float32"]
    output = tmp_path / "change.zarr"
    assert (
        run(
            "--embeddings",
            s.path,
            "--years",
            "2021,2023",
            "--output",
            output,
            *FNAPI,
        )
        == 0
    )
    got = xr.open_zarr(output)
    assert "changed" not in got
    np.testing.assert_allclose(
        got["similarity"].values, expected_change(s, 0, 2)[0], rtol=0, atol=ATOL
    )
    assert (
        run(
            "--embeddings",
            s.path,
            "--years",
            "2021,2023",
            "--output",
            output,
            *FNAPI,
        )
        == 2
    )  # exists
    assert (
        run(
            "--embeddings",
            s.path,
            "--years",
            "2021,2023",
            "--output",
            output,
            "--resume",
            *FNAPI,
        )
        == 0
    )
    assert (
        run(
            "--embeddings",
            s.path,
            "--years",
            "2021,2022",
            "--output",
            output,
            "--resume",
            *FNAPI,
        )
        == 2
    )  # other years
    assert (
        run(
            "--embeddings",
            s.path,
            "--years",
            "2021,2022",
            "--output",
            output,
            "--overwrite",
            *FNAPI,
        )
        == 0
    )
    np.testing.assert_allclose(
        xr.open_zarr(output)["similarity"].values, expected_change(s, 0, 1)[0], rtol=0, atol=ATOL
    )


def test_same_class_four_years_on_is_unchanged(stores, tmp_path):
    s = stores["float32"]
    output = tmp_path / "change.zarr"
    assert (
        run(
            "--embeddings",
            s.path,
            "--years",
            "2021,2025",
            "--output",
            output,
            "--threshold",
            0.9,
            *FNAPI,
        )
        == 0
    )
    got = xr.open_zarr(output, mask_and_scale=False)
    sim, changed = expected_change(s, 0, 4, 0.9)
    np.testing.assert_allclose(got["similarity"].values, sim, rtol=0, atol=ATOL)
    assert np.all(changed[changed != 255] == 0) and np.any(changed == 255)
    np.testing.assert_array_equal(got["changed"].values, changed)


def test_change_on_gcs(stores, gcs, gcs_bucket):
    s = stores["int8"]
    gcs.fs.put(s.path, f"{gcs_bucket[5:]}/emb.zarr", recursive=True)
    output = f"{gcs_bucket}/change.zarr"
    assert (
        run(
            "--embeddings",
            f"{gcs_bucket}/emb.zarr",
            "--years",
            "2022,2023",
            "--output",
            output,
            *FNAPI,
        )
        == 0
    )
    got = xr.open_zarr(output, mask_and_scale=False)
    np.testing.assert_allclose(
        got["similarity"].values, expected_change(s, 1, 2)[0], rtol=0, atol=ATOL
    )
    assert got.attrs[store.STATUS_ATTR] == "complete"


@pytest.mark.parametrize(
    "flags,flag",
    [
        (["--years", "2021,2021"], "--years: both years are 2021; give two different years"),
        (["--years", "2022,2021"], "--years: 2022 is after 2021; give the earlier year first"),
        (["--years", "2021"], "--years: expected two years FROM,TO, the earlier first"),
        (["--years", "2021,2022,2023"], "--years: expected two years FROM,TO"),
        (["--years", "2021-2023"], "--years: expected two years FROM,TO"),
        (["--years", "21,2022"], "--years: '21' is not a year"),
        (["--years", "2019,2021"], "--years: "),
        (["--years", "2021,2030"], "--years: "),
        (["--years", "2021,2022", "--threshold", 1.5], "--threshold"),
        (["--years", "2021,2022", "--threshold", "nan"], "--threshold"),
        # the two flags of before: refused with the way to say it now, never run on other years
        (
            ["--from-year", "2021", "--to-year", "2022"],
            "--from-year: replaced by --years FROM,TO (here: --years 2021,2022)",
        ),
        (["--to-year=2022"], "--to-year: replaced by --years FROM,TO"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(stores, tmp_path, capsys, flags, flag):
    output = tmp_path / "change.zarr"
    assert run("--embeddings", stores["float32"].path, *flags, "--output", output, *FNAPI) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"efm change: error: {flag}") and "\n" not in err
    assert not output.exists()


@pytest.mark.parametrize("years, missing", [("2019,2021", 2019), ("2021,2030", 2030)])
def test_a_year_the_store_lacks_is_named(stores, tmp_path, capsys, years, missing):
    s = stores["float32"]
    code = run("--embeddings", s.path, "--years", years, "--output", tmp_path / "c.zarr", *FNAPI)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        f"efm change: error: --years: {s.path} has no year {missing}; "
        "it holds 2021, 2022, 2023, 2024, 2025"
    )
