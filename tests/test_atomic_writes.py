"""A full disk (ENOSPC) at any write step leaves the old product intact, or nothing, never a file
that blocks the re-run; and the re-run the error line suggests succeeds.

`DiskFull` raises ENOSPC at the n-th write / fsync / rename / link that touches the product's
files (the product, its sidecar, and their temporary names), whatever writes them: `os.write`
on a descriptor, or a file object from `open` (a writer that fills part of the file and then
hits the full disk). `tiny_disk` is a real full disk: a small tmpfs (needs mount; skipped
where the sandbox refuses it).
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import shlex
import subprocess

import numpy as np
import pandas as pd
import pytest

from label_page import points as points_mod
from pipelines import cluster as cluster_cli
from pipelines import export as export_cli
from pipelines import sample as sample_cli
from pipelines import train as train_cli
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import BANDS, make_store
from transforms.core import atomic
from transforms.learning import models, sample_table
from transforms.storage import kinds, outputs

NAMES = np.array(["water", "forest", "crop"])


def _enospc():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullFile:
    """A file object that takes `budget` bytes, then fails as a full disk does."""

    def __init__(self, f, budget: int):
        self._f, self._budget = f, budget

    def write(self, data):
        part = data[: self._budget]
        if part:
            self._f.write(part)
        self._budget -= len(part)
        if len(part) < len(data):
            raise _enospc()
        return len(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class DiskFull:
    """ENOSPC at the n-th `step` ("write", "fsync", "replace", "link") on the files of `names` in
    `folder` (and their temporaries, `.<name>…`)."""

    def __init__(self, monkeypatch, folder, names, step: str, n: int = 1, budget: int = 64):
        self.folder = os.path.realpath(str(folder))
        self.names = [os.path.basename(str(n)) for n in names]
        self.step, self.n, self.budget = step, n, budget
        self.seen = 0
        self.fired = False
        self.fds: dict[int, int] = {}  # fd -> bytes it may still take (None: unlimited)
        real_open, real_os_open = builtins.open, os.open
        real_write, real_fsync = os.write, os.fsync
        real_replace, real_link = os.replace, os.link

        def hit() -> bool:
            self.seen += 1
            if self.seen == self.n:
                self.fired = True
                return True
            return False

        def fake_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if (
                step == "write"
                and isinstance(file, (str, os.PathLike))
                and any(c in mode for c in "wax+")
                and self.watched(file)
                and hit()
            ):
                return _FullFile(f, self.budget)
            return f

        def fake_os_open(path, flags, *args, **kwargs):
            fd = real_os_open(path, flags, *args, **kwargs)
            if self.watched(path) and not os.path.isdir(path):  # files, not a folder's fsync
                writing = flags & (os.O_WRONLY | os.O_RDWR)
                limited = step == "write" and writing and hit()
                self.fds[fd] = self.budget if limited else None
                if step == "fsync":
                    self.fds[fd] = None
            else:
                self.fds.pop(fd, None)
            return fd

        def fake_write(fd, data):
            left = self.fds.get(fd)
            if left is not None:
                if left <= 0:
                    raise _enospc()
                n = real_write(fd, bytes(data[:left]))
                self.fds[fd] = left - n
                return n
            return real_write(fd, data)

        def fake_fsync(fd):
            if step == "fsync" and fd in self.fds and hit():
                raise _enospc()
            return real_fsync(fd)

        def fake_replace(src, dst, *args, **kwargs):
            if step == "replace" and (self.watched(src) or self.watched(dst)) and hit():
                raise _enospc()
            return real_replace(src, dst, *args, **kwargs)

        def fake_link(src, dst, *args, **kwargs):
            if step == "link" and self.watched(src) and hit():
                raise _enospc()
            return real_link(src, dst, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(os, "write", fake_write)
        monkeypatch.setattr(os, "fsync", fake_fsync)
        monkeypatch.setattr(os, "replace", fake_replace)
        monkeypatch.setattr(os, "link", fake_link)

    def watched(self, path) -> bool:
        path = os.fspath(path)
        if isinstance(path, bytes):
            return False
        if os.path.realpath(os.path.dirname(os.path.abspath(path))) != self.folder:
            return False
        base = os.path.basename(path)
        return any(base.startswith(n) or base.startswith("." + n) for n in self.names)


def snapshot(folder) -> dict[str, str]:
    """Every file in `folder` -> its sha256."""
    return {
        name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
        for name in sorted(os.listdir(folder))
        if os.path.isfile(os.path.join(folder, name))
    }


def temps(folder) -> list[str]:
    return [n for n in os.listdir(folder) if ".efm-" in n]


def suggested(err: str, prog: str) -> list[str]:
    """The command after `re-run: ` on the error line, as argv for `prog`'s run()."""
    line = next(x for x in err.splitlines() if x.startswith(f"{prog}: error:"))
    assert "re-run: " in line, line
    words = shlex.split(line.split("re-run: ", 1)[1])
    assert words[: len(prog.split())] == prog.split()
    return words[len(prog.split()) :]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    rng = np.random.default_rng(3)
    n = 60
    labels = NAMES[np.arange(n) % 3]
    values = rng.normal(size=(n, len(BANDS))).astype(np.float32) + (np.arange(n) % 3)[:, None]
    frame = pd.DataFrame(values, columns=list(BANDS))
    frame.insert(0, "label", labels)
    frame.insert(0, "point_id", np.arange(n))
    path = tmp_path_factory.mktemp("table") / "samples.parquet"
    frame.to_parquet(path)
    return str(path)


