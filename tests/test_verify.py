"""Damaged stores (issue 16): `efm verify`, readers that refuse holes, `efm extract --resume --repair`.

The store is made by the real `efm extract --source cog` on the offline sample mirror. Damage is
done by hand (a chunk file deleted, another truncated, a marker left as older versions wrote it);
the references are the files' own bytes and mtimes taken before the damage, and the arrays
xarray decodes from the pristine store.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import xarray as xr

from pipelines import cli
from sample_data import embedding as sample_embedding
from sample_data import generate as sample_data
from tests.helpers.runners import FNAPI
from transforms.core.errors import InputError
from transforms.storage import store

# shard files of the 2-year, 2 x 3-chunk store ((time, band, y, x): year 0 row 1 col 1, year 1 row 0 col 2)
DELETED, TRUNCATED = "c/0/0/1/1", "c/1/0/0/2"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return sample_data.generate(
        str(tmp_path_factory.mktemp("sample")), sample_data.SampleSpec(**sample_data.SMALL)
    )


def extract_argv(data, output, *extra):
    return [
        "extract",
        "--source",
        "cog",
        "--cog-root",
        data.mirror,
        f"--bbox={','.join(repr(v) for v in data.bbox)}",
        "--crs",
        "EPSG:32610",
        "--years",
        "2022,2023",
        "--output",
        str(output),
        "--tuning",
        "chunk_size=128",
        "--dtype",
        "int8",
        *extra,
        *FNAPI,
    ]


@pytest.fixture(scope="module")
def pristine(mirror, tmp_path_factory):
    path = tmp_path_factory.mktemp("pristine") / "s.zarr"
    assert cli.main(extract_argv(mirror, path)) == 0
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from sklearn.cluster import KMeans

    from transforms.learning import models

    rng = np.random.default_rng(0)
    km = KMeans(2, n_init=1, random_state=0).fit(rng.normal(size=(50, 64)).astype(np.float32))
    path = str(tmp_path_factory.mktemp("model") / "km.skops")
    models.save_model(
        km,
        path,
        {"kind": "clusterer", "classes": [0, 1], "bands": list(sample_embedding.BANDS)},
    )
    return path


def copy(pristine, tmp_path, name="s.zarr"):
    path = tmp_path / name
    shutil.copytree(pristine, path, copy_function=shutil.copy2)
    return path


def damage(path):
    os.remove(path / "embedding" / DELETED)
    with open(path / "embedding" / TRUNCATED, "r+b") as f:
        f.truncate(1000)


def files(path) -> dict[str, tuple[bytes, int]]:
    folder = path / "embedding"
    return {
        str(f.relative_to(folder)): (f.read_bytes(), os.stat(f).st_mtime_ns)
        for f in folder.rglob("*")
        if f.is_file() and f.name != "zarr.json"
    }


def summary(out: str) -> dict[str, str]:
    """The rows of a command's summary (`  name   value`)."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("  ") and "  " in line.strip():
            name, value = line.strip().split("  ", 1)
            rows[name] = value.strip()
    return rows


def empty_markers(path):
    """What a store written before marker records looks like: every marker an empty file."""
    folder = path / ".efm" / "done"
    for name in os.listdir(folder):
        (folder / name).write_bytes(b"")


def test_verify_names_a_deleted_and_a_truncated_chunk(pristine, tmp_path, capsys):
    assert cli.main(["verify", str(pristine)]) == 0
    out = capsys.readouterr().out
    assert "is sound" in out and "chunks missing or damaged" in out
    path = copy(pristine, tmp_path)
    damage(path)
    assert cli.main(["verify", str(path)]) == 1
    captured = capsys.readouterr()
    lines = captured.out + captured.err
    assert f"embedding/{DELETED}: missing" in lines
    assert f"embedding/{TRUNCATED}: altered (1000 bytes" in lines
    assert f"efm extract --resume --repair --output {path}" in captured.err


def test_verify_decodes_chunks_of_a_store_without_records(pristine, tmp_path, capsys):
    """Empty markers (stores written before records): a truncated chunk is corrupt (it does not decode);
    a deleted one cannot be told from a chunk of no data, and is reported as such, not as damage."""
    path = copy(pristine, tmp_path)
    damage(path)
    empty_markers(path)
    assert cli.main(["verify", str(path)]) == 1
    captured = capsys.readouterr()
    assert f"embedding/{TRUNCATED}: corrupt (does not decode" in captured.out + captured.err
    assert f"embedding/{DELETED}" not in captured.out + captured.err
    assert summary(captured.out)["chunks absent, no record"].startswith("1 ")


