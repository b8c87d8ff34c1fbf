"""FetchChunks: the source-agnostic part (sharding, concurrency cap, retries, assembly).

Uses a small deterministic source whose pixels are a function of their coordinates, so
expected values are computed independently; the Earth Engine source is tested end to end
against the emulator in test_extract.py.
"""

import dataclasses
import random
import threading
import time

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from tests.helpers.pixel_values import pixel_values
from tests.helpers.runners import MULTIPROCESS
from transforms.core.chunks import plan_chunks
from transforms.core.grid import Grid, chunk_windows
from transforms.sources.fetch import FetchChunks, RetryableError
from transforms.sources.fetch_bounds import RetryPolicy
from transforms.sources.grid_source import GridSource


class Tracker:
    lock = threading.Lock()
    in_flight = 0
    max_in_flight = 0
    calls = 0


@dataclasses.dataclass
class FlakySource(GridSource):
    failure_rate: float = 0.0
    latency_s: float = 0.0

    def setup(self):
        self.rng = random.Random(1)

    def fetch(self, spec, tile):
        with Tracker.lock:
            Tracker.in_flight += 1
            Tracker.calls += 1
            Tracker.max_in_flight = max(Tracker.max_in_flight, Tracker.in_flight)
            fail = self.rng.random() < self.failure_rate
        try:
            time.sleep(self.latency_s)
            if fail:
                raise RetryableError("HTTP 429: injected")
            return pixel_values(
                spec.year,
                np.arange(tile.row, tile.row + tile.rows),
                np.arange(tile.col, tile.col + tile.cols),
                len(self.bands),
            )
        finally:
            with Tracker.lock:
                Tracker.in_flight -= 1


COLLECTED = {}  # module-level: FnApiRunner runs in this process, the DoFn finds it by reference


def collect(element):
    key, ds = element
    COLLECTED[(key.offsets["time"], key.offsets["y"], key.offsets["x"])] = ds


def run_fetch(source, specs, **kwargs):
    Tracker.in_flight = Tracker.max_in_flight = Tracker.calls = 0
    COLLECTED.clear()
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        _ = p | beam.Create(specs) | FetchChunks(source, **kwargs) | beam.Map(collect)
    return dict(COLLECTED)


def make_source(**kwargs):
    grid = Grid("EPSG:32631", 10.0, 500000.0, 5000000.0, 300, 200)
    # 8 bands x 4 B + mask: a 128 x 128 chunk needs 2 requests under a 300 kB limit
    return FlakySource(
        grid=grid,
        years=(2021, 2022),
        bands=tuple(f"A{i:02d}" for i in range(8)),
        store_dtype="float32",
        transfer_itemsize=4,
        max_request_bytes=300_000,
        **kwargs,
    ), grid


def test_chunks_are_assembled_exactly_and_requests_follow_the_plan():
    source, grid = make_source()
    specs = plan_chunks([2021, 2022], list(chunk_windows(grid, 128)))
    results = run_fetch(source, specs, max_concurrent_requests=4, threads_per_worker=4)
    assert len(results) == len(specs) == 2 * 6
    assert Tracker.calls == sum(len(source.plan(s)) for s in specs) > len(specs)
    for spec in specs:
        ds = results[(spec.time_index, spec.window.row, spec.window.col)]
        w = spec.window
        expected = pixel_values(
            spec.year, np.arange(w.row, w.row + w.rows), np.arange(w.col, w.col + w.cols), 8
        )
        np.testing.assert_array_equal(ds["embedding"].values[0], expected)
        np.testing.assert_array_equal(ds["x"].values, grid.x_centres(w.col, w.col + w.cols))


def test_retries_make_flaky_fetches_whole_and_respect_the_cap():
    source, grid = make_source(failure_rate=0.3, latency_s=0.002)
    specs = plan_chunks([2021, 2022], list(chunk_windows(grid, 128)))
    results = run_fetch(
        source,
        specs,
        max_concurrent_requests=3,
        threads_per_worker=2,
        retry=RetryPolicy(max_retries=30, initial_delay_s=0.001, max_delay_s=0.01),
    )
    assert len(results) == len(specs)
    assert Tracker.calls > sum(len(source.plan(s)) for s in specs)  # some were retried
    assert Tracker.max_in_flight <= 3


def test_gives_up_with_a_clear_error_naming_the_tile():
    source, grid = make_source(failure_rate=1.0)
    specs = plan_chunks([2021], list(chunk_windows(grid, 128)))[:1]
    with pytest.raises(
        Exception,
        match=r"gave up on year 2021, rows 0-128, cols 0-128, request tile rows \d+-\d+ cols 0-128 after 3 attempts",
    ):
        run_fetch(source, specs, retry=RetryPolicy(max_retries=2, initial_delay_s=0.001))


def test_the_cap_holds_across_processes_and_a_failed_bundle(tmp_path, ee_token):
    """Two worker processes, two shards of 2 threads under a cap of 4, against the emulator that
    counts what it serves at once; one request fails hard mid-run (HTTP 400), the run is resumed."""
    from emulators.earthengine import EarthEngineEmulator
    from emulators.earthengine.synthetic import make_embedding_collection
    from pipelines import extract
    from tests.helpers.ee_extract import bbox_inside, expected_array
    from transforms.storage import store

    images = make_embedding_collection(years=(2021, 2022), seed=3)
    emulator = EarthEngineEmulator(
        max_in_flight=1000, latency_s=0.15
    )  # never refuses: it only counts
    emulator.add_images(images)
    output = str(tmp_path / "emb.zarr")
    argv = [
        "--bbox",
        bbox_inside(images, 2021),
        "--years",
        "2021,2022",
        "--output",
        output,
        "--tuning",
        "chunk_size=128",
        "--tuning",
        "ee_project=test-project",
        "--tuning",
        "max_concurrent_requests=4",
        "--tuning",
        "retry_initial_delay=0.01",
        *MULTIPROCESS,
    ]
    with emulator:
        argv += ["--tuning", f"ee_api_url={emulator.url}"]
        emulator.configure(fail_once_after=10)
        with pytest.raises(Exception, match="400|Invalid request"):
            extract.main(argv)
        failed_run_peak = emulator.max_in_flight_seen
        written = store.done_markers(output)
        emulator.reset_stats()
        assert extract.main([*argv, "--resume"]) == 0
        ds = store.open_embeddings(output)
        assert len(written) < len(store.done_markers(output))
        assert emulator.count("computePixels") == len(store.done_markers(output)) - len(
            written
        )  # one int8 request per 128 px chunk
        resumed_peak = emulator.max_in_flight_seen
    np.testing.assert_array_equal(ds["embedding"].values, expected_array(images, ds))
    assert failed_run_peak <= 4 and resumed_peak <= 4
    # Both processes were fetching at once (more than one shard's threads in flight): the bound was tested.
    assert max(failed_run_peak, resumed_peak) > 2


def test_retry_delay_is_exponential_with_jitter():
    policy = RetryPolicy(initial_delay_s=1.0, max_delay_s=10.0)
    rng = random.Random(0)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 10.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(set(delays)) > 1