@pytest.fixture(autouse=True)
def _logs(tmp_path, monkeypatch):
    monkeypatch.setenv("EFM_LOG_DIR", str(tmp_path / "logs"))


@pytest.fixture
def tiny_disk(tmp_path):
    """A real small disk (tmpfs); `fill(free)` leaves only `free` bytes on it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")

    def fill(free: int) -> None:
        stat = os.statvfs(disk)
        room = stat.f_bavail * stat.f_frsize - free
        if room > 0:
            with open(disk / ".filler", "wb") as f:
                f.write(b"\0" * room)

    try:
        yield disk, fill
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def train_argv(table: str, model: str, *extra: str) -> list[str]:
    return [
        "--samples",
        table,
        "--classifier",
        "knn",
        "--tuning",
        "folds=2",
        "--output",
        model,
        *extra,
    ]


def load(model: str):
    return models.load_model(model, sha256=models.read_sidecar(model)["sha256"])


# ---------------------------------------------------------------- train (.skops and .pkl)

STEPS = [("write", 1), ("write", 2), ("fsync", 1), ("fsync", 2), ("link", 1), ("replace", 1)]
STEPS += [("replace", 2)]  # the sidecar's rename, after the model's


@pytest.mark.parametrize("step, n", STEPS, ids=[f"{s}{n}" for s, n in STEPS])
@pytest.mark.parametrize("suffix", [".skops", ".pkl"])
def test_train_overwrite_on_a_full_disk_keeps_the_old_pair(
    table, tmp_path, capsys, monkeypatch, suffix, step, n
):
    out = tmp_path / "out"
    out.mkdir()
    model = str(out / f"m{suffix}")
    assert train_cli.run(train_argv(table, model)) == 0
    before = snapshot(out)
    capsys.readouterr()
    with monkeypatch.context() as m:
        full = DiskFull(m, out, [os.path.basename(model)], step, n)
        code = train_cli.run(train_argv(table, model, "--param", "n_neighbors=3", "--overwrite"))
    err = capsys.readouterr().err
    assert full.fired and code == 1, err
    assert "No space left on device" in err
    assert snapshot(out) == before  # the old pair, byte for byte, and no temporary file
    load(model)  # and classify's loader still takes it
    assert train_cli.run(suggested(err, "efm train")) == 0  # the suggested re-run is accepted
    assert load(model).model.n_neighbors == 3 and not temps(out)


@pytest.mark.parametrize("step, n", STEPS[:4] + [("replace", 1), ("replace", 2)])
def test_a_new_model_on_a_full_disk_leaves_nothing(table, tmp_path, capsys, monkeypatch, step, n):
    model = str(tmp_path / "m.skops")
    with monkeypatch.context() as m:
        full = DiskFull(m, tmp_path, ["m.skops"], step, n)
        code = train_cli.run(train_argv(table, model))
    err = capsys.readouterr().err
    assert full.fired and code == 1, err
    assert not [n for n in os.listdir(tmp_path) if n.startswith(("m.", ".m."))]
    assert train_cli.run(suggested(err, "efm train")) == 0
    load(model)


def test_without_hard_links_a_failed_pair_leaves_nothing(table, tmp_path, capsys, monkeypatch):
    """A filesystem without hard links (EPERM): the old model cannot be kept aside, so a failed
    sidecar rename removes the half-replaced pair rather than leave a mismatched one."""
    model = str(tmp_path / "m.skops")
    assert train_cli.run(train_argv(table, model)) == 0
    capsys.readouterr()

    def no_link(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM), src)

    with monkeypatch.context() as m:
        m.setattr(os, "link", no_link)
        full = DiskFull(m, tmp_path, ["m.skops"], "replace", 2)
        assert train_cli.run(train_argv(table, model, "--overwrite")) == 1
    err = capsys.readouterr().err
    assert full.fired and not [n for n in os.listdir(tmp_path) if n.startswith(("m.", ".m."))]
    assert train_cli.run(suggested(err, "efm train")) == 0
    load(model)


def test_train_on_a_real_full_disk(table, tiny_disk, capsys):
    disk, fill = tiny_disk
    model = str(disk / "m.skops")
    assert train_cli.run(train_argv(table, model)) == 0
    before = {k: v for k, v in snapshot(disk).items()}
    fill(4096)
    capsys.readouterr()
    assert train_cli.run(train_argv(table, model, "--overwrite")) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "m.skops" in err
    after = snapshot(disk)
    after.pop(".filler")
    assert after == before
    load(model)
    os.remove(disk / ".filler")
    assert train_cli.run(suggested(err, "efm train")) == 0
    load(model)


def test_a_killed_replacement_between_the_renames_is_still_replaceable(table, tmp_path, capsys):
    """SIGKILL after the model's rename: the new model beside the old sidecar, the new sidecar
    still under its temporary name. The output check accepts it as efm's; --overwrite replaces it."""
    model = str(tmp_path / "m.skops")
    assert train_cli.run(train_argv(table, model)) == 0
    old_sidecar = open(model + ".json", "rb").read()
    assert train_cli.run(train_argv(table, model, "--param", "n_neighbors=2", "--overwrite")) == 0
    new_sidecar = open(model + ".json", "rb").read()
    # the state a kill leaves: new model, old sidecar, new sidecar pending
    open(model + ".json", "wb").write(old_sidecar)
    open(atomic.temp_name(model + ".json"), "wb").write(new_sidecar)
    assert outputs.check_output(model, "model", overwrite=True).kind == "model"
    assert train_cli.run(train_argv(table, model, "--overwrite")) == 0
    load(model)
    # a pending sidecar for another model proves nothing: still refused
    open(atomic.temp_name(model + ".json"), "wb").write(
        new_sidecar.replace(b'"sha256": "', b'"sha256": "0')
    )
    open(model + ".json", "wb").write(old_sidecar)
    with pytest.raises(Exception, match="not an efm model file"):
        outputs.check_output(model, "model", overwrite=True)


