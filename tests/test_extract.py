"""`efm extract` end to end: the real ee client -> the Earth Engine emulator -> Beam -> Zarr.

Expected values are computed independently by direct indexing into the source arrays the
emulator serves (the grid is aligned with them, so no resampling is involved).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from emulators.earthengine import EarthEngineEmulator
from emulators.earthengine.synthetic import make_embedding_collection
from pipelines import extract
from tests.helpers.ee_extract import YEARS, bbox_inside, expected_array
from tests.helpers.run_summary import summary_values
from tests.helpers.runners import FNAPI, MULTIPROCESS
from transforms.sources import request_plan
from transforms.sources.earthengine import DEFAULT_COLLECTION
from transforms.storage import store


@pytest.fixture(scope="module")
def images():
    return make_embedding_collection(years=YEARS, seed=3)


@pytest.fixture
def emulator(images, ee_token):
    emu = EarthEngineEmulator(max_in_flight=40)
    for image in images:
        emu.add_image(**image)
    with emu:
        yield emu


def run_extract(emu, output, *args, runner=FNAPI):
    argv = [
        "--years",
        ",".join(map(str, YEARS)),
        "--output",
        output,
        "--tuning",
        f"ee_api_url={emu.url}",
        "--tuning",
        "ee_project=test-project",
        "--tuning",
        "retry_initial_delay=0.01",
        *args,
        *runner,
    ]
    assert extract.main(argv) == 0


def expected_requests(ds, chunk_size, itemsize):
    rows, cols = ds.sizes["y"], ds.sizes["x"]
    total = 0
    for r in range(0, rows, chunk_size):
        for c in range(0, cols, chunk_size):
            h, w = min(chunk_size, rows - r), min(chunk_size, cols - c)
            fit = request_plan.MAX_REQUEST_BYTES // request_plan.request_bytes(1, w, 64, itemsize)
            total += math.ceil(h / fit)
    return total * len(YEARS)


@pytest.mark.parametrize("transfer, chunk_size", [("int8", 256), ("float32", 512)])
def test_extract_equals_source_with_planned_requests(
    emulator, images, tmp_path, capsys, transfer, chunk_size
):
    output = str(tmp_path / "emb.zarr")
    run_extract(
        emulator,
        output,
        "--bbox",
        bbox_inside(images, 2021),
        "--tuning",
        f"chunk_size={chunk_size}",
        "--tuning",
        f"transfer_dtype={transfer}",
    )
    summary = summary_values(capsys.readouterr().out)
    ds = store.open_embeddings(output)
    np.testing.assert_array_equal(ds["embedding"].values, expected_array(images, ds))
    assert np.isnan(ds["embedding"].values).any() and not np.isnan(ds["embedding"].values).all()
    assert list(ds["band"].values) == [f"A{i:02d}" for i in range(64)]
    assert list(ds["time"].values) == [np.datetime64(f"{y}-01-01") for y in YEARS]
    assert ds.rio.crs.to_epsg() == 32631
    transform = ds.rio.transform()
    assert (
        (transform.a, transform.e) == (10.0, -10.0)
        and transform.c % 10 == 0
        and transform.f % 10 == 0
    )
    np.testing.assert_allclose(ds["x"].values, transform.c + 5 + 10 * np.arange(ds.sizes["x"]))
    opened = xr.open_zarr(output)  # a plain xarray user sees the same
    assert opened.rio.crs.to_epsg() == 32631 and opened.attrs["license"] == "CC-BY-4.0"
    assert opened.attrs["source"] == f"earthengine:{DEFAULT_COLLECTION}" and opened.attrs[
        "years"
    ] == list(YEARS)
    itemsize = 1 if transfer == "int8" else 4
    assert (
        emulator.count("computePixels")
        == expected_requests(ds, chunk_size, itemsize)
        == int(summary["requests"])
    )
    # what was transferred: the response bodies, as the emulator counted the bytes it sent
    bodies = sum(r.bytes_out for r in emulator.requests if r.kind == "computePixels")
    assert bodies >= ds.sizes["y"] * ds.sizes["x"] * 64 * itemsize * len(YEARS)
    assert summary["transferred"].startswith(
        f"{bodies / 1e6:.1f} MB (computePixels response bodies"
    )
    assert (
        int(summary["chunks written"]) == len(store.done_markers(output))
        and summary["retries"] == "0"
    )
    for record in (r for r in emulator.requests if r.kind == "computePixels"):
        assert len(record.body["bandIds"]) == 64  # all bands in one request


def test_ee_project_is_the_project_every_request_names(emulator, images, tmp_path, capsys):
    """`--tuning ee_project=P` (was --ee-project): the Earth Engine client's requests go to
    /v1/projects/P/... (the public catalogue's assets aside); without it, with credentials that
    name no project, the refusal names the key."""
    emulator.reset_stats()
    argv = ["--years", "2021", "--output", str(tmp_path / "e.zarr")]
    argv += ["--bbox", bbox_inside(images, 2021), "--dry-run", *FNAPI]
    url = f"ee_api_url={emulator.url}"
    assert extract.main([*argv, "--tuning", f"{url},ee_project=other-project-7"]) == 0
    named = {
        r.path.split("/")[3]
        for r in emulator.requests
        if r.path.startswith("/v1/projects/") and "/assets/" not in r.path
    }
    assert named == {"other-project-7"}, named
    assert extract.run([*argv, "--tuning", url]) == 2  # a token names no project
    assert capsys.readouterr().err.startswith(
        "efm extract: error: --tuning: ee_project: Earth Engine needs a Cloud project: pass "
        "--tuning ee_project=PROJECT ("
    )
    assert not (tmp_path / "e.zarr").exists()


def test_extract_to_gcs(emulator, images, gcs_bucket):
    output = f"{gcs_bucket}/emb.zarr"
    run_extract(emulator, output, "--bbox", bbox_inside(images, 2021), "--tuning", "chunk_size=256")
    ds = store.open_embeddings(output)
    np.testing.assert_array_equal(ds["embedding"].values, expected_array(images, ds))
    assert ds.rio.crs.to_epsg() == 32631


def test_faults_change_nothing_and_the_cap_holds(emulator, images, tmp_path, capsys):
    bbox = bbox_inside(images, 2021)
    clean = str(tmp_path / "clean.zarr")
    run_extract(emulator, clean, "--bbox", bbox, "--tuning", "chunk_size=128")
    emulator.reset_stats()
    emulator.configure(
        error_rates={"429": 0.12, "500": 0.04, "503": 0.04},
        truncate_rate=0.05,
        latency_s=0.01,
        max_in_flight=40,
    )
    faulty = str(tmp_path / "faulty.zarr")
    run_extract(
        emulator,
        faulty,
        "--bbox",
        bbox,
        "--tuning",
        "chunk_size=128",
        "--tuning",
        "max_concurrent_requests=3",
        "--tuning",
        "max_retries=20",
    )
    statuses = [r.status for r in emulator.requests if r.kind == "computePixels"]
    summary = summary_values(capsys.readouterr().out.split("efm extract: " + faulty)[-1])
    # every failure (429, 5xx, and truncated 200s) was retried: one success per planned request
    assert (
        int(summary["requests"]) == len(statuses)
        and int(summary["retries"]) == len(statuses) - len(store.done_markers(clean)) > 0
    )
    assert statuses.count(429) > 0 and statuses.count(500) + statuses.count(503) > 0
    assert emulator.max_in_flight_seen <= 3
    a, b = store.open_embeddings(clean), store.open_embeddings(faulty)
    np.testing.assert_array_equal(a["embedding"].values, b["embedding"].values)
    assert store.done_markers(faulty) == store.done_markers(clean)


def test_multiprocess_direct_runner(emulator, images, tmp_path):
    output = str(tmp_path / "emb.zarr")
    run_extract(
        emulator,
        output,
        "--bbox",
        bbox_inside(images, 2021),
        "--tuning",
        "chunk_size=128",
        "--tuning",
        "max_concurrent_requests=4",
        runner=MULTIPROCESS,
    )
    ds = store.open_embeddings(output)
    np.testing.assert_array_equal(ds["embedding"].values, expected_array(images, ds))
    assert emulator.max_in_flight_seen <= 4


def test_killed_run_resumes_writing_only_missing_chunks(emulator, images, tmp_path):
    bbox = bbox_inside(images, 2021)
    reference = str(tmp_path / "reference.zarr")
    run_extract(emulator, reference, "--bbox", bbox, "--tuning", "chunk_size=128")
    total_chunks = len(store.done_markers(reference))
    emulator.configure(latency_s=0.1)
    output = str(tmp_path / "emb.zarr")
    argv = [
        sys.executable,
        "-m",
        "pipelines.extract",
        "--bbox",
        bbox,
        "--years",
        "2021,2022",
        "--output",
        output,
        "--tuning",
        "chunk_size=128",
        "--tuning",
        f"ee_api_url={emulator.url}",
        "--tuning",
        "ee_project=test-project",
        "--tuning",
        "max_concurrent_requests=1",
        *FNAPI,
    ]
    proc = subprocess.Popen(
        argv,
        cwd=os.path.dirname(os.path.dirname(__file__)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while (
            len(store.done_markers(output)) < 3
            and time.monotonic() < deadline
            and proc.poll() is None
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = store.done_markers(output)
    assert 3 <= len(done) < total_chunks
    assert xr.open_zarr(output).attrs[store.STATUS_ATTR] == "incomplete"
    emulator.configure(latency_s=0.0)
    emulator.reset_stats()
    with pytest.raises(Exception, match="already exists"):
        run_extract(emulator, output, "--bbox", bbox, "--tuning", "chunk_size=128")
    run_extract(emulator, output, "--bbox", bbox, "--tuning", "chunk_size=128", "--resume")
    assert emulator.count("computePixels") == total_chunks - len(
        done
    )  # one request per 128 px int8 chunk
    a, b = store.open_embeddings(reference), store.open_embeddings(output)
    np.testing.assert_array_equal(a["embedding"].values, b["embedding"].values)
