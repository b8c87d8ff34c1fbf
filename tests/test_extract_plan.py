"""`efm extract --dry-run`, `--yes` and progress lines, through the CLI against the Earth Engine emulator.

* a dry run checks the inputs like a real run, prints the plan and writes nothing (no local path,
  nothing in a GCS emulator bucket, no computePixels request);
* the plan's requests and bytes are what the real run then sends (counted by the emulator);
* a country (6 x 8 degrees in one UTM zone, 8 years) plans through the CLI, and a job that big is
  refused without --yes (plan printed, one line, exit 2, nothing written);
* a local run prints progress lines whose last count is the planned count.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from emulators.earthengine import EarthEngineEmulator
from emulators.earthengine.synthetic import BAND_NAMES, COLLECTION_ID, make_embedding_collection
from pipelines import extract
from tests.helpers.ee_extract import bbox_inside, expected_array
from tests.helpers.run_summary import summary_values
from transforms.storage import store

YEARS = (2021, 2022)
COUNTRY = "0.0,43.0,6.0,51.0"  # 6 x 8 degrees inside UTM 31N


def covering_images(years):
    """Tiny images (10 x 10 px of 100 km) whose footprints cover the country, for every year."""
    return [
        {
            "collection": COLLECTION_ID,
            "image_id": f"{COLLECTION_ID}/cover_{y}",
            "data": np.zeros((64, 10, 10), np.float32),
            "band_names": list(BAND_NAMES),
            "crs": "EPSG:32631",
            "transform": (100_000.0, 0.0, 0.0, 0.0, -100_000.0, 6_000_000.0),
            "start": f"{y}-01-01",
            "end": f"{y + 1}-01-01",
            "properties": {"UTM_ZONE": "31N"},
            "data_type": "double",
        }
        for y in years
    ]


@pytest.fixture(scope="module")
def images():
    return make_embedding_collection(years=YEARS, seed=5)


@pytest.fixture
def emulator(images, ee_token):
    emu = EarthEngineEmulator(max_in_flight=40)
    emu.add_images(images)
    emu.add_images(
        covering_images(y for y in range(2017, 2025) if y not in YEARS)
    )  # the country's other years
    with emu:
        yield emu


def run(emu, capsys, *args):
    argv = [
        "--tuning",
        f"ee_api_url={emu.url}",
        "--tuning",
        "ee_project=test-project",
        "--tuning",
        "retry_initial_delay=0.01",
        "--runner=FnApiRunner",
        *args,
    ]
    code = extract.run(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flag", ["--dry-run", "--dry_run"])
def test_dry_run_plans_and_writes_nothing(
    emulator, images, tmp_path, gcs_bucket, gcs, capsys, flag
):
    bbox = bbox_inside(images, 2021)
    for output in (str(tmp_path / "emb.zarr"), f"{gcs_bucket}/emb.zarr"):
        code, out, err = run(
            emulator,
            capsys,
            "--bbox",
            bbox,
            "--years",
            "2021,2022",
            "--output",
            output,
            "--tuning",
            "chunk_size=256",
            flag,
        )
        assert code == 0, err
        assert out.startswith(f"efm extract: plan for {output} (dry run: nothing written)")
        plan = summary_values(out)
        assert (
            plan["grid"].endswith("in EPSG:32631, 2 year(s)")
            and int(plan["chunks planned"]) > 0
            and int(plan["requests"]) > 0
        )
        for name in (
            "chunks skipped (outside the AOI)",
            "bytes on the wire",
            "store size",
            "time at the quota bound",
            "time at emulator throughput",
        ):
            assert name in plan
        assert "--yes" not in out  # a small job: no size warning
    assert not (tmp_path / "emb.zarr").exists() and list(tmp_path.iterdir()) == []
    assert gcs.fs.ls(gcs_bucket.removeprefix("gs://")) == []
    assert emulator.count("computePixels") == 0


def test_dry_run_checks_inputs_like_a_real_run(emulator, images, tmp_path, capsys):
    existing = tmp_path / "emb.zarr"
    existing.mkdir()
    (existing / "notes.txt").write_text("not efm's")  # a folder efm did not write
    code, out, err = run(
        emulator,
        capsys,
        "--bbox",
        bbox_inside(images, 2021),
        "--years",
        "2021",
        "--output",
        str(existing),
        "--dry-run",
    )
    assert (
        code == 2 and err.startswith("efm extract: error: --output: ") and "\n" not in err.strip()
    )
    code, out, err = run(
        emulator,
        capsys,
        "--bbox",
        bbox_inside(images, 2021),
        "--years",
        "2021",
        "--output",
        str(tmp_path / "x.zarr"),
        "--tuning",
        "collection=NO/SUCH",
        "--dry-run",
    )
    assert (
        code == 2
        and err.startswith("efm extract: error: --tuning: collection: ")
        and not (tmp_path / "x.zarr").exists()
    )


@pytest.mark.parametrize("transfer", ["int8", "float32"])
def test_plan_equals_what_the_run_sends(emulator, images, tmp_path, capsys, transfer):
    output = str(tmp_path / "emb.zarr")
    args = [
        "--bbox",
        bbox_inside(images, 2021),
        "--years",
        "2021,2022",
        "--output",
        output,
        "--tuning",
        "chunk_size=256",
        "--tuning",
        f"transfer_dtype={transfer}",
    ]
    code, out, err = run(emulator, capsys, *args, "--dry-run")
    plan = summary_values(out)
    code, out, err = run(emulator, capsys, *args)
    assert code == 0, err
    summary = summary_values(out)
    assert int(plan["requests"]) == int(summary["requests"]) == emulator.count("computePixels")
    assert plan["chunks planned"] == summary["chunks planned"] == summary["chunks written"]
    ds = store.open_embeddings(output)
    np.testing.assert_array_equal(ds["embedding"].values, expected_array(images, ds))
    wire = float(summary["transferred"].split()[0])  # MB
    assert plan["bytes on the wire"].startswith(f"{wire:.1f} MB")


def test_country_plans_through_the_cli_and_needs_yes(emulator, tmp_path, capsys):
    # Without efm's own flag, Beam takes --dry-run as its test option and the country really runs
    # (tens of GB of memory against the in-process emulator): fail first, cheaply.
    assert "--dry-run" in extract.build_parser()._option_string_actions
    output = tmp_path / "country.zarr"
    common = ["--bbox", COUNTRY, "--years", "2017-2024", "--output", str(output)]
    code, out, err = run(emulator, capsys, *common, "--dry-run")
    assert code == 0, err
    plan = summary_values(out)
    chunks = int(plan["chunks planned"].replace(",", ""))
    assert 20_000 <= chunks <= 60_000 and plan["grid"].endswith("in EPSG:32631, 8 year(s)")
    assert (
        chunks < int(plan["requests"].replace(",", "")) < 2 * chunks
        and plan["store size"].split()[1] == "TB"
    )
    assert out.strip().splitlines()[-1].startswith(
        "efm extract: a large job ("
    ) and out.strip().endswith("the real run needs --yes")
    # The same job without --dry-run and without --yes: the plan, then one line, exit 2, nothing written.
    code, out, err = run(emulator, capsys, *common)
    assert (
        code == 2
        and out.startswith(f"efm extract: plan for {output}\n")
        and summary_values(out)["chunks planned"] == plan["chunks planned"]
    )
    assert (
        err.startswith("efm extract: error: --yes: a large job (") and "run again with --yes" in err
    )
    assert "\n" not in err.strip() and not output.exists() and emulator.count("computePixels") == 0


def test_yes_runs_a_job_past_the_threshold(emulator, images, tmp_path, capsys, monkeypatch):
    from transforms.sources import extract_plan as planlib

    monkeypatch.setattr(planlib, "MAX_PIXEL_YEARS", 1000)  # make a small area "too big"
    output = str(tmp_path / "emb.zarr")
    args = [
        "--bbox",
        bbox_inside(images, 2021),
        "--years",
        "2021,2022",
        "--output",
        output,
        "--tuning",
        "chunk_size=256",
    ]
    code, out, err = run(emulator, capsys, *args)
    assert code == 2 and "--yes" in err and not (tmp_path / "emb.zarr").exists()
    code, out, err = run(emulator, capsys, *args, "--yes")
    assert code == 0, err
    ds = store.open_embeddings(output)
    np.testing.assert_array_equal(ds["embedding"].values, expected_array(images, ds))


LINE = re.compile(
    r"efm extract: progress: (\d+)/(\d+) chunks written \(\d+%\), [\d.]+ MB/s, ETA .+"
)


def test_progress_lines_on_a_local_run(emulator, images, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EFM_PROGRESS_INTERVAL", "0.2")
    emulator.configure(latency_s=0.15)
    output = str(tmp_path / "emb.zarr")
    code, out, err = run(
        emulator,
        capsys,
        "--bbox",
        bbox_inside(images, 2021),
        "--years",
        "2021,2022",
        "--output",
        output,
        "--tuning",
        "chunk_size=128",
        "--tuning",
        "max_concurrent_requests=2",
    )
    assert code == 0, err
    lines = [line for line in err.splitlines() if "progress:" in line]
    assert len(lines) >= 2 and all(LINE.fullmatch(line) for line in lines), err
    counts = [tuple(map(int, LINE.fullmatch(line).groups())) for line in lines]
    planned = int(summary_values(out)["chunks planned"])
    assert all(p == planned for _, p in counts) and [d for d, _ in counts] == sorted(
        d for d, _ in counts
    )
    assert counts[-1][0] == planned == len(store.done_markers(output)) and lines[-1].endswith(
        "ETA 0 s"
    )


def test_cog_dry_run_checks_the_index_and_plans_reads(tmp_path_factory, tmp_path, capsys):
    """--source cog: the mirror's index and coverage are checked; reads are planned like requests; no quota."""
    from sample_data import generate as sample_data

    data = sample_data.generate(
        str(tmp_path_factory.mktemp("sample")), sample_data.SampleSpec(**sample_data.SMALL)
    )
    output = tmp_path / "cog.zarr"
    args = [
        "--source",
        "cog",
        "--cog-root",
        data.mirror,
        "--bbox=" + ",".join(repr(v) for v in data.bbox),
        "--crs",
        "EPSG:32610",
        "--output",
        str(output),
        "--tuning",
        "chunk_size=128",
        "--runner=FnApiRunner",
    ]
    assert extract.run([*args, "--years", "2022,2023", "--dry-run"]) == 0
    plan = summary_values(capsys.readouterr().out)
    assert (
        plan["time at the quota bound"].startswith("no quota")
        and int(plan["requests"]) == int(plan["chunks planned"]) > 0
    )
    assert not output.exists()
    assert (
        extract.run([*args, "--years", "2021", "--dry-run"]) == 2
    )  # a year the mirror does not have: refused by the index check
    err = capsys.readouterr().err
    assert "2021" in err and err.count("\n") == 1 and not output.exists()


def test_the_plan_times_the_requests_memory_lets_fly(emulator, images, tmp_path, capsys):
    """With the default memory budget a float32 run holds 2 chunks of 1024 px (2 int8 requests each):
    the plan's quota time uses the 4 requests that can be in flight, not the cap's 40, and says why."""
    common = [
        "--bbox",
        bbox_inside(images, 2021),
        "--years",
        "2021",
        "--output",
        str(tmp_path / "e.zarr"),
        "--dry-run",
    ]
    code, out, err = run(emulator, capsys, *common)
    assert code == 0, err
    plan = summary_values(out)
    assert plan["requests in flight"].startswith(
        "4 of the cap's 40: worker_memory_gb=2 holds 2 open chunk(s)"
    )
    assert "0.8 requests/s: 4 in flight, 5 s per request assumed" in plan["time at the quota bound"]
    code, out, err = run(emulator, capsys, *common, "--tuning", "worker_memory_gb=64")
    plan = summary_values(out)
    assert (
        code == 0
        and "requests in flight" not in plan
        and "8 requests/s: 40 in flight" in plan["time at the quota bound"]
    )