# ---------------------------------------------------------------- cluster


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    return make_store(str(root / "emb.zarr"), height=40, width=40, chunk_size=20, n_classes=3)


def cluster_argv(store, model, *extra):
    return [
        "--embeddings",
        store.path,
        "--clusters",
        "3",
        "--tuning",
        "sample_size=300",
        "--output",
        model,
        *FNAPI,
        *extra,
    ]


@pytest.mark.parametrize("step, n", [("write", 1), ("replace", 2)])
def test_cluster_on_a_full_disk(small_store, tmp_path, capsys, monkeypatch, step, n):
    out = tmp_path / "out"
    out.mkdir()
    model = str(out / "km.skops")
    assert cluster_cli.run(cluster_argv(small_store, model)) == 0
    before = snapshot(out)
    capsys.readouterr()
    with monkeypatch.context() as m:
        full = DiskFull(m, out, ["km.skops"], step, n)
        code = cluster_cli.run(
            cluster_argv(small_store, model, "--tuning", "seed=1", "--overwrite")
        )
    err = capsys.readouterr().err
    assert full.fired and code == 1, err
    assert snapshot(out) == before
    load(model)
    assert cluster_cli.run(suggested(err, "efm cluster")) == 0
    assert load(model).sidecar["params"]["seed"] == 1 and not temps(out)
    # a new path: nothing left, and the same command is accepted again
    fresh = str(out / "new.skops")
    with monkeypatch.context() as m:
        full = DiskFull(m, out, ["new.skops"], step, n)
        assert cluster_cli.run(cluster_argv(small_store, fresh)) == 1
    err = capsys.readouterr().err
    assert not [x for x in os.listdir(out) if "new.skops" in x]
    assert cluster_cli.run(suggested(err, "efm cluster")) == 0


