"""Bad values refused in one line, exit 2, before any work and with nothing written (issue 16,
"What to build" 6): seeds, k-NN neighbours vs the folds' samples, a store with no valid pixel,
export's png_size, non-finite regression targets, Beam flags with bad values, an empty or non-degree
GeoJSON, Ctrl-C in `efm demo`; and the Python API's years / folds / seed, checked by the same
functions as the commands (docs/bad-input.md, "Values").
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import efm
from pipelines import cli
from tests.helpers.refusals import listing, refused
from tests.helpers.regression_table import regression_table
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import BANDS, make_store, pixel_centre
from transforms.core.errors import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def class_table(path, n=20, seed=0):
    """n samples, two balanced classes, one row per point."""
    rng = np.random.default_rng(seed)
    rows = [
        {"point_id": i, "label": "ab"[i % 2], **dict(zip(BANDS, rng.normal(size=64)))}
        for i in range(n)
    ]
    pd.DataFrame(rows).astype({b: np.float32 for b in BANDS}).to_parquet(path)
    return str(path)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """2021 and 2022, 100 x 100 px in one 128 px chunk: 2022 holds no valid pixel at all."""
    root = tmp_path_factory.mktemp("store")
    return make_store(str(root / "e.zarr"), height=100, width=100, chunk_size=128)


# ---------------------------------------------------------------- seeds


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_train_refuses_a_seed_numpy_cannot_take(seed, tmp_path, capsys):
    samples = class_table(tmp_path / "s.parquet")
    refused(
        [
            "train",
            "--samples",
            samples,
            "--output",
            str(tmp_path / "m.skops"),
            f"--tuning=seed={seed}",
        ],
        tmp_path,
        capsys,
        "efm train: error: --tuning: seed: must be a whole number in 0..4294967295 (numpy's limit), "
        f"got {seed}",
    )


def test_cluster_checks_its_seed_before_sampling(small_store, tmp_path, capsys):
    """Exactly one line: the 'drawing N pixels' line of a started run is not printed either."""
    refused(
        [
            "cluster",
            "--embeddings",
            small_store.path,
            "--output",
            str(tmp_path / "k.skops"),
            "--tuning",
            "seed=100000000000000",
            *FNAPI,
        ],
        tmp_path,
        capsys,
        "efm cluster: error: --tuning: seed: must be a whole number in 0..4294967295 (numpy's "
        "limit), got 100000000000000",
    )


def test_make_sample_data_refuses_a_negative_seed(tmp_path, capsys):
    refused(
        [
            "make-sample-data",
            "--output",
            str(tmp_path / "sd"),
            "--size",
            "small",
            "--tuning",
            "seed=-3",
        ],
        tmp_path,
        capsys,
        "efm make-sample-data: error: --tuning: seed: must be a whole number in 0..4294967295 "
        "(numpy's limit), got -3",
    )


# ---------------------------------------------------------------- k-NN neighbours vs the folds


@pytest.mark.parametrize("kind", ["classifier", "regressor", "regressor-grouped"])
def test_knn_with_more_neighbours_than_a_fold_trains_on_is_refused(kind, tmp_path, capsys):
    """20 samples, 5 folds: each fold is fitted on 20 - 20/5 = 16 samples (grouped: 10 points of
    2 years, 8 points = 16 rows). 17 is refused naming 16; 16, the number it names, trains."""
    table = tmp_path / "s.parquet"
    if kind == "classifier":
        class_table(table)
        model = ["--classifier", "knn"]
    else:
        regression_table(
            table, points=20 if kind == "regressor" else 10, years=1 if kind == "regressor" else 2
        )
        model = ["--label-column", "agbd", "--regressor", "knn"]
    argv = ["train", "--samples", str(table), *model, "--output", str(tmp_path / "m.skops")]
    refused(
        [*argv, "--param", "n_neighbors=17"],
        tmp_path,
        capsys,
        "efm train: error: --param: n_neighbors=17 is more than the 16 samples the smallest of the "
        "5 cross-validation folds is fitted on (20 samples in all); the largest that works is "
        "n_neighbors=16 (or add samples)",
    )
    assert cli.main([*argv, "--param", "n_neighbors=16"]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "m.skops.json").read_text())["params"]["n_neighbors"] == 16


# ---------------------------------------------------------------- cluster: a store with no valid pixel


def test_cluster_over_years_without_a_valid_pixel_is_one_line_and_writes_nothing(
    small_store, tmp_path, capsys
):
    before = listing(tmp_path)
    argv = [
        "cluster",
        "--embeddings",
        small_store.path,
        "--years",
        "2022",
        "--output",
        str(tmp_path / "k.skops"),
        "--tuning",
        "sample_size=100",
        *FNAPI,
    ]
    assert not small_store.valid[1].any() and small_store.valid[0].any()  # the premise
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # the run's announcement (printed when sampling starts), then the one error line
    assert lines[0].startswith("efm cluster: drawing 100 valid pixels") and lines[1:] == [
        f"efm cluster: error: --embeddings: {small_store.path} has no valid pixel in 2022 (every "
        "pixel is no data): nothing to cluster; choose other --years or another store"
    ], lines
    assert listing(tmp_path) == before


def test_cluster_with_fewer_valid_pixels_than_clusters_names_how_many(tmp_path, capsys):
    s = make_store(str(tmp_path / "tiny.zarr"), height=2, width=3)
    valid = int(s.valid[0].sum())  # 6 pixels, but for the factory's random holes
    assert 0 < valid < 10
    before = listing(tmp_path)
    argv = ["cluster", "--embeddings", s.path, "--years", "2021", "--clusters", "10"]
    assert cli.main([*argv, "--output", str(tmp_path / "k.skops"), *FNAPI]) == 2
    assert capsys.readouterr().err.strip().splitlines()[1:] == [
        f"efm cluster: error: --clusters: {s.path} has only {valid} valid pixels in 2021, fewer "
        f"than --clusters 10; pass --clusters {valid} or fewer"
    ]
    assert listing(tmp_path) == before


# ---------------------------------------------------------------- export --tuning png_size


@pytest.mark.parametrize("size", ["0", "-5", "5000"])
def test_export_png_size_out_of_range_is_refused_before_the_geotiff(
    size, small_store, tmp_path, capsys
):
    refused(
        [
            "export",
            "--input",
            small_store.path,
            "--band",
            "A01",
            "--years",
            "2021",
            "--png",
            "--tuning",
            f"png_size={size}",
            "--output",
            str(tmp_path / "a01.tif"),
        ],
        tmp_path,
        capsys,
        "efm export: error: --tuning: png_size: must be 1..4096 pixels (the quicklook is a preview drawn "
        f"800 px wide; for full resolution open the GeoTIFF), got {size}",
    )


# ---------------------------------------------------------------- non-finite regression targets


def test_non_finite_targets_are_refused_naming_count_and_points(tmp_path, capsys):
    table = tmp_path / "s.parquet"
    frame = regression_table(table, points=20, years=1)
    frame.loc[3, "agbd"] = np.nan
    frame.loc[7, "agbd"] = np.inf
    frame.loc[12, "agbd"] = -np.inf
    frame.to_parquet(table)
    argv = ["train", "--samples", str(table), "--label-column", "agbd", "--regressor", "knn"]
    refused(
        [*argv, "--output", str(tmp_path / "r.skops")],
        tmp_path,
        capsys,
        f"efm train: error: --label-column: column 'agbd' of {table} is not a finite number in 3 "
        "of 20 rows (NaN or inf; first at point_id 3, 7, 12); give every sample a value, or pass "
        "--tuning drop_missing_target=true to train on the other rows",
    )
    # the documented way out: train on the 17 other rows
    assert (
        cli.main(
            [*argv, "--tuning", "drop_missing_target=true", "--output", str(tmp_path / "r.skops")]
        )
        == 0
    )
    sidecar = json.loads((tmp_path / "r.skops.json").read_text())
    assert sidecar["samples"]["rows"] == 17
    finite = frame["agbd"][np.isfinite(frame["agbd"])]
    assert sidecar["metrics"]["target_max"] == pytest.approx(finite.max())


# ---------------------------------------------------------------- Beam flags with bad values


@pytest.mark.parametrize(
    "flag, message",
    [
        (["--direct_num_workers", "abc"], "--direct_num_workers: invalid int value: 'abc'"),
        (
            ["--direct_running_mode=threads"],
            "--direct_running_mode: invalid choice: 'threads' (choose from 'in_memory', "
            "'multi_threading', 'multi_processing')",
        ),
        (["--direct_num_workers"], "--direct_num_workers: expected one argument"),
    ],
)
def test_a_beam_flag_with_a_bad_value_is_one_line(flag, message, small_store, tmp_path, capsys):
    refused(
        ["cluster", "--embeddings", small_store.path, "--output", str(tmp_path / "k.skops"), *flag],
        tmp_path,
        capsys,
        f"efm cluster: error: {message} (a Beam pipeline option: give it a valid value or leave it out)",
    )


# ---------------------------------------------------------------- points and areas files


EMPTY = '{"type": "FeatureCollection", "features": []}'


def metres_geojson(path, s, polygon=False):
    """Coordinates in the store's UTM metres, no CRS member: what a GeoJSON must not be (RFC 7946)."""
    (x0, y0), (x1, y1) = pixel_centre(s, 10, 10), pixel_centre(s, 40, 40)
    if polygon:
        ring = [[x0, y1], [x1, y1], [x1, y0], [x0, y0], [x0, y1]]
        features = [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        ]
    else:
        features = [
            {
                "type": "Feature",
                "properties": {"label": "a"},
                "geometry": {"type": "Point", "coordinates": [x, y]},
            }
            for x, y in ((x0, y0), (x1, y1))
        ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return f"x {x0:.10g}..{x1:.10g}, y {y1:.10g}..{y0:.10g}"


@pytest.mark.parametrize("command", ["sample", "similarity"])
def test_an_empty_feature_collection_is_named(command, small_store, tmp_path, capsys):
    points = tmp_path / "p.geojson"
    points.write_text(EMPTY)
    out = str(tmp_path / ("s.parquet" if command == "sample" else "sim.zarr"))
    label = ["--label-column", "label"] if command == "sample" else []
    refused(
        [
            command,
            "--embeddings",
            small_store.path,
            "--points",
            str(points),
            *label,
            "--output",
            out,
            *FNAPI,
        ],
        tmp_path,
        capsys,
        f"efm {command}: error: --points: {points} holds no features",
    )


GEOJSON_WHY = (
    "GeoJSON is WGS84 (RFC 7946); reproject it or give a file with its CRS (GeoPackage/GeoParquet)"
)


def test_points_in_metres_in_a_geojson_are_named_not_blamed_on_the_area(
    small_store, tmp_path, capsys
):
    points = tmp_path / "p.geojson"
    span = metres_geojson(points, small_store)
    refused(
        [
            "sample",
            "--embeddings",
            small_store.path,
            "--points",
            str(points),
            "--label-column",
            "label",
            "--output",
            str(tmp_path / "s.parquet"),
            *FNAPI,
        ],
        tmp_path,
        capsys,
        f"efm sample: error: --points: {points}: coordinates are not degrees ({span}): {GEOJSON_WHY}",
    )


def test_an_area_in_metres_in_a_geojson_is_named_not_blamed_on_utm_size(
    small_store, tmp_path, capsys
):
    aoi = tmp_path / "aoi.geojson"
    span = metres_geojson(aoi, small_store, polygon=True)
    refused(
        [
            "extract",
            "--aoi",
            str(aoi),
            "--years",
            "2022",
            "--source",
            "cog",
            "--cog-root",
            str(tmp_path / "no-mirror"),
            "--output",
            str(tmp_path / "e.zarr"),
            "--dry-run",
        ],
        tmp_path,
        capsys,
        f"efm extract: error: --aoi: {aoi}: coordinates are not degrees ({span}): {GEOJSON_WHY}",
    )


def test_csv_coordinates_in_metres_ask_for_points_crs(small_store, tmp_path, capsys):
    x, y = pixel_centre(small_store, 10, 10)
    points = tmp_path / "p.csv"
    points.write_text(f"lon,lat,label\n{x},{y},a\n")
    argv = [
        "sample",
        "--embeddings",
        small_store.path,
        "--points",
        str(points),
        "--label-column",
        "label",
        "--output",
        str(tmp_path / "s.parquet"),
        *FNAPI,
    ]
    refused(
        argv,
        tmp_path,
        capsys,
        f"efm sample: error: --points: {points}: coordinates are not degrees (x {x:.10g}..{x:.10g}, "
        f"y {y:.10g}..{y:.10g}): lon/lat columns are read as degrees (WGS84); for other coordinates "
        "give their CRS, e.g. --tuning points_crs=EPSG:32631",
    )
    # the fix the line names: the point is read in the store's CRS, on the pixel it names
    assert cli.main([*argv, "--tuning", f"points_crs={small_store.grid.crs}"]) == 0
    table = pd.read_parquet(tmp_path / "s.parquet")
    assert table["label"].tolist() == ["a"] and table["year"].tolist() == [2021]
    expected = small_store.values[0, 10, 10]
    assert small_store.valid[0, 10, 10]
    np.testing.assert_array_equal(table[list(BANDS)].to_numpy()[0], expected)


# ---------------------------------------------------------------- Ctrl-C in efm demo


def interrupt_demo(argv, out, tmp_path, again_every=None):
    """Run `efm demo ARGV`; once it has printed its first step and `efm extract` has set up its
    store (it is then fetching chunks), send a real SIGINT; with `again_every` (seconds), more
    until it has exited (Ctrl-C held down). -> (exit status, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "demo", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EFM_LOG_DIR": str(tmp_path / "logs")},
    )
    try:
        for line in proc.stdout:
            if line.strip().startswith("make-sample-data"):
                break
        # set up = its metadata consolidated, the last step of store.setup: the interrupt then
        # lands in the fetch, never inside the set-up (whose own clean-up is store.prepare's)
        # (Zarr 3: the group's zarr.json holds it once consolidated)
        group = os.path.join(out, "embeddings.zarr", "zarr.json")
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with open(group) as f:
                    if (json.load(f).get("consolidated_metadata") or {}).get("metadata"):
                        break
            except (OSError, ValueError):  # not there yet, or being written
                pass
            time.sleep(0.02)
        if proc.poll() is not None:
            raise AssertionError(f"the demo ended before the interrupt: {proc.stderr.read()}")
        proc.send_signal(signal.SIGINT)
        while again_every is not None and proc.poll() is None:
            time.sleep(again_every)
            proc.send_signal(signal.SIGINT)  # after its exit: no signal (Popen checks)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def test_ctrl_c_in_the_demo_is_one_line_exit_130_and_its_re_run_is_accepted(tmp_path):
    """Exit 130, one line, and the command that line suggests (--overwrite) is accepted on the
    half-written folder: it replaces it and runs (interrupted again at the same point, to keep the
    test short; the demo's full run is tests/test_demo.py). A Ctrl-C inside the store's setup,
    before its attributes are written, is the setup's own cleanup (transforms/storage/store.prepare)."""
    out = str(tmp_path / "demo")
    status, err = interrupt_demo(["--tuning", "small=true", "--output", out], out, tmp_path)
    assert status == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    prefix = "efm demo: error: interrupted (Ctrl-C) (full trace in "
    suffix = f"); to replace what it left at {out}, re-run: "
    assert lines[0].startswith(prefix) and suffix in lines[0], lines[0]
    command = shlex.split(lines[0].split(suffix, 1)[1])
    assert command == ["efm", "demo", "--tuning", "small=true", "--output", out, "--overwrite"]
    # the re-run: accepted (it gets as far as the first run did), and its own Ctrl-C is one line too
    status, err = interrupt_demo(command[2:], out, tmp_path)
    assert status == 130, err
    (again,) = err.strip().splitlines()
    assert again.startswith(prefix), again
    assert again.endswith(f"re-run: efm demo --tuning small=true --output {out} --overwrite"), again


def test_ctrl_c_held_down_in_the_demo_is_still_one_line_and_exit_130(tmp_path):
    """More Ctrl-C while the first is handled (the steps' clean-up, the log, the line, Python's
    shutdown) change nothing: one line, exit 130, not death by the signal (the store a held Ctrl-C
    leaves: tests/test_failures.py::test_ctrl_c_is_one_line_exit_130_with_the_resume_command)."""
    out = str(tmp_path / "demo")
    status, err = interrupt_demo(
        ["--tuning", "small=true", "--output", out], out, tmp_path, again_every=0.005
    )
    assert status == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("efm demo: error: interrupted (Ctrl-C) (full trace in "), lines[0]
    assert lines[0].endswith(f"re-run: efm demo --tuning small=true --output {out} --overwrite"), (
        lines[0]
    )


# ---------------------------------------------------------------- the Python API


@pytest.fixture(scope="module")
def api_store(tmp_path_factory):
    return make_store(
        str(tmp_path_factory.mktemp("api") / "e.zarr"), height=64, width=64, chunk_size=32
    )


def points_frame(s):
    rows = [(r, c) for r in range(2, 60, 6) for c in range(2, 60, 6)]
    xy = [pixel_centre(s, r, c) for r, c in rows]
    return pd.DataFrame(
        {
            "x": [p[0] for p in xy],
            "y": [p[1] for p in xy],
            "label": [s.labels[0, r, c] for r, c in rows],
        }
    )


def raises_one_line(call, line):
    with pytest.raises(InputError) as info:
        call()
    assert str(info.value) == line and "\n" not in str(info.value)


def test_api_years_take_the_command_line_syntax(api_store):
    ds = efm.open_embeddings(api_store.path)
    pts = points_frame(api_store)
    by_int = efm.sample(ds, pts, label_column="label", years=[2022], points_crs="EPSG:32631")
    by_text = efm.sample(ds, pts, label_column="label", years="2022", points_crs="EPSG:32631")
    pd.testing.assert_frame_equal(by_int, by_text)
    both = efm.sample(ds, pts, label_column="label", years="2021-2022", points_crs="EPSG:32631")
    assert sorted(set(both["year"])) == [2021, 2022]
    raises_one_line(
        lambda: efm.sample(ds, pts, label_column="label", years="2o22", points_crs="EPSG:32631"),
        "years: expected years like 2021,2022 or 2019-2024, got '2o22'",
    )
    raises_one_line(
        lambda: efm.sample(ds, pts, label_column="label", years=2022.0, points_crs="EPSG:32631"),
        "years: expected a year or years as an int, a list of ints or text like '2021,2022' or "
        "'2019-2024', got 2022.0 (float)",
    )


def test_api_change_takes_a_year_as_text_and_refuses_two(api_store):
    ds = efm.open_embeddings(api_store.path)
    np.testing.assert_array_equal(
        efm.change(ds, "2021", "2022").values, efm.change(ds, 2021, 2022).values
    )
    raises_one_line(
        lambda: efm.change(ds, "2021,2022", 2022),
        "from_year: expected one year, e.g. 2022, got '2021,2022'",
    )
    raises_one_line(
        lambda: efm.change(ds, 2021, "2019"),
        f"to_year: {api_store.path} has no year 2019; it holds 2021, 2022",
    )


@pytest.mark.parametrize(
    "kwargs, line",
    [
        ({"folds": "5"}, "folds: expected a number of folds as an int, e.g. 5, got '5' (str)"),
        ({"folds": 1}, "folds: cross-validation needs at least 2 folds, got 1"),
        ({"seed": -1}, "seed: must be a whole number in 0..4294967295 (numpy's limit), got -1"),
        ({"seed": "0"}, "seed: expected a whole number in 0..4294967295, e.g. 0, got '0' (str)"),
        (
            {"classifier": "knn", "params": {"n_neighbors": 17}},
            "params: n_neighbors=17 is more than the 16 samples the smallest of the 5 "
            "cross-validation folds is fitted on (20 samples in all); the largest that works is "
            "n_neighbors=16 (or add samples)",
        ),
    ],
)
def test_api_train_checks_folds_seed_and_neighbours_as_the_command(kwargs, line, tmp_path):
    table = class_table(tmp_path / "s.parquet")
    raises_one_line(lambda: efm.train(table, **kwargs), line)


def test_api_train_refuses_non_finite_targets_unless_told_to_drop_them(tmp_path):
    table = tmp_path / "s.parquet"
    frame = regression_table(table, points=20, years=1)
    frame.loc[5, "agbd"] = np.nan
    frame.to_parquet(table)
    raises_one_line(
        lambda: efm.train(table, target_column="agbd", regressor="knn"),
        f"target_column: column 'agbd' of {table} is not a finite number in 1 of 20 rows (NaN or "
        "inf; first at point_id 5); give every sample a value, or pass drop_missing_target=True to "
        "train on the other rows",
    )
    _, report = efm.train(table, target_column="agbd", regressor="knn", drop_missing_target=True)
    assert report.metrics["samples"] == 19


def test_samples_that_are_not_a_parquet_table_are_refused_with_the_reader_s_first_line(
    tmp_path, capsys
):
    table = tmp_path / "s.parquet"
    table.write_text("point_id,label\n1,2\n")  # a CSV under a Parquet name
    argv = ["train", "--samples", str(table), "--output", str(tmp_path / "m.skops")]
    before = listing(tmp_path)
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"efm train: error: --samples: cannot read {table} as a Parquet table: "
    ), lines
    assert lines[0].split("as a Parquet table: ", 1)[1].strip()  # the reader's words, not empty
    assert listing(tmp_path) == before