def test_store_with_chunks_of_no_data_verifies_clean(tmp_path, capsys, model):
    """Chunks of fill values have no file, on purpose: their markers say so; a deleted chunk next to them is caught."""
    from tests.helpers.store_factory import BANDS
    from transforms.core.chunks import ChunkSpec, chunk_dataset
    from transforms.core.grid import Grid, tile_windows

    grid = Grid(crs="EPSG:32631", scale=10.0, x0=500_000.0, y0=5_000_000.0, width=40, height=40)
    template = store.embedding_template(grid, [2022], BANDS, "float32", 16, {"source": "test"})
    path = tmp_path / "fill.zarr"
    store.setup(str(path), template)
    fn = store._WriteChunkFn(str(path), template)  # the pipeline's own writer
    fn.setup()
    rng = np.random.default_rng(1)
    windows = list(tile_windows(grid.height, grid.width, 16, 16))
    for i, w in enumerate(windows):
        spec = ChunkSpec(i, 0, 2022, w)
        values = rng.normal(size=(w.rows, w.cols, len(BANDS))).astype(np.float32)
        if i % 3 == 0:
            values[:] = np.nan  # a chunk of no data: no file
        list(fn.process((spec.key, chunk_dataset(grid, (2022,), BANDS, spec, values))))
    store.finalize(str(path), [ChunkSpec(i, 0, 2022, w).marker for i, w in enumerate(windows)])
    present = sorted(files(path))  # shard files
    assert len(present) == len(windows) - len(range(0, len(windows), 3))  # fill chunks: no file
    assert cli.main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "is sound" in out
    assert summary(out)["chunks of no data (recorded, no file)"] == "3"
    # classify reads it without complaint, and counts no missing chunk
    output = tmp_path / "classes.zarr"
    argv = ["classify", "--embeddings", str(path), "--model", model, "--output", str(output)]
    assert cli.main(argv + FNAPI) == 0
    rows = summary(capsys.readouterr().out)
    assert rows["input chunks missing"] == "0"
    fill_pixels = sum(w.rows * w.cols for i, w in enumerate(windows) if i % 3 == 0)
    assert int(rows["pixels without data (left as fill)"]) == fill_pixels  # the fill chunks'
    # ... and one real chunk deleted beside the fill chunks is a hole
    os.remove(path / "embedding" / present[0])
    assert cli.main(["verify", str(path)]) == 1
    assert f"embedding/{present[0]}: missing" in capsys.readouterr().out


def test_classify_refuses_a_store_with_a_deleted_chunk(pristine, tmp_path, capsys, model):
    path = copy(pristine, tmp_path)
    os.remove(path / "embedding" / DELETED)
    output = tmp_path / "classes.zarr"
    argv = ["classify", "--embeddings", str(path), "--model", model, "--output", str(output)]
    assert cli.main(argv + FNAPI) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"embedding/{DELETED}" in err and "missing" in err
    assert f"efm extract --resume --repair --output {path}" in err
    assert not output.exists()  # refused before anything was written


def test_classify_names_a_chunk_that_does_not_decode(pristine, tmp_path, capsys, model):
    """A store without records passes the listing check; the reader catches the chunk where it reads it."""
    path = copy(pristine, tmp_path)
    with open(path / "embedding" / TRUNCATED, "r+b") as f:
        f.truncate(1000)
    empty_markers(path)
    output = tmp_path / "classes.zarr"
    argv = ["classify", "--embeddings", str(path), "--model", model, "--output", str(output)]
    assert cli.main(argv + FNAPI) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"embedding/{TRUNCATED} is corrupt" in err and "unexpected" not in err
    assert f"efm extract --resume --repair --output {path}" in err


def test_store_reader_raises_on_a_hole_never_fills(pristine, tmp_path):
    from transforms.core.grid import Window
    from transforms.storage import integrity
    from transforms.storage.readers import StoreReader

    path = copy(pristine, tmp_path)
    os.remove(path / "embedding" / DELETED)
    reader = StoreReader(str(path))
    with pytest.raises(integrity.DamagedStoreError, match=f"embedding/{DELETED} is missing"):
        reader.read(0, Window(128, 128, 128, 128))  # the whole chunk
    with pytest.raises(integrity.DamagedStoreError, match=f"embedding/{DELETED} is missing"):
        reader.read(0, Window(120, 120, 20, 20))  # a window across it (read through zarr)
    reader.read(0, Window(0, 0, 128, 128))  # the others read as before


def test_a_damaged_chunk_read_ahead_fails_as_a_direct_read(
    pristine, tmp_path, capsys, model, monkeypatch
):
    """The truncated shard is read ahead (year 1, after other chunks): the run stops with the same
    one line, and the same exit, as when every chunk is read in turn."""
    from transforms.products import chunk_map

    path = copy(pristine, tmp_path)
    with open(path / "embedding" / TRUNCATED, "r+b") as f:
        f.truncate(1000)
    empty_markers(path)
    lines = {}
    for depth in (0, 1, 2):
        monkeypatch.setattr(chunk_map, "READ_AHEAD", depth)
        output = tmp_path / f"classes-{depth}.zarr"
        argv = ["classify", "--embeddings", str(path), "--model", model, "--output", str(output)]
        assert cli.main(argv + FNAPI) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        line = re.sub(r"efm-classify-[0-9T-]+\.log", "LOG", err[0]).replace(str(output), "OUTPUT")
        # blosc's return code for the garbage bytes is 0 or -1 from run to run (its threads)
        lines[depth] = re.sub(r"decompression: -?[0-9]+", "decompression: N", line)
    assert f"embedding/{TRUNCATED} is corrupt" in lines[1]
    assert lines[0] == lines[1] == lines[2]