# ---------------------------------------------------------------- export (GeoTIFF + PNG)


@pytest.fixture(scope="module")
def class_map(tmp_path_factory):
    from tests.helpers.class_store import make_class_store

    root = tmp_path_factory.mktemp("map")
    s = make_store(str(root / "emb.zarr"), height=300, width=260, chunk_size=128, years=(2021,))
    make_class_store(str(root / "classes.zarr"), s.path)
    return str(root / "classes.zarr")


def export_argv(classes, tif, *extra):
    return ["--input", classes, "--years", "2021", "--output", tif, "--png", *extra]


def _partial_cog(monkeypatch):
    """GDAL's COG writer filling part of its file, then the disk is full."""
    import rasterio.errors
    import rasterio.shutil

    def copy(src, dst, **kwargs):
        with builtins.open(dst, "wb") as f:
            f.write(b"II*\x00" + b"\x00" * 100)
        raise rasterio.errors.RasterioIOError("_tiffWriteProc: No space left on device")

    monkeypatch.setattr(rasterio.shutil, "copy", copy)


EXPORT_STEPS = [("tif", "cog"), ("tif", "fsync"), ("tif", "replace")]
EXPORT_STEPS += [("png", "write"), ("png", "fsync"), ("png", "replace")]


@pytest.mark.parametrize("failing, step", EXPORT_STEPS, ids=[f"{f}-{s}" for f, s in EXPORT_STEPS])
def test_export_on_a_full_disk(class_map, tmp_path, capsys, monkeypatch, failing, step):
    """The GeoTIFF fails (GDAL's writer half way, the flush, the rename), or the PNG does (the
    GeoTIFF is whole by then): the file that failed is the old one, byte for byte."""
    out = tmp_path / "out"
    out.mkdir()
    tif, png = str(out / "map.tif"), str(out / "map.png")
    assert export_cli.run(export_argv(class_map, tif)) == 0
    before = snapshot(out)
    capsys.readouterr()
    with monkeypatch.context() as m:
        if step == "cog":
            _partial_cog(m)
        else:
            full = DiskFull(m, out, [f"map.{failing}"], step)
        code = export_cli.run(
            export_argv(class_map, tif, "--tuning", "png_size=200", "--overwrite")
        )
    err = capsys.readouterr().err
    assert code == 1 and (step == "cog" or full.fired), err
    assert snapshot(out)[f"map.{failing}"] == before[f"map.{failing}"] and not temps(out)
    assert outputs.check_output(tif, "geotiff", overwrite=True).kind == "geotiff"
    assert outputs.check_output(png, "png", overwrite=True).kind == "png"
    assert export_cli.run(suggested(err, "efm export")) == 0
    assert not temps(out)


def test_export_of_a_new_file_on_a_full_disk_leaves_nothing(
    class_map, tmp_path, capsys, monkeypatch
):
    tif = str(tmp_path / "map.tif")
    with monkeypatch.context() as m:
        _partial_cog(m)
        assert export_cli.run(export_argv(class_map, tif)) == 1
    err = capsys.readouterr().err
    assert not [x for x in os.listdir(tmp_path) if "map" in x]
    assert export_cli.run(suggested(err, "efm export")) == 0


