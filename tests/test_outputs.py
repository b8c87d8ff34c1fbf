"""Nothing is lost to a wrong flag: every command that writes replaces only what efm wrote.

For each writing command: a folder or file that is not an efm product, a product of another
kind, a bucket root, the output being / holding / lying inside an input are refused with one
line and exit status 2, and the victim is byte-for-byte untouched; the command's own previous
output is replaced with --overwrite (and refused without it).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import pytest

from pipelines import classify, demo, make_sample_data
from tests.helpers.product_world import MARKER_FILE, RUN, World, argv, call, make_world
from tests.helpers.runners import FNAPI
from tests.helpers.store_files import snapshot

SUFFIX = {
    "extract": ".zarr",
    "classify": ".zarr",
    "sample": ".parquet",
    "train": ".skops",
    "cluster": ".skops",
    "export": ".tif",
    "make-sample-data": "",
    "demo": "",
}
COMMANDS = list(RUN)
PARTS_MARKER = ".efm-parts"  # transforms.PARTS_MARKER


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """Every kind of efm product, each made by its own command on the offline sample data."""
    return make_world(tmp_path_factory.mktemp("world"))


def copy(src, dst) -> str:
    shutil.copytree(src, dst) if os.path.isdir(src) else shutil.copyfile(src, dst)
    return str(dst)


def assert_refused(cmd: str, code: int, err: str, *fragments):
    assert code == 2, err
    assert err.startswith(f"efm {cmd}: error: --output: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, err


# ---------------------------------------------------------------- not ours: refused, untouched


@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("flag", [[], ["--overwrite"]])
def test_a_folder_that_is_not_efms_is_refused_and_untouched(world, tmp_path, capsys, cmd, flag):
    victim = tmp_path / f"thesis{SUFFIX[cmd]}"
    (victim / "chapters").mkdir(parents=True)
    (victim / "notes.txt").write_text("years of work")
    (victim / "chapters" / "one.tex").write_bytes(b"\\chapter{One}")
    before = snapshot(victim)
    code, err = call(cmd, argv(cmd, world, victim, *flag), capsys)
    assert_refused(cmd, code, err, "not an efm", "choose another path")
    assert (
        "pass --overwrite" not in err and "--resume" not in err
    )  # no advice that would destroy it
    assert snapshot(victim) == before


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_file_that_is_not_efms_is_refused_and_untouched(world, tmp_path, capsys, cmd):
    victim = tmp_path / f"thesis{SUFFIX[cmd]}"
    victim.write_bytes(b"not made by efm")
    code, err = call(cmd, argv(cmd, world, victim, "--overwrite"), capsys)
    assert_refused(cmd, code, err, "not an efm")
    assert victim.read_bytes() == b"not made by efm"


def test_export_refuses_a_quicklook_png_that_is_not_efms(world, tmp_path, capsys):
    """The PNG next to the GeoTIFF is an output too: a user's picture there is not replaced."""
    (tmp_path / "map.png").write_bytes(b"\x89PNG holiday photo")
    for flag in ([], ["--overwrite"]):
        code, err = call("export", argv("export", world, tmp_path / "map.tif", *flag), capsys)
        assert_refused("export", code, err, "map.png exists and is not an efm quicklook PNG")
        assert (tmp_path / "map.png").read_bytes() == b"\x89PNG holiday photo" and not (
            tmp_path / "map.tif"
        ).exists()


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_product_of_another_kind_is_refused_and_untouched(world, tmp_path, capsys, cmd):
    other = world.classes if cmd == "extract" else world.emb
    victim = copy(other, tmp_path / f"other{SUFFIX[cmd]}")
    before = snapshot(victim)
    code, err = call(cmd, argv(cmd, world, victim, "--overwrite"), capsys)
    assert_refused(
        cmd,
        code,
        err,
        "is an efm class-map store, not" if cmd == "extract" else "is an efm embedding store, not",
    )
    assert snapshot(victim) == before