def test_points_read_from_inner_chunks_refuse_a_hole(pristine, tmp_path):
    """Reference points (efm similarity) are read from the inner chunks under them: a shard
    marked written and gone, or one that does not decode, stops the read naming it."""
    from transforms.storage import integrity
    from transforms.storage.readers import StoreReader

    path = copy(pristine, tmp_path)
    damage(path)
    reader = StoreReader(str(path))
    with pytest.raises(integrity.DamagedStoreError, match=f"embedding/{DELETED} is missing"):
        reader.read_points(0, np.array([5, 130]), np.array([5, 130]))  # shard (1, 1) of year 0
    with pytest.raises(integrity.DamagedStoreError, match=f"embedding/{TRUNCATED} is corrupt"):
        reader.read_points(1, np.array([3]), np.array([260]))  # shard (0, 2) of year 1
    assert reader.read_points(0, np.array([5]), np.array([5])).shape == (1, 64)


def test_api_open_embeddings_refuses_a_damaged_store(pristine, tmp_path):
    import efm

    path = copy(pristine, tmp_path)
    damage(path)
    with pytest.raises(InputError, match=f"embedding/{DELETED}"):
        efm.open_embeddings(path)


def test_resume_without_repair_says_to_add_it(mirror, pristine, tmp_path, capsys):
    path = copy(pristine, tmp_path)
    damage(path)
    assert cli.main(extract_argv(mirror, path, "--resume")) == 2
    err = capsys.readouterr().err
    assert "--repair" in err and f"embedding/{DELETED}" in err
    assert cli.main(extract_argv(mirror, path, "--repair")) == 2  # --repair alone: needs --resume
    assert "--resume" in capsys.readouterr().err


def test_resume_repair_refetches_just_the_damaged_chunks(mirror, pristine, tmp_path, capsys):
    path = copy(pristine, tmp_path)
    before = files(path)
    reference = xr.open_zarr(str(pristine), mask_and_scale=False)["embedding"].values
    damage(path)
    assert cli.main(extract_argv(mirror, path, "--resume", "--repair")) == 0
    out = capsys.readouterr().out
    assert "chunks repaired" in out
    after = files(path)
    assert set(after) == set(before)
    for name in (DELETED, TRUNCATED):  # the original bytes back
        assert after[name][0] == before[name][0], name
    for name in set(before) - {DELETED, TRUNCATED}:  # every other chunk file untouched
        assert after[name] == before[name], name
    ds = xr.open_zarr(str(path), mask_and_scale=False)
    assert ds.attrs["efm_status"] == "complete"
    np.testing.assert_array_equal(ds["embedding"].values, reference)
    assert cli.main(["verify", str(path)]) == 0


def test_product_store_verify_names_its_repair(pristine, tmp_path, capsys, model):
    output = tmp_path / "classes.zarr"
    argv = ["classify", "--embeddings", str(pristine), "--model", model, "--output", str(output)]
    assert cli.main(argv + FNAPI) == 0
    capsys.readouterr()
    assert cli.main(["verify", str(output)]) == 0
    capsys.readouterr()
    chunk = sorted(
        str(f.relative_to(output / "class")) for f in (output / "class").rglob("c/*/*/*")
    )[0]  # a shard file, c/<time>/<row>/<col>
    os.remove(output / "class" / chunk)
    assert cli.main(["verify", str(output)]) == 1
    captured = capsys.readouterr()
    assert f"class/{chunk}: missing" in captured.out
    assert "efm classify" in captured.err and "--overwrite" in captured.err


def test_marker_records_the_chunk_file(pristine):
    """Each marker records its chunk file's size and crc32, checked here against the file itself."""
    import zlib

    name = sorted(os.listdir(pristine / ".efm" / "done"))[0]
    record = json.loads((pristine / ".efm" / "done" / name).read_bytes())
    t, row, col = (int(v) for v in name.split("."))
    key = f"embedding/c/{t}/0/{row // 128}/{col // 128}"  # (time, band, y, x) shards
    data = (pristine / key).read_bytes()
    assert record["files"] == {key: {"bytes": len(data), "crc32": zlib.crc32(data)}}


def test_verify_refuses_what_is_not_a_store(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path / "nothing.zarr")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "folder").mkdir()
    assert cli.main(["verify", str(tmp_path / "folder")]) == 2
    assert "not an efm Zarr store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["verify", "--help"])
    assert exc.value.code == 0
    assert "Exit 0" in capsys.readouterr().out