def test_export_on_a_real_full_disk(class_map, tiny_disk, capsys):
    disk, fill = tiny_disk
    tif = str(disk / "map.tif")
    assert export_cli.run(export_argv(class_map, tif)) == 0
    before = snapshot(disk)
    fill(8192)
    capsys.readouterr()
    assert export_cli.run(export_argv(class_map, tif, "--overwrite")) == 1
    err = capsys.readouterr().err
    after = snapshot(disk)
    after.pop(".filler")
    assert after == before, err
    os.remove(disk / ".filler")
    assert export_cli.run(suggested(err, "efm export")) == 0


# ---------------------------------------------------------------- sample (Parquet)


@pytest.fixture(scope="module")
def sample_inputs(tmp_path_factory, small_store):
    root = tmp_path_factory.mktemp("points")
    s = small_store
    rows, cols = np.arange(0, 40, 3), np.arange(0, 40, 3)[::-1]
    x = s.grid.x0 + (cols + 0.5) * s.grid.scale
    y = s.grid.y0 - (rows + 0.5) * s.grid.scale
    path = root / "points.csv"
    pd.DataFrame({"x": x, "y": y, "label": NAMES[rows % 3]}).to_csv(path, index=False)
    return s, str(path)


def sample_argv(s, points, output, *extra):
    return [
        "--embeddings",
        s.path,
        "--points",
        points,
        "--tuning",
        f"points_crs={s.grid.crs}",
        "--label-column",
        "label",
        "--output",
        output,
        *FNAPI,
        *extra,
    ]


@pytest.mark.parametrize("step, n", [("write", 1), ("fsync", 1), ("replace", 1)])
def test_sample_on_a_full_disk(sample_inputs, tmp_path, capsys, monkeypatch, step, n):
    s, points = sample_inputs
    out = tmp_path / "out"
    out.mkdir()
    table = str(out / "samples.parquet")
    assert sample_cli.run(sample_argv(s, points, table)) == 0
    before = snapshot(out)
    capsys.readouterr()
    with monkeypatch.context() as m:
        full = DiskFull(m, out, ["samples.parquet"], step, n)
        code = sample_cli.run(sample_argv(s, points, table, "--years", "2021", "--overwrite"))
    err = capsys.readouterr().err
    assert full.fired and code == 1, err
    assert snapshot(out) == before and not temps(out)
    assert sample_table.read_table(table).num_rows > 0  # the old table reads
    assert sample_cli.run(suggested(err, "efm sample")) == 0
    assert set(sample_table.read_table(table).column("year").to_pylist()) == {2021}
    # a new path: nothing left but the marked parts folder (the re-run clears it)
    fresh = str(out / "new.parquet")
    with monkeypatch.context() as m:
        DiskFull(m, out, ["new.parquet"], step, n)
        assert sample_cli.run(sample_argv(s, points, fresh)) == 1
    err = capsys.readouterr().err
    assert [x for x in os.listdir(out) if "new." in x] == ["new.parquet.parts"]
    assert sample_cli.run(suggested(err, "efm sample")) == 0


def test_sample_on_a_real_full_disk(sample_inputs, tiny_disk, capsys):
    s, points = sample_inputs
    disk, fill = tiny_disk
    table = str(disk / "samples.parquet")
    assert sample_cli.run(sample_argv(s, points, table)) == 0
    before = snapshot(disk)
    fill(2048)
    capsys.readouterr()
    assert sample_cli.run(sample_argv(s, points, table, "--overwrite")) == 1
    err = capsys.readouterr().err
    after = snapshot(disk)
    after.pop(".filler")
    assert {k: v for k, v in after.items()} == before, err
    assert sample_table.read_table(table).num_rows > 0
    os.remove(disk / ".filler")
    assert sample_cli.run(suggested(err, "efm sample")) == 0


# ---------------------------------------------------------------- label's points file


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_saving_points_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch, step):
    path = str(tmp_path / "points.geojson")
    old = {"type": "FeatureCollection", kinds.PRODUCT_ATTR: "points", "features": []}
    points_mod.write(path, old)
    before = open(path, "rb").read()
    new = {**old, "features": [{"type": "Feature", "properties": {"label": "x" * 500}}]}
    with monkeypatch.context() as m:
        full = DiskFull(m, tmp_path, ["points.geojson"], step)
        with pytest.raises(OSError) as caught:
            points_mod.write(path, new)
    assert full.fired and caught.value.errno == errno.ENOSPC and caught.value.filename == path
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["points.geojson"]
    assert outputs.check_output(path, "points", overwrite=True).kind == "points"
    points_mod.write(path, new)
    assert json.loads(open(path).read()) == new