def test_an_efm_store_holding_other_files_is_refused(world, tmp_path, capsys):
    victim = copy(world.emb, tmp_path / "emb.zarr")
    (tmp_path / "emb.zarr" / "README.md").write_text("my notes about this store")
    before = snapshot(victim)
    code, err = call("extract", argv("extract", world, victim, "--overwrite"), capsys)
    assert_refused("extract", code, err, "also holds files efm did not write (README.md)")
    assert snapshot(victim) == before


@pytest.mark.parametrize("cmd", ["extract", "classify"])
@pytest.mark.parametrize("slash", ["", "/"])
def test_a_bucket_root_is_refused(world, gcs, gcs_bucket, capsys, cmd, slash):
    gcs.fs.pipe(f"{gcs_bucket[5:]}/keep/data.bin", b"someone's data")
    code, err = call(cmd, argv(cmd, world, gcs_bucket + slash, "--overwrite"), capsys)
    assert_refused(cmd, code, err, "is a bucket root")
    gcs.fs.invalidate_cache()
    assert gcs.fs.find(gcs_bucket[5:]) == [f"{gcs_bucket[5:]}/keep/data.bin"]
    assert gcs.fs.cat(f"{gcs_bucket[5:]}/keep/data.bin") == b"someone's data"


def test_filesystem_root_and_home_are_refused(world, capsys, monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("alias ll='ls -l'")
    monkeypatch.setenv("HOME", str(home))
    for place, words in ((os.sep, "the filesystem root"), (str(home), "a home folder")):
        code, err = call("classify", argv("classify", world, place, "--overwrite"), capsys)
        assert_refused("classify", code, err, words)
    assert snapshot(home) == {".bashrc": b"alias ll='ls -l'"}


# ---------------------------------------------------------------- inputs are never outputs


def overlap_cases(w: World):
    return [
        (
            "classify",
            ["--embeddings", w.emb, "--model", w.model, "--output", w.emb, "--overwrite", *FNAPI],
            w.emb,
            "is the --embeddings input",
        ),
        (
            "classify",
            [
                "--embeddings",
                w.emb,
                "--model",
                w.model,
                "--output",
                f"{w.emb}/classes.zarr",
                *FNAPI,
            ],
            w.emb,
            "is inside the --embeddings input",
        ),
        (
            "classify",
            [
                "--embeddings",
                w.emb,
                "--model",
                w.model,
                "--output",
                str(w.root),
                "--overwrite",
                *FNAPI,
            ],
            w.emb,
            "holds the --embeddings input",
        ),
        (
            "extract",
            argv("extract", w, os.path.join(w.data.mirror, "out.zarr")),
            w.data.mirror,
            "is inside the --cog-root input",
        ),
        (
            "extract",
            argv("extract", w, w.data.output, "--overwrite"),
            w.data.output,
            "holds the --cog-root input",
        ),
        (
            "sample",
            argv("sample", w, f"{w.emb}/s.parquet"),
            w.emb,
            "is inside the --embeddings input",
        ),
        (
            "train",
            argv("train", w, f"{w.samples}/m.skops"),
            w.samples,
            "is inside the --samples input",
        ),
        (
            "cluster",
            argv("cluster", w, f"{w.emb}/km.skops"),
            w.emb,
            "is inside the --embeddings input",
        ),
        (
            "export",
            ["--input", w.classes, "--output", f"{w.classes}/map.tif"],
            w.classes,
            "is inside the --input input",
        ),
    ]


@pytest.mark.parametrize("case", range(9))
def test_output_is_never_an_input_nor_inside_one(world, capsys, case):
    cmd, args, victim, words = overlap_cases(world)[case]
    before = snapshot(victim)
    code, err = call(cmd, args, capsys)
    assert_refused(cmd, code, err, words)
    assert snapshot(victim) == before


# ---------------------------------------------------------------- our own output: replaced with --overwrite

OWN = {
    "extract": "emb",
    "classify": "classes",
    "sample": "samples",
    "train": "model",
    "cluster": "model",
    "export": "tif",
}


@pytest.mark.parametrize("cmd", list(OWN))
def test_own_previous_output_needs_overwrite_then_is_replaced(world, tmp_path, capsys, cmd):
    src = getattr(world, OWN[cmd])
    target = copy(src, tmp_path / f"previous{SUFFIX[cmd]}")
    if cmd in ("train", "cluster"):
        copy(src + ".json", target + ".json")  # the sidecar: how a model file is known to be efm's
    if cmd == "export":
        copy(src[:-4] + ".png", target[:-4] + ".png")
    old = aged(target)  # every file of the previous output, dated 1970-01-01
    code, err = call(cmd, argv(cmd, world, target), capsys)
    assert_refused(cmd, code, err, "already exists", "pass --overwrite to replace it")
    assert all(f.stat().st_mtime == 1 for f in old)  # refused: untouched
    code, err = call(cmd, argv(cmd, world, target, "--overwrite"), capsys)
    assert code == 0, err
    # replaced: the output is there again and none of its files is the previous one's
    new = files_of(target)
    assert new and all(f.stat().st_mtime > 1 for f in new), [str(f) for f in new]


def files_of(path) -> list[pathlib.Path]:
    """The files of an output: a file, or every file under a folder, with its sidecar and PNG."""
    p = pathlib.Path(path)
    found = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] * p.is_file()
    for extra in (pathlib.Path(str(p) + ".json"), p.with_suffix(".png")):
        if p.suffix in (".skops", ".tif") and extra.is_file():
            found.append(extra)
    return found


