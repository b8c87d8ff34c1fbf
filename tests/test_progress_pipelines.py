"""The progress lines of `efm classify` and `efm sample` (the same helper as extract's, counting their own output)."""

from __future__ import annotations

import os
import re
import sys
import threading

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from pipelines import classify, cluster, sample
from tests.helpers.store_factory import BANDS, make_store, pixel_centre
from transforms.learning import models
from transforms.storage import store


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    return make_store(str(tmp_path_factory.mktemp("stores") / "emb.zarr"))


def progress_lines(err: str, prog: str, verb: str) -> list[tuple[int, int]]:
    pattern = re.compile(
        rf"{prog}: progress: (\d+)/(\d+) chunks {verb} \(\d+%\)(, [\d.]+ MB/s)?, ETA .+"
    )
    lines = [line for line in err.splitlines() if "progress:" in line]
    assert lines and all(pattern.fullmatch(line) for line in lines), err
    return [tuple(map(int, pattern.fullmatch(line).groups()[:2])) for line in lines]


class _Watch:
    """stderr, noting for each progress line how many done markers are on disk as it is written
    (listed here with os.listdir), and letting a chunk write wait for the next line."""

    def __init__(self, stream, done_dir: str):
        self.stream, self.done_dir, self.seen = stream, done_dir, []
        self.printed = threading.Event()

    def write(self, text: str) -> int:
        if "progress:" in text:
            on_disk = len(os.listdir(self.done_dir)) if os.path.isdir(self.done_dir) else 0
            self.seen.append((text.strip(), on_disk))
            self.printed.set()
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def test_classify_prints_progress_up_to_the_planned_count(
    embeddings, tmp_path, capsys, monkeypatch
):
    from transforms.storage import zarr_direct

    monkeypatch.setenv("EFM_PROGRESS_INTERVAL", "0.05")
    valid = embeddings.valid[0]
    rows, cols = np.nonzero(valid)
    model = KNeighborsClassifier(3).fit(
        embeddings.values[0, rows[:200], cols[:200]],
        embeddings.labels[0, rows[:200], cols[:200]].astype(str),
    )
    model_path = str(tmp_path / "knn.skops")
    models.save_model(
        model, model_path, {"kind": "classifier", "classes": model.classes_, "bands": list(BANDS)}
    )
    output = str(tmp_path / "classes.zarr")
    watch = _Watch(sys.stderr, os.path.join(output, ".efm", "done"))
    monkeypatch.setattr(sys, "stderr", watch)
    write = zarr_direct.ChunkWriter.write

    def write_after_a_line(self, *args, **kwargs):
        """Each chunk is written only after a progress line has been printed since the last one:
        so the lines between the first and the last are there whatever the machine's speed."""
        watch.printed.clear()
        watch.printed.wait(3)  # a bound: a run without lines along the way fails below
        return write(self, *args, **kwargs)

    monkeypatch.setattr(zarr_direct.ChunkWriter, "write", write_after_a_line)
    assert (
        classify.run(
            [
                "--embeddings",
                embeddings.path,
                "--model",
                model_path,
                "--output",
                output,
                "--runner=FnApiRunner",
            ]
        )
        == 0
    )
    counts = progress_lines(capsys.readouterr().err, "efm classify", "written")
    planned = 2 * 3 * 3  # 2 years x (300/128 -> 3) x (260/128 -> 3) chunks
    assert counts[-1] == (planned, planned) == (len(store.done_markers(output)), planned)
    assert len(watch.seen) == len(counts)
    # each line counts what was on disk: at least the markers there at the line before it,
    # at most those there as it is printed
    before = 0
    for (done, total), (line, on_disk) in zip(counts, watch.seen):
        assert total == planned and before <= done <= on_disk, (line, before, on_disk)
        before = on_disk
    assert any(0 < done < planned for done, _ in counts), counts  # lines along the way
    assert [c for c, _ in counts] == sorted(c for c, _ in counts)  # never backwards


def test_sample_prints_progress_in_chunks_with_points(embeddings, tmp_path, capsys, monkeypatch):
    import pyproj

    monkeypatch.setenv("EFM_PROGRESS_INTERVAL", "0.1")
    to_lonlat = pyproj.Transformer.from_crs(embeddings.grid.crs, "EPSG:4326", always_xy=True)
    pixels = [
        (5, 5),
        (6, 7),
        (140, 10),
        (290, 250),
        (200, 200),
    ]  # chunks (0,0) twice, (1,0), (2,1), (1,1)
    lines = ["lon,lat,label"] + [
        ",".join(map(str, to_lonlat.transform(*pixel_centre(embeddings, r, c)))) + ",a"
        for r, c in pixels
    ]
    points = tmp_path / "points.csv"
    points.write_text("\n".join(lines) + "\n")
    output = str(tmp_path / "samples.parquet")
    assert (
        sample.run(
            [
                "--embeddings",
                embeddings.path,
                "--points",
                str(points),
                "--label-column",
                "label",
                "--output",
                output,
                "--runner=FnApiRunner",
            ]
        )
        == 0
    )
    counts = progress_lines(capsys.readouterr().err, "efm sample", "sampled")
    assert counts[-1] == (4, 4)


@pytest.mark.parametrize("flag", ["--dry-run", "--dry_run", "--dry_run=true"])
def test_commands_without_a_dry_run_refuse_the_flag(embeddings, tmp_path, capsys, flag):
    """Beam would take it as its own test option and run the whole job: refused, nothing written."""
    output = tmp_path / "k.skops"
    code = cluster.run(
        ["--embeddings", embeddings.path, "--output", str(output), flag, "--runner=FnApiRunner"]
    )
    err = capsys.readouterr().err.strip()
    assert (
        code == 2
        and err.startswith(
            f"efm cluster: error: {flag.split('=')[0]}: `efm cluster` has no dry run"
        )
        and "\n" not in err
    )
    assert not output.exists()


@pytest.mark.parametrize("flag", ["--dry_run", "--dry_run=true"])
def test_beams_dry_run_is_refused_where_the_command_has_its_own(embeddings, tmp_path, capsys, flag):
    """`efm classify --dry-run` plans; Beam's `--dry_run` would run the job: refused, nothing written."""
    output = tmp_path / "classes.zarr"
    code = classify.run(
        [
            "--embeddings",
            embeddings.path,
            "--model",
            str(tmp_path / "m.skops"),
            "--output",
            str(output),
            flag,
            "--runner=FnApiRunner",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("efm classify: error: --dry_run: Beam's --dry_run test option"), err
    assert not output.exists()