# ---------------------------------------------------------------- folders: leftovers of a killed write


def test_a_killed_writes_temporary_file_does_not_block_a_folder_overwrite(tmp_path):
    demo = tmp_path / "demo"
    outputs.mark_folder(str(demo), "demo")
    (demo / "demo.log").write_text("log\n")
    (demo / ".model.skops.efm-tmp-0123456789ab").write_bytes(b"partial")
    found = outputs.check_output(str(demo), "demo", overwrite=True)
    assert not found.foreign
    outputs.remove(str(demo), "demo", found=found)
    assert not demo.exists()
    # a file that merely looks similar is still foreign
    outputs.mark_folder(str(demo), "demo")
    (demo / ".model.skops.efm-tmp-mine").write_bytes(b"user's")
    with pytest.raises(Exception, match="did not write"):
        outputs.check_output(str(demo), "demo", overwrite=True)


# ---------------------------------------------------------------- gs://: one whole upload per object


def test_a_model_pair_on_gcs_is_replaced_whole_or_not_at_all(
    table, gcs, gcs_bucket, capsys, monkeypatch
):
    """Each object is one PUT; when the sidecar's PUT fails, the old model is copied back."""
    import fsspec

    model = f"{gcs_bucket}/m.skops"
    assert train_cli.run(train_argv(table, model)) == 0
    fs, key = gcs.fs, model.removeprefix("gs://")
    before = {p: fs.cat(p) for p in fs.find(gcs_bucket.removeprefix("gs://"))}
    used = fsspec.core.url_to_fs(model)[0]  # the (cached) instance efm writes through
    real = used.pipe_file

    def failing(path, data, *args, **kwargs):
        if path.endswith(".json"):
            raise OSError(errno.EIO, "the upload broke", path)
        return real(path, data, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(used, "pipe_file", failing)
        code = train_cli.run(train_argv(table, model, "--param", "n_neighbors=3", "--overwrite"))
    err = capsys.readouterr().err
    assert code == 1, err
    fs.invalidate_cache()
    assert {p: fs.cat(p) for p in fs.find(gcs_bucket.removeprefix("gs://"))} == before
    load(model)
    assert train_cli.run(suggested(err, "efm train")) == 0
    assert load(model).model.n_neighbors == 3
    assert sorted(fs.find(gcs_bucket.removeprefix("gs://"))) == sorted([key, key + ".json"])


# ---------------------------------------------------------------- through a symbolic link


def test_a_model_through_a_link_is_replaced_where_it_is(table, tmp_path):
    """As a store through a link (tests/test_overwrite_links.py): the product the link points to
    is replaced, its sidecar beside it, and the link stays a link."""
    real, elsewhere = tmp_path / "real", tmp_path / "elsewhere"
    real.mkdir()
    elsewhere.mkdir()
    target = str(real / "m.skops")
    assert train_cli.run(train_argv(table, target)) == 0
    link = elsewhere / "link.skops"
    os.symlink(target, link)
    code = train_cli.run(train_argv(table, str(link), "--param", "n_neighbors=3", "--overwrite"))
    assert code == 0
    assert os.path.islink(link) and os.readlink(link) == target
    assert sorted(os.listdir(elsewhere)) == ["link.skops"]  # no sidecar beside the link
    assert load(target).model.n_neighbors == 3 and not temps(real)


def test_an_export_through_a_link_replaces_the_file_it_points_to(class_map, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    target = str(real / "map.tif")
    assert export_cli.run(export_argv(class_map, target)) == 0
    before = os.stat(target).st_ino
    link = tmp_path / "link.tif"
    os.symlink(target, link)
    assert (
        export_cli.run(export_argv(class_map, str(link), "--tuning", "png_size=100", "--overwrite"))
        == 0
    )
    assert os.path.islink(link) and os.readlink(link) == target
    assert os.stat(target).st_ino != before and not temps(real)  # renamed into place there