def aged(path) -> list[pathlib.Path]:
    """Date every file of an output 1970-01-01 (mtime 1 s): a file the run writes is newer."""
    found = files_of(path)
    for f in found:
        os.utime(f, (1, 1))
    return found


def test_own_sample_data_folder_is_replaced_and_a_foreign_one_is_not(tmp_path, capsys):
    out = tmp_path / "sd"
    assert make_sample_data.run(["--output", str(out), "--size", "small", "--years", "2022"]) == 0
    assert json.loads((out / MARKER_FILE).read_text())["efm_product"] == "sample-data"
    code, err = call(
        "make-sample-data", ["--output", str(out), "--size", "small", "--years", "2022"], capsys
    )
    assert_refused("make-sample-data", code, err, "pass --overwrite")
    (out / "labels.geojson").write_text("stale")
    assert (
        make_sample_data.run(
            ["--output", str(out), "--size", "small", "--years", "2022", "--overwrite"]
        )
        == 0
    )
    assert (out / "labels.geojson").read_text() != "stale"
    (out / "mirror" / "my-notes.txt").write_text("mine")
    before = snapshot(out)
    code, err = call(
        "make-sample-data",
        ["--output", str(out), "--size", "small", "--years", "2022", "--overwrite"],
        capsys,
    )
    assert_refused(
        "make-sample-data", code, err, "also holds files efm did not write (mirror/my-notes.txt)"
    )
    assert snapshot(out) == before


def demo_folder(w: World, out: pathlib.Path, marker: bool = True) -> pathlib.Path:
    """A folder laid out as `efm demo` leaves it, from real products."""
    out.mkdir()
    if marker:
        (out / MARKER_FILE).write_text(json.dumps({"efm_product": "demo"}))
    copy(w.data.output, out / "sample-data")
    copy(w.emb, out / "embeddings.zarr")
    copy(w.samples, out / "samples.parquet")
    copy(w.model, out / "model.skops")
    copy(w.model + ".json", out / "model.skops.json")
    copy(w.classes, out / "classes.zarr")
    copy(w.tif, out / "land_cover_2022.tif")
    copy(w.tif[:-4] + ".png", out / "land_cover_2022.png")
    (out / "demo.log").write_text("$ efm ...")
    return out


@pytest.mark.parametrize("marker", [True, False])  # False: a demo folder from before the marker
def test_demo_overwrite_of_its_own_folder_keeps_working(world, tmp_path, capsys, marker):
    out = demo_folder(world, tmp_path / "demo-output", marker)
    code, err = call("demo", ["--output", str(out), "--tuning", "small=true"], capsys)
    assert code == 2 and "pass --overwrite" in err
    demo.prepare_output(
        str(out), overwrite=True
    )  # what `make demo` (efm demo --overwrite) does first
    assert sorted(os.listdir(out)) == [MARKER_FILE]


