"""Every failure is one line and leaves a state you can act on.

Bad input: one line naming the flag, exit 2, nothing written. Runtime failures (quota exhausted
after all retries, a file system error, Ctrl-C): one line, exit 1 (130 for Ctrl-C), no traceback
on stderr (it goes to a log file the line names, or to stderr with --verbose), and when an
unfinished store is left, the line ends with the `--resume` command that finishes it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import weakref

import numpy as np
import pytest
import xarray as xr

from emulators.earthengine import EarthEngineEmulator
from emulators.earthengine.synthetic import make_embedding_collection
from pipelines import common, extract
from pipelines import export as export_cli
from tests.helpers.class_store import make_class_store
from tests.helpers.ee_extract import bbox_inside
from tests.helpers.runners import FNAPI, MULTIPROCESS
from tests.helpers.store_factory import make_store
from transforms.storage import store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def images():
    return make_embedding_collection(years=(2021,), seed=4)


@pytest.fixture
def emu(images, ee_token):
    emulator = EarthEngineEmulator()
    for image in images:
        emulator.add_image(**image)
    with emulator:
        yield emulator


def extract_argv(emu, images, output, *extra):
    return [
        "--bbox",
        bbox_inside(images, 2021),
        "--years",
        "2021",
        "--output",
        output,
        "--tuning",
        "chunk_size=128",
        "--tuning",
        f"ee_api_url={emu.url}",
        "--tuning",
        "ee_project=p",
        *extra,
    ]


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- bad input: exit 2, nothing written


@pytest.mark.parametrize(
    "extra, flag, words",
    [
        (["--runner=DataflowRuner"], "--runner", "did you mean DataflowRunner? known runners: "),
        (
            ["--runner", "Flinck"],
            "--runner",
            "known runners: BundleBasedDirectRunner, DataflowRunner, DirectRunner",
        ),
        (["--runner=no.such.module.Runner"], "--runner", "cannot load the runner class"),
        (["--tuning", "max_retries=-1"], "--tuning", "max_retries: must be 0 or more"),
        (
            ["--tuning", "retry_initial_delay=0"],
            "--tuning",
            "retry_initial_delay: must be a positive number of seconds",
        ),
        (
            ["--tuning", "retry_initial_delay=-2"],
            "--tuning",
            "retry_initial_delay: must be a positive number of seconds",
        ),
        (
            ["--tuning", "retry_initial_delay=nan"],
            "--tuning",
            "retry_initial_delay: must be a positive number of seconds",
        ),
    ],
)
def test_bad_settings_are_one_line(emu, images, tmp_path, capsys, extra, flag, words):
    out = tmp_path / "out.zarr"
    runner = [] if any(e.startswith("--runner") for e in extra) else FNAPI
    assert extract.run(extract_argv(emu, images, str(out), *runner, *extra)) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"efm extract: error: {flag}: ") and words in line, line
    assert not out.exists() and emu.count("computePixels") == 0


def test_stray_words_are_refused(emu, images, tmp_path, capsys):
    out = tmp_path / "out.zarr"
    argv = extract_argv(emu, images, str(out), *FNAPI)
    years = argv.index("--years")
    argv[years + 1 : years + 2] = [
        "2021",
        "2022",
    ]  # --years 2021 2022: Beam would drop 2022 with a warning
    assert extract.run(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("efm extract: error: --years: ") and "--years 2021,2022" in line
    argv = extract_argv(emu, images, str(out), *FNAPI) + ["leftover"]
    assert extract.run(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "unexpected word 'leftover'" in line
    assert not out.exists() and emu.count("computePixels") == 0


def test_an_area_without_earth_engine_data_is_refused_before_the_store(
    emu, images, tmp_path, capsys
):
    out = tmp_path / "out.zarr"
    argv = extract_argv(emu, images, str(out), *FNAPI)
    argv[argv.index("--bbox") + 1] = (
        "3.0,45.0,3.01,45.01"  # near the emulator's images, outside all of them
    )
    assert extract.run(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(
        "efm extract: error: --bbox/--aoi: GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL has no image over the area lon 3.0000..3.0100"
    )
    assert "in 2021" in line and not out.exists() and emu.count("computePixels") == 0


def test_emulator_filter_bounds_counts_the_images_an_area_meets(emu, images):
    import ee
    import shapely

    from transforms.sources import earthengine

    earthengine.initialize(earthengine.EarthEngineSettings(project="p", api_url=emu.url))
    collection = ee.ImageCollection(earthengine.DEFAULT_COLLECTION)
    inside = [float(v) for v in bbox_inside(images, 2021).split(",")]
    expected = sum(shapely.Polygon(_footprint(i)).intersects(shapely.box(*inside)) for i in images)
    assert expected > 0
    assert (
        collection.filterBounds(ee.Geometry.Rectangle(inside, None, False)).size().getInfo()
        == expected
    )
    outside = shapely.box(3.0, 45.0, 3.01, 45.01)
    assert (
        collection.filterBounds(ee.Geometry(shapely.geometry.mapping(outside), None, False))
        .size()
        .getInfo()
        == 0
    )
    both = shapely.MultiPolygon(
        [outside, shapely.box(*inside)]
    )  # an --aoi of two parts, one of them on the images
    assert (
        collection.filterBounds(ee.Geometry(shapely.geometry.mapping(both), None, False))
        .size()
        .getInfo()
        == expected
    )


def _footprint(image):
    import pyproj

    a, _, c, _, e, f = image["transform"]
    _, h, w = image["data"].shape
    xs, ys = [c, c + a * w, c + a * w, c], [f, f, f + e * h, f + e * h]
    lon, lat = pyproj.Transformer.from_crs(image["crs"], "EPSG:4326", always_xy=True).transform(
        xs, ys
    )
    return list(zip(lon, lat))


def test_beam_flags_with_separate_values_still_work():
    parser = extract.build_parser()
    base = ["--bbox", "3,45,3.01,45.01", "--years", "2021", "--output", "o.zarr"]
    _, options = common.split_args(
        parser,
        [
            *base,
            "--runner",
            "DirectRunner",
            "--direct_num_workers",
            "2",
            "--direct_running_mode",
            "multi_processing",
        ],
    )
    assert common.runner_name(options) == "DirectRunner" and common.local_workers(options) == 2
    _, options = common.split_args(
        parser, [*base, "--runner", "fnapi", "--experiments", "a", "--experiments=b"]
    )
    assert common.runner_name(options) == "fnapi"  # Beam's own aliases are accepted
    _, options = common.split_args(
        parser, [*base, "--runner", "apache_beam.runners.portability.fn_api_runner.FnApiRunner"]
    )


def test_export_into_a_read_only_folder_is_refused_before_work(tmp_path, capsys):
    s = make_store(
        str(tmp_path / "emb.zarr"),
        height=70,
        width=60,
        chunk_size=32,
        years=(2021, 2022),
        n_classes=3,
    )
    classes = str(tmp_path / "classes.zarr")
    make_class_store(classes, s.path)
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        assert export_cli.run(["--input", classes, "--output", str(locked / "map.tif")]) == 2
        line = one_line(capsys.readouterr().err)
        assert (
            line.startswith("efm export: error: --output: cannot write in ") and str(locked) in line
        )
        assert os.listdir(locked) == []
    assert (
        export_cli.run(["--input", classes, "--output", str(tmp_path / "missing" / "map.tif")]) == 2
    )
    assert "does not exist" in one_line(capsys.readouterr().err)


class read_only:
    """A folder nobody can create files in, root included (chattr +i), or the test is skipped."""

    def __init__(self, path):
        self.path = str(path)

    def __enter__(self):
        if os.geteuid() != 0:
            os.chmod(self.path, 0o555)
        elif subprocess.run(["chattr", "+i", self.path], capture_output=True).returncode != 0:
            pytest.skip(
                "running as root on a file system without chattr +i: cannot make a read-only folder"
            )
        return self

    def __exit__(self, *exc):
        if os.geteuid() != 0:
            os.chmod(self.path, 0o755)
        else:
            subprocess.run(["chattr", "-i", self.path], capture_output=True)


# ---------------------------------------------------------------- runtime failures: exit 1, one line, the way on


def test_write_time_os_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EFM_LOG_DIR", str(tmp_path / "logs"))
    locked = tmp_path / "locked"
    locked.mkdir()

    def main(argv):
        with open(locked / "map.tif", "wb") as f:  # as a writer would, after the checks
            f.write(b"x")
        return 0

    with read_only(locked):
        assert common.run("efm export", main, ["--output", str(locked / "map.tif")]) == 1
    line = one_line(capsys.readouterr().err)
    assert (
        line.startswith(f"efm export: error: permission denied: {locked / 'map.tif'} (")
        or "Operation not permitted" in line
    ), line
    assert "Traceback" not in line and "full trace in " + str(tmp_path / "logs") in line
    assert "re-run: efm export --output" in line
    log = line.split("full trace in ")[1].split(")")[0]
    assert "Traceback (most recent call last)" in open(log).read()


def test_an_unexpected_error_is_one_line_and_verbose_shows_the_trace(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EFM_LOG_DIR", str(tmp_path))

    def main(argv):
        raise TypeError("something we did not foresee\nsecond line")

    assert common.run("efm train", main, ["--output", "m.skops"]) == 1
    line = one_line(capsys.readouterr().err)
    assert (
        "unexpected TypeError: something we did not foresee" in line and "second line" not in line
    )
    assert common.run("efm train", main, ["--output", "m.skops", "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith(
        "efm train: error: unexpected TypeError"
    )


# ---------------------------------------------------------------- Ctrl-C pressed again (in this process)


def ctrl_c(wait: float) -> None:
    """A real SIGINT to this process, then `wait` seconds in which its handler runs (a
    KeyboardInterrupt it raises comes out of here)."""
    os.kill(os.getpid(), signal.SIGINT)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(0.005)


def run_here(main) -> int:
    """common.run in this process; a KeyboardInterrupt escaping it fails the test (not pytest)."""
    try:
        return common.run("efm extract", main, ["--output", "emb.zarr"])
    except KeyboardInterrupt:
        pytest.fail("a KeyboardInterrupt escaped common.run")


def test_a_second_ctrl_c_during_the_clean_up_changes_nothing(tmp_path, capsys, monkeypatch):
    """The clean-up the first Ctrl-C starts (here a `finally`; in efm, a store left marked
    incomplete, a failed set-up undone) runs to its end through a second Ctrl-C; one line, 130."""
    monkeypatch.setenv("EFM_LOG_DIR", str(tmp_path))
    steps = []

    def main(argv):
        try:
            ctrl_c(wait=5)  # the first: a KeyboardInterrupt here
            steps.append("not interrupted")
        finally:
            ctrl_c(wait=0.2)  # the second, while the clean-up runs
            steps.append("cleaned up")

    assert run_here(main) == 130
    assert steps == ["cleaned up"]
    line = one_line(capsys.readouterr().err)
    assert line.startswith("efm extract: error: interrupted (Ctrl-C) (full trace in "), line
    # called from Python: the handler SIGINT had before is back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_while_a_failure_is_reported_changes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EFM_LOG_DIR", str(tmp_path))

    class Unlucky(Exception):
        def __str__(self):  # read by the report: a Ctrl-C arrives while it is written
            ctrl_c(wait=0.05)
            return "the disk went away"

    def main(argv):
        raise Unlucky()

    assert run_here(main) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith("efm extract: error: unexpected Unlucky: the disk went away"), line
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_python_drops_is_delivered_again(tmp_path, capsys, monkeypatch):
    """Python drops an exception raised in a weakref callback or a `__del__` (importlib runs one at
    every import) with an "Exception ignored" note: a Ctrl-C landing there still stops the run,
    in one line."""
    monkeypatch.setenv("EFM_LOG_DIR", str(tmp_path))

    def main(argv):
        class Thing:
            pass

        thing = Thing()
        ref = weakref.ref(thing, lambda _: ctrl_c(wait=0.2))  # noqa: F841 (kept alive)
        del thing  # the callback runs, and the Ctrl-C lands in it
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return 0

    assert run_here(main) == 130
    err = capsys.readouterr().err
    assert "Exception ignored" not in err, err
    assert one_line(err).startswith("efm extract: error: interrupted (Ctrl-C)"), err


def run_cli(args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        **kwargs,
    )


@pytest.mark.parametrize("runner", [FNAPI, MULTIPROCESS], ids=["fnapi", "multiprocess"])
def test_quota_exhausted_leaves_a_store_that_the_printed_command_finishes(
    emu, images, tmp_path, runner
):
    output = str(tmp_path / "emb.zarr")
    reference = str(tmp_path / "reference.zarr")
    assert (
        extract.main(
            extract_argv(emu, images, reference, "--tuning", "retry_initial_delay=0.01", *FNAPI)
        )
        == 0
    )
    emu.configure(error_rates={"429": 1.0})  # every computePixels answers 429
    argv = [
        "extract",
        *extract_argv(
            emu,
            images,
            output,
            "--tuning",
            "max_retries=1",
            "--tuning",
            "retry_initial_delay=0.01",
            "--overwrite",
            *runner,
        ),
    ]
    failed = run_cli(argv, env={"EFM_LOG_DIR": str(tmp_path / "logs")})
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("efm extract: error: quota exhausted: gave up on ") and "HTTP 429" in last
    )
    assert f"{output} is incomplete; finish it with: efm extract " in last and last.endswith(
        "--resume"
    )
    assert xr.open_zarr(output).attrs[store.STATUS_ATTR] == "incomplete"
    command = shlex.split(last.split("finish it with: ", 1)[1])
    assert "--overwrite" not in command and command[:2] == ["efm", "extract"]
    log = last.split("full trace in ")[1].split(")")[0]
    assert "TileFetchError" in open(log).read()

    emu.configure(error_rates={"429": 0.0})
    resumed = run_cli(command[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert xr.open_zarr(output).attrs[store.STATUS_ATTR] == "complete"
    np.testing.assert_array_equal(
        store.open_embeddings(output)["embedding"].values,
        store.open_embeddings(reference)["embedding"].values,
    )


@pytest.mark.parametrize("held", [False, True], ids=["once", "held-down"])
def test_ctrl_c_is_one_line_exit_130_with_the_resume_command(emu, images, tmp_path, held):
    """Held down (a SIGINT every 5 ms until it has exited), the later ones change nothing: the
    clean-up still leaves the store marked incomplete, and the line and exit status are the same."""
    output = str(tmp_path / "emb.zarr")
    emu.configure(latency_s=0.5)  # slow enough that the run is still going when Ctrl-C comes
    argv = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "extract",
        *extract_argv(emu, images, output, "--tuning", "max_concurrent_requests=1", *FNAPI),
    ]
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EFM_LOG_DIR": str(tmp_path)},
    )
    try:
        deadline = time.monotonic() + 120
        while (
            len(store.done_markers(output) if os.path.exists(output) else ()) < 1
            and time.monotonic() < deadline
            and proc.poll() is None
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        while held and proc.poll() is None:
            time.sleep(0.005)
            proc.send_signal(signal.SIGINT)  # after its exit: no signal (Popen checks)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("efm extract: error: interrupted (Ctrl-C)") and last.endswith(
        "--resume"
    ), last
    assert xr.open_zarr(output).attrs[store.STATUS_ATTR] == "incomplete"


def test_classify_failing_mid_run_prints_the_command_that_finishes_it(tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    from transforms.learning import models

    s = make_store(
        str(tmp_path / "emb.zarr"), height=70, width=60, chunk_size=32, years=(2021,), n_classes=3
    )
    t, r, c = np.nonzero(s.valid)
    model = KNeighborsClassifier(3).fit(
        s.values[t[:60], r[:60], c[:60]], s.labels[t[:60], r[:60], c[:60]]
    )
    models.save_model(
        model, str(tmp_path / "m.skops"), {"kind": "classifier", "classes": model.classes_}
    )
    chunk = tmp_path / "emb.zarr" / "embedding" / "c" / "0" / "0" / "1" / "1"  # a shard file
    good = chunk.read_bytes()
    chunk.write_bytes(b"\x00" * 40)  # a chunk damaged on disk: decoding fails inside a worker
    output = str(tmp_path / "classes.zarr")
    argv = [
        "classify",
        "--embeddings",
        s.path,
        "--model",
        str(tmp_path / "m.skops"),
        "--output",
        output,
        *FNAPI,
    ]
    failed = run_cli(argv, env={"EFM_LOG_DIR": str(tmp_path)})
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("efm classify: error: ") and last.endswith("--resume"), last
    assert xr.open_zarr(output).attrs[store.STATUS_ATTR] == "incomplete"
    chunk.write_bytes(good)
    resumed = run_cli(shlex.split(last.split("finish it with: ", 1)[1])[1:])
    assert resumed.returncode == 0, resumed.stderr
    classes = xr.open_zarr(output, mask_and_scale=False)["class"].values[0]
    valid = s.valid[0]
    np.testing.assert_array_equal(classes[valid], model.predict(s.values[0][valid]))


def _loud_step(x):
    import logging

    print(f"progress {x}", file=sys.stderr)  # what a run prints on stderr still reaches the user
    logging.getLogger("efm.test").warning("a warning from a worker")
    if x == 2:
        raise ValueError("bad element\nwith a second line")
    return x


def test_a_failing_pipeline_shows_its_output_but_no_traceback(tmp_path, capsys, monkeypatch):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setenv("EFM_LOG_DIR", str(tmp_path))

    def main(argv):
        common.run_pipeline(
            lambda p: p | beam.Create([1, 2]) | beam.Map(_loud_step), PipelineOptions(FNAPI)
        )
        return 0

    assert common.run("efm sample", main, ["--output", str(tmp_path / "t.parquet")]) == 1
    err = capsys.readouterr().err
    assert (
        "progress 1" in err
        and "WARNING efm.test: a warning from a worker" in err
        and "Traceback" not in err
    ), err
    last = err.strip().splitlines()[-1]
    assert (
        last.startswith("efm sample: error: unexpected ValueError: bad element (full trace in ")
        and "second line" not in last
    )
    log = last.split("full trace in ")[1].split(")")[0]
    assert (
        "Traceback (most recent call last)" in open(log).read()
        and "with a second line" in open(log).read()
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["extract", "--years", "2022", "--output", "x.zarr"],
            "efm extract: error: the following arguments are required: --bbox/--aoi (see efm extract --help)",
        ),
        (
            [
                "change",
                "--embeddings",
                "e.zarr",
                "--years",
                "2022,2023",
                "--output",
                "x.zarr",
                "--threshold",
                "abc",
            ],
            "efm change: error: --threshold: invalid float value: 'abc' (see efm change --help)",
        ),
        (
            [
                "classify",
                "--embeddings",
                "e.zarr",
                "--model",
                "m.skops",
                "--output",
                "c.zarr",
                "--years",
            ],
            "efm classify: error: --years: expected one argument (see efm classify --help)",
        ),
        (
            ["make-sample-data", "--output", "sd", "--foo"],
            "efm make-sample-data: error: unrecognized arguments: --foo (see efm make-sample-data --help)",
        ),
    ],
)
def test_argparse_errors_are_one_line_too(argv, message, tmp_path, capsys, monkeypatch):
    """A missing or malformed flag is efm's one line, not argparse's usage block; exit 2, nothing written."""
    from pipelines import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["extract", "train", "sample", "cluster", "make-sample-data"])
def test_every_command_refuses_an_output_it_cannot_create_before_any_work(
    command, tmp_path, capsys
):
    """A read-only folder (or one under it, to be created) is one line and exit 2 before anything runs."""
    from pipelines import cli

    locked = tmp_path / "locked"
    locked.mkdir()
    target = str(
        locked
        / "new"
        / {
            "extract": "e.zarr",
            "train": "m.skops",
            "sample": "s.parquet",
            "cluster": "k.skops",
        }.get(command, "sd")
    )
    argv = {
        "extract": [
            "--bbox",
            "5.9,45.8,6.0,45.9",
            "--years",
            "2022",
            "--source",
            "cog",
            "--cog-root",
            str(tmp_path / "no-mirror"),
        ],
        "train": ["--samples", str(tmp_path / "s.parquet")],
        "sample": [
            "--embeddings",
            make_store(str(tmp_path / "e.zarr")).path,
            "--points",
            str(tmp_path / "p.csv"),
            "--label-column",
            "label",
        ],
        "cluster": ["--embeddings", str(tmp_path / "e.zarr")],
    }.get(command, [])
    with read_only(locked):
        assert cli.main([command, *argv, "--output", target]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"efm {command}: error: --output: cannot write in {locked} ("), line
    assert os.listdir(locked) == []


def test_aiohttps_unclosed_session_notice_stays_off_the_terminal():
    """aiohttp logs "Unclosed client session" (logger asyncio, ERROR) when an fsspec filesystem's
    session is garbage-collected, at any moment of a later command: it is no error of that
    command and must not become a second line of its one-line refusal (seen in CI)."""
    import logging

    from pipelines.failures import _TerminalFilter

    def record(name, msg, level=logging.ERROR):
        return logging.LogRecord(name, level, __file__, 1, msg, None, None)

    keep = _TerminalFilter()
    assert not keep.filter(record("asyncio", "Unclosed client session"))
    assert not keep.filter(record("asyncio", "Unclosed connector"))
    assert keep.filter(record("asyncio", "Task exception was never retrieved"))
    assert keep.filter(record("efm", "a real error"))


# ---------------------------------------------------------------- classification by type (issue 20 item 3)


def _raised(make):
    """The exception `make` raises (called inside an except block, so chains form as in real code)."""
    try:
        make()
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("nothing raised")


def _deep(inner: BaseException) -> BaseException:
    """`inner` three links down a chain: wrapped by `raise ... from`, then raised over while handled."""

    def level1():
        raise inner

    def level2():
        try:
            level1()
        except BaseException as exc:
            raise ValueError("a library wrapped it") from exc

    def level3():
        try:
            level2()
        except ValueError:
            raise RuntimeError("the runner failed [while running 'Step']")  # noqa: B904

    return _raised(level3)


def test_an_efm_error_deep_in_a_chain_is_classified_by_its_type():
    """Any EfmError subclass, even one no list names, gives its own line and exit status."""
    from pipelines.failures import classify
    from transforms.core.errors import EfmError
    from transforms.sources.fetch import TileFetchError

    class BrandNew(EfmError):
        exit_status = 2

        def line(self):
            return "--thing: the brand-new error's own line"

    assert classify(_deep(BrandNew("ignored text"))) == (
        2,
        "--thing: the brand-new error's own line",
    )
    fetch = TileFetchError("gave up on year 2021 after 2 attempts: HTTP 429: Too Many Requests.")
    status, line = classify(_deep(fetch))
    assert status == 1 and line.startswith(
        "quota exhausted: gave up on year 2021 after 2 attempts: HTTP 429: Too Many Requests; "
        "the service still refused after every retry"
    ), line
    # the advice names knobs that exist: --tuning keys (their old flags are refused now)
    assert "--tuning" in line and "max_concurrent_requests" in line and "--max-" not in line
    # a Ctrl-C anywhere in the chain wins over everything
    assert classify(_deep(KeyboardInterrupt())) == (130, "interrupted (Ctrl-C)")


def test_an_os_error_in_a_chain_is_named_in_words():
    from pipelines.failures import classify

    denied = PermissionError(13, "Permission denied", "/data/out/map.tif")
    assert classify(_deep(denied)) == (
        1,
        "permission denied: /data/out/map.tif (Permission denied); "
        "check that the path is right and writable, then re-run",
    )
    assert classify(_deep(ConnectionResetError("peer went away\nmore"))) == (
        1,
        "ConnectionResetError: peer went away",
    )
    assert classify(_deep(MemoryError())) == (
        1,
        "out of memory; lower chunk_size (efm extract --tuning chunk_size=...) or run on workers "
        "with more memory",
    )


def test_efm_errors_cross_a_pickle_whole():
    """A worker's exception is pickled to travel: efm's errors come back as the same error."""
    import pickle

    from transforms.core.errors import CredentialsError, InputError

    for exc in (InputError("--bbox", "west must be below east"), CredentialsError("no token")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and back.flag == exc.flag
        # the exception's own reduction (a library such as tblib may register another in copyreg)
        rebuild, args, state = exc.__reduce__()
        back = rebuild(*args)
        back.__dict__.update(state)
        assert type(back) is type(exc) and str(back) == str(exc) and back.flag == exc.flag
    assert str(CredentialsError("no token")).startswith("credentials: no Earth Engine credentials")


def test_the_text_boundary_reads_only_efm_and_named_os_errors():
    from pipelines.failures import named_in_text

    text = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "    raise InputError('--a', 'b')\n"
        "transforms.core.errors.InputError: --a: first\n"
        "\nDuring handling of the above exception, another exception occurred:\n\n"
        "transforms.sources.fetch.TileFetchError: gave up: HTTP 429 [while running 'Fetch']\n"
        "ValueError: not ours\n"
        "  InputError: indented, so a source line, not an exception\n"
        "some.module.TileFetchErrorish: a longer name\n"
    )
    assert named_in_text(text) == ("TileFetchError", "gave up: HTTP 429 [while running 'Fetch']")
    assert named_in_text("ValueError: x\nKeyError: y") is None
    assert named_in_text("PermissionError: [Errno 13] Permission denied: '/x'") == (
        "PermissionError",
        "[Errno 13] Permission denied: '/x'",
    )


def test_a_failing_multi_process_run_redirects_no_file_descriptor(tmp_path, capfd, monkeypatch):
    """No descriptor is redirected (os.dup2 fails the run if called), yet the one line is all the
    terminal shows: the worker process's printed traceback goes to the log through logging, and
    the worker's error, handed back as text, is read by its type's name."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setenv("EFM_LOG_DIR", str(tmp_path))
    fd2 = os.readlink("/proc/self/fd/2")

    def no_dup2(*args):
        raise AssertionError(f"os.dup2{args} while a command runs")

    def fail_in_a_worker(x):  # nested: pickled by value (workers cannot import this module)
        from transforms.sources.fetch import TileFetchError

        if x == 2:
            raise TileFetchError(
                "gave up on year 2021, rows 0-128 after 2 attempts: HTTP 429: Slow"
            )
        return x

    def main(argv):
        monkeypatch.setattr(os, "dup2", no_dup2)
        p = PipelineOptions(MULTIPROCESS)
        common.run_pipeline(lambda p: p | beam.Create([1, 2]) | beam.Map(fail_in_a_worker), p)
        return 0

    assert common.run("efm extract", main, ["--output", str(tmp_path / "e.zarr")]) == 1
    monkeypatch.undo()
    assert os.readlink("/proc/self/fd/2") == fd2
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        "efm extract: error: quota exhausted: gave up on year 2021, rows 0-128 after 2 attempts: "
        "HTTP 429: Slow; the service still refused"
    ), last
    log = open(last.split("full trace in ")[1].split(")")[0]).read()
    assert "a traceback printed on stderr" in log and "TileFetchError" in log


def test_a_traceback_beam_prints_in_this_process_goes_to_the_log(tmp_path, capfd, monkeypatch):
    """multi_threading: Beam's SDK harness prints a failed bundle's traceback on this process's
    sys.stderr; it goes to the log (logger efm.stderr), the step's own output to the terminal."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setenv("EFM_LOG_DIR", str(tmp_path))
    threads = ["--runner=DirectRunner", "--direct_num_workers=2"]
    threads.append("--direct_running_mode=multi_threading")

    def main(argv):
        steps = lambda p: p | beam.Create([1, 2]) | beam.Map(_loud_step)  # noqa: E731
        common.run_pipeline(steps, PipelineOptions(threads))
        return 0

    assert common.run("efm sample", main, ["--output", str(tmp_path / "t.parquet")]) == 1
    *before, last = capfd.readouterr().err.strip().splitlines()
    shown = "\n".join(before)  # two threads print: their lines may interleave
    assert "progress 1" in shown and "Traceback" not in shown, shown
    assert 'File "' not in last and last.startswith("efm sample: error: unexpected RuntimeError")
    log = open(last.split("full trace in ")[1].split(")")[0]).read()
    assert "efm.stderr: a traceback printed on stderr:\nTraceback (most recent call last)" in log
