"""`efm sample` exits 0, every time (issue 20, item 8).

It used to abort now and then at interpreter exit, after writing its table, with "terminate
called without an active exception" (SIGABRT): it read the table back with
`pyarrow.parquet.read_table(f)` on a Python file object, and an Arrow thread that still held that
file a moment later asked for the GIL while Python was finalizing (transforms/core/parquet.py).
The loop test runs the command as a user does; since the abort is a race (about 3 runs in 100 of
a bare read-then-exit script here), the thread tests check its cause directly and every time:
a Parquet table efm reads through fsspec is read in the calling thread only, so no Arrow thread
holds a Python object.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyproj
import pytest
from fsspec.implementations.local import LocalFileSystem

from tests.helpers.store_factory import BANDS, make_store
from transforms.learning import sample_table, training_samples

REPO = Path(__file__).resolve().parents[1]
RUNS = 20


class RecordingFile(io.FileIO):
    """A local file that notes which thread calls each of its methods."""

    calls: list[tuple[str, int]] = []

    def _note(self, method: str) -> None:
        RecordingFile.calls.append((method, threading.get_ident()))

    def read(self, *args):
        self._note("read")
        return super().read(*args)

    def readinto(self, buffer):
        self._note("readinto")
        return super().readinto(buffer)

    def readall(self):
        self._note("readall")
        return super().readall()

    def seek(self, *args):
        self._note("seek")
        return super().seek(*args)

    def tell(self):
        self._note("tell")
        return super().tell()


class RecordingFileSystem(LocalFileSystem):
    """`efmrec:///abs/path`: the local file system, whose files opened for reading record their callers."""

    protocol = ("efmrec",)

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix("efmrec://"))

    def _open(self, path, mode="rb", **kwargs):
        if mode == "rb":
            return RecordingFile(self._strip_protocol(path), "rb")
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("efmrec", RecordingFileSystem, clobber=True)


def other_threads() -> list[tuple[str, int]]:
    me = threading.get_ident()
    return [(method, ident) for method, ident in RecordingFile.calls if ident != me]


def part_frames(n_parts: int = 3, rows: int = 400, seed: int = 0) -> list[pd.DataFrame]:
    """Parts as `efm sample`'s chunk step writes them (float32 bands, many columns)."""
    rng = np.random.default_rng(seed)
    frames = []
    for p in range(n_parts):
        ids = np.arange(p * rows, (p + 1) * rows)
        frame = pd.DataFrame(
            {
                "point_id": np.repeat(ids, 1),
                "label": np.where(ids % 3 == 0, "forest", "water"),
                "point_x": rng.random(rows),
                "point_y": rng.random(rows),
                "year": np.full(rows, 2022, dtype=np.int64),
                "pixel_x": rng.integers(0, 100, rows),
                "pixel_y": rng.integers(0, 100, rows),
            }
        )
        bands = pd.DataFrame(rng.random((rows, len(BANDS)), dtype=np.float32), columns=list(BANDS))
        frames.append(pd.concat([frame, bands], axis=1))
    return frames


@pytest.fixture
def assembled(tmp_path):
    """A table assembled by `sample_table.assemble` from parts read through efmrec://."""
    parts = tmp_path / "s.parquet.parts"
    parts.mkdir()
    frames = part_frames()
    for i, frame in enumerate(frames):
        frame.to_parquet(parts / f"part-{i}-0.parquet", index=False)
    output = tmp_path / "s.parquet"
    metadata = {"label_column": "label", "keep_columns": [], "years": [2022]}
    RecordingFile.calls = []
    sample_table.assemble(f"efmrec://{parts}", f"efmrec://{output}", metadata, BANDS)
    assert RecordingFile.calls, "the parts were read through the recording file system"
    return output, pd.concat(frames, ignore_index=True), metadata


def test_assembling_the_table_reads_its_parts_in_the_calling_thread(assembled):
    output, frames, _ = assembled
    assert other_threads() == [], (
        "Arrow's threads called into a Python file object: they may still hold it at exit"
    )
    expected = frames.sort_values(["point_id", "year"]).reset_index(drop=True)
    got = pq.read_table(output).to_pandas()  # Arrow's own local reader: the reference
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_sample_reads_its_table_back_in_the_calling_thread(assembled):
    output, frames, metadata = assembled
    RecordingFile.calls = []
    table = sample_table.read_table(f"efmrec://{output}")  # what `efm sample` does before it exits
    assert RecordingFile.calls and other_threads() == [], (
        "Arrow's threads called into a Python file object: they may still hold it at exit"
    )
    assert table.equals(pq.read_table(output))
    assert sample_table.read_table_metadata(str(output)) == metadata


def test_train_reads_the_table_in_the_calling_thread(assembled):
    output, frames, _ = assembled
    RecordingFile.calls = []
    X, labels, groups, bands, _ = training_samples.load_samples(f"efmrec://{output}")
    assert RecordingFile.calls and other_threads() == []
    expected = frames.sort_values(["point_id", "year"])
    np.testing.assert_array_equal(X, expected[list(BANDS)].to_numpy(np.float32))
    assert list(labels) == list(expected["label"]) and list(bands) == list(BANDS)


def test_a_truncated_table_is_an_error_not_a_short_read(tmp_path, assembled):
    output, _, _ = assembled
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(output.read_bytes()[:-100])
    with pytest.raises(Exception, match="(?i)parquet"):
        sample_table.read_table(str(cut))


@pytest.fixture(scope="module")
def tiny_sample_inputs(tmp_path_factory):
    """The smallest store and points file `efm sample` runs on: 2 x 2 chunks, 24 points."""
    root = tmp_path_factory.mktemp("exit")
    s = make_store(str(root / "e.zarr"), height=48, width=48, chunk_size=32, seed=3)
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, 48, 24), rng.integers(0, 48, 24)
    x = s.grid.x0 + (cols + 0.5) * s.grid.scale
    y = s.grid.y0 - (rows + 0.5) * s.grid.scale
    lon, lat = pyproj.Transformer.from_crs(s.grid.crs, "EPSG:4326", always_xy=True).transform(x, y)
    points = root / "p.csv"
    pd.DataFrame({"lon": lon, "lat": lat, "cls": np.where(rows % 2, "a", "b")}).to_csv(
        points, index=False
    )
    return s, points, root


def test_sample_command_exits_0_twenty_times(tiny_sample_inputs):
    """`python -m pipelines.sample` 20 times (two at a time, one output each), as a user runs it:
    every run exits 0 with its table written and no abort message."""
    s, points, root = tiny_sample_inputs
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def one(i: int) -> tuple[int, int, str, Path]:
        out = root / f"run{i}.parquet"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.sample",
                "--embeddings",
                s.path,
                "--points",
                str(points),
                "--label-column",
                "cls",
                "--output",
                str(out),
                "--runner=FnApiRunner",
            ],
            capture_output=True,
            text=True,
            cwd=root,
            env=env,
            timeout=300,
        )
        return i, done.returncode, done.stderr, out

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, range(RUNS)))
    failed = [(i, code, err[-300:]) for i, code, err, _ in results if code != 0]
    assert failed == [], f"{len(failed)} of {RUNS} runs failed: {failed}"
    for _, _, err, out in results:
        assert "terminate called" not in err
        assert pq.read_table(out).num_rows > 0