def test_demo_folder_with_other_files_is_refused(world, tmp_path, capsys):
    out = demo_folder(world, tmp_path / "demo-output")
    (out / "classes.zarr" / "extra.txt").write_text("mine")
    (out / "thesis.tex").write_text("mine")
    before = snapshot(out)
    code, err = call(
        "demo", ["--output", str(out), "--tuning", "small=true", "--overwrite"], capsys
    )
    assert_refused("demo", code, err, "also holds files efm did not write", "thesis.tex")
    assert snapshot(out) == before


# ---------------------------------------------------------------- efm sample's parts folder


def test_sample_parts_folder_is_removed_only_when_efm_marked_it(world, tmp_path, capsys):
    out = tmp_path / "s.parquet"
    parts = tmp_path / "s.parquet.parts"
    parts.mkdir()
    (parts / "field-notes.csv").write_text("a,b\n1,2\n")
    code, err = call("sample", argv("sample", world, out), capsys)
    assert_refused("sample", code, err, "s.parquet.parts", "was not written by efm sample")
    assert snapshot(parts) == {"field-notes.csv": b"a,b\n1,2\n"} and not out.exists()
    shutil.rmtree(parts)
    parts.mkdir()  # as an interrupted run leaves it: marked, with a stale part
    (parts / PARTS_MARKER).write_text("efm sample parts\n")
    shutil.copyfile(world.samples, parts / "part-0-0.parquet")
    code, err = call("sample", argv("sample", world, out), capsys)
    assert code == 0, err
    assert not parts.exists()
    import pandas as pd

    assert pd.read_parquet(out).equals(
        pd.read_parquet(world.samples)
    )  # the stale part was not mixed in


# ---------------------------------------------------------------- on a bucket


def test_own_store_on_a_bucket_is_replaced_and_a_foreign_object_stops_it(
    world, gcs, gcs_bucket, capsys
):
    output = f"{gcs_bucket}/maps/classes.zarr"
    assert classify.run(argv("classify", world, output)) == 0
    code, err = call("classify", argv("classify", world, output, "--overwrite"), capsys)
    assert code == 0, err
    gcs.fs.pipe(f"{output[5:]}/notes.txt", b"mine")
    gcs.fs.invalidate_cache()
    before = {p: gcs.fs.cat(p) for p in gcs.fs.find(output[5:])}
    code, err = call("classify", argv("classify", world, output, "--overwrite"), capsys)
    assert_refused("classify", code, err, "also holds files efm did not write (notes.txt)")
    gcs.fs.invalidate_cache()
    assert {p: gcs.fs.cat(p) for p in gcs.fs.find(output[5:])} == before


def test_export_and_train_replace_their_own_files_on_a_bucket(world, gcs, gcs_bucket, capsys):
    """GeoTIFF/PNG tags and the model sidecar are read back through gcsfs, as on Dataflow."""
    tif, model = f"{gcs_bucket}/maps/map.tif", f"{gcs_bucket}/models/m.skops"
    for cmd, output in (("export", tif), ("train", model)):
        assert RUN[cmd](argv(cmd, world, output)) == 0
        code, err = call(cmd, argv(cmd, world, output), capsys)
        # (the in-process emulator logs a client closing early to the same stderr: keep our line)
        assert_refused(cmd, code, err.splitlines()[-1], "already exists", "pass --overwrite")
        code, err = call(cmd, argv(cmd, world, output, "--overwrite"), capsys)
        assert code == 0, err
    gcs.fs.pipe(f"{gcs_bucket[5:]}/maps/map.png", b"\x89PNG not ours")
    code, err = call("export", argv("export", world, tif, "--overwrite"), capsys)
    assert_refused(
        "export", code, err.splitlines()[-1], "map.png exists and is not an efm quicklook PNG"
    )
    assert gcs.fs.cat(f"{gcs_bucket[5:]}/maps/map.png") == b"\x89PNG not ours"
