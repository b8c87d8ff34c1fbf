"""`--overwrite` through symbolic links, and replacements that fail (issue 16).

A local output is judged, written and removed where it really is (links resolved); a link to a
product of the same kind is replaced through it (the link stays), anything else is refused naming
both paths, a dangling link or a loop is refused, and a link inside a product is never followed
into a deletion. The old product is removed only after every check of the command has passed;
a removal that fails part-way says what is left, and the re-run it suggests is accepted.

Every assertion reads the files themselves (bytes, listings, `os.path.islink`), not the code's view.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil

import numpy as np
import pytest
import xarray as xr

from pipelines import change, demo, similarity
from tests.helpers.product_world import MARKER_FILE, argv, call, make_world
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import make_store
from tests.helpers.store_files import snapshot
from transforms.core.errors import InputError
from transforms.storage import outputs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every kind of efm product (tests/helpers/product_world.py), made once for this file."""
    return make_world(tmp_path_factory.mktemp("world"))


def tree(path) -> dict[str, bytes | str]:
    """Every entry under `path`, links as links (their target), never followed: what a user would see."""
    out: dict[str, bytes | str] = {}
    for directory, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, path)
            if os.path.islink(full):
                out[rel] = "-> " + os.readlink(full)
            elif os.path.isfile(full):
                out[rel] = pathlib.Path(full).read_bytes()
    return out


def copy_store(src, dst) -> pathlib.Path:
    shutil.copytree(src, dst, symlinks=True)
    return pathlib.Path(dst)


def one_line_refusal(cmd: str, code: int, err: str, *fragments) -> None:
    assert code == 2, err
    assert err.startswith(f"efm {cmd}: error: --output: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def group_attrs(path) -> dict:
    """A store's group attributes, read from its Zarr 3 group document."""
    return json.loads((pathlib.Path(path) / "zarr.json").read_text())["attributes"]


def shard_files(path) -> list[str]:
    """The data files of a Zarr 3 store (`<array>/c/...`), relative to it."""
    root = pathlib.Path(path)
    return sorted(str(p.relative_to(root)) for p in root.glob("*/c/**/*") if p.is_file())


def class_values(path) -> np.ndarray:
    return xr.open_zarr(str(path), mask_and_scale=False)["class"].values


# ---------------------------------------------------------------- a link to a product of the same kind


def test_classify_overwrite_through_a_link_replaces_the_target_and_keeps_the_link(
    world, tmp_path, capsys
):
    """The issue's case: clink.zarr -> cls2.zarr, `classify --output clink.zarr --overwrite`."""
    target = tmp_path / "cls2.zarr"
    assert call("classify", argv("classify", world, target, "--confidence"), capsys)[0] == 0
    assert (target / "confidence").is_dir()  # the old product: with a confidence layer
    link = tmp_path / "clink.zarr"
    link.symlink_to(target)
    bystander = tmp_path / "notes.txt"
    bystander.write_text("mine")
    code, err = call("classify", argv("classify", world, link, "--overwrite"), capsys)
    assert code == 0, err
    assert os.path.islink(link) and os.readlink(link) == str(target)  # the link is kept
    assert target.is_dir() and not os.path.islink(target)
    assert not (target / "confidence").exists()  # replaced: the new run wrote no confidence
    assert group_attrs(target)["efm_status"] == "complete"
    np.testing.assert_array_equal(
        class_values(target), class_values(world.classes)
    )  # the same classes as a plain run
    assert bystander.read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["clink.zarr", "cls2.zarr", "notes.txt"]


def test_extract_overwrite_through_a_link_replaces_the_target_and_keeps_the_link(
    world, tmp_path, capsys
):
    target = copy_store(world.emb, tmp_path / "emb2.zarr")
    (target / "embedding" / "c" / "0" / "0" / "0" / "0").write_bytes(
        b"stale"
    )  # the old one differs from a fresh run
    link = tmp_path / "elink.zarr"
    link.symlink_to(target)
    code, err = call("extract", argv("extract", world, link, "--overwrite"), capsys)
    assert code == 0, err
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert snapshot(target) == snapshot(world.emb)  # byte for byte what a fresh run writes
    assert sorted(os.listdir(tmp_path)) == ["elink.zarr", "emb2.zarr"]


def test_a_link_in_a_parent_folder_is_fine(world, tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    out = tmp_path / "alias" / "classes.zarr"
    assert call("classify", argv("classify", world, out), capsys)[0] == 0
    code, err = call("classify", argv("classify", world, out, "--overwrite"), capsys)
    assert code == 0, err
    assert (real / "classes.zarr" / "zarr.json").is_file()
    np.testing.assert_array_equal(class_values(real / "classes.zarr"), class_values(world.classes))


# ---------------------------------------------------------------- links that are refused


@pytest.mark.parametrize("flag", [[], ["--overwrite"]])
def test_a_link_to_a_product_of_another_kind_is_refused_naming_both(world, tmp_path, capsys, flag):
    target = copy_store(world.emb, tmp_path / "emb.zarr")
    link = tmp_path / "clink.zarr"
    link.symlink_to(target)
    before = tree(tmp_path)
    code, err = call("classify", argv("classify", world, link, *flag), capsys)
    one_line_refusal("classify", code, err, str(link), str(target), "embedding store")
    assert tree(tmp_path) == before


def test_a_link_to_a_folder_that_is_not_efms_is_refused_and_untouched(world, tmp_path, capsys):
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter.tex").write_text("years of work")
    link = tmp_path / "clink.zarr"
    link.symlink_to(target)
    before = tree(tmp_path)
    code, err = call("classify", argv("classify", world, link, "--overwrite"), capsys)
    one_line_refusal("classify", code, err, str(link), str(target), "not an efm")
    assert tree(tmp_path) == before


def test_a_link_to_a_file_where_a_store_goes_is_refused(world, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    link = tmp_path / "clink.zarr"
    link.symlink_to(target)
    before = tree(tmp_path)
    code, err = call("classify", argv("classify", world, link, "--overwrite"), capsys)
    one_line_refusal("classify", code, err, str(link), "it is a file")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("cmd", ["classify", "extract"])
def test_a_dangling_link_is_refused_and_nothing_is_created(world, tmp_path, capsys, cmd):
    link = tmp_path / "out.zarr"
    link.symlink_to(tmp_path / "gone.zarr")
    code, err = call(cmd, argv(cmd, world, link, "--overwrite"), capsys)
    one_line_refusal(cmd, code, err, str(link), "does not exist", "dangling")
    assert os.path.islink(link) and not (tmp_path / "gone.zarr").exists()
    assert sorted(os.listdir(tmp_path)) == ["out.zarr"]


def test_a_link_loop_is_refused(world, tmp_path, capsys):
    (tmp_path / "a.zarr").symlink_to(tmp_path / "b.zarr")
    (tmp_path / "b.zarr").symlink_to(tmp_path / "a.zarr")
    code, err = call(
        "classify", argv("classify", world, tmp_path / "a.zarr", "--overwrite"), capsys
    )
    one_line_refusal("classify", code, err, "loop")
    assert sorted(os.listdir(tmp_path)) == ["a.zarr", "b.zarr"]


@pytest.mark.parametrize(
    "inside",
    [
        ".efm",  # a linked folder where the store keeps its chunk markers: its files look like ours
        "class/c/0/0/0",  # a linked shard
        "class",  # a linked array folder
    ],
)
def test_a_link_inside_a_store_is_refused_and_what_it_points_to_survives(
    world, tmp_path, capsys, inside
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0.0.0").write_bytes(b"precious")
    (outside / ".zarray").write_text("{}")
    store = copy_store(world.classes, tmp_path / "classes.zarr")
    where = store / inside
    if where.is_dir():
        shutil.rmtree(where)
    else:
        where.unlink()
    where.symlink_to(outside)
    before = tree(tmp_path)
    code, err = call("classify", argv("classify", world, store, "--overwrite"), capsys)
    one_line_refusal("classify", code, err, "symbolic link", inside)
    assert tree(tmp_path) == before
    with pytest.raises(InputError):  # remove itself, asked directly, deletes nothing either
        outputs.remove(str(store), "classes")
    assert tree(tmp_path) == before
    assert (outside / "0.0.0").read_bytes() == b"precious"


# ---------------------------------------------------------------- folder products through links


def test_make_sample_data_overwrite_through_a_link(tmp_path, capsys):
    target = tmp_path / "data"
    target.mkdir()
    (target / MARKER_FILE).write_text(json.dumps({"efm_product": "sample-data"}))
    (target / "labels.geojson").write_text("old")
    link = tmp_path / "link"
    link.symlink_to(target)
    code, err = call(
        "make-sample-data", ["--output", str(link), "--size", "small", "--years", "2022",
                             "--overwrite"], capsys
    )  # fmt: skip
    assert code == 0, err
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert (target / "labels.geojson").read_text() != "old"
    assert (target / "mirror" / "aef_index.parquet").is_file()
    assert sorted(os.listdir(tmp_path)) == ["data", "link"]


def test_a_link_to_another_kind_of_folder_is_refused_by_make_sample_data(tmp_path, capsys):
    target = tmp_path / "demo-out"
    target.mkdir()
    (target / MARKER_FILE).write_text(json.dumps({"efm_product": "demo"}))
    (target / "demo.log").write_text("$ efm ...")
    link = tmp_path / "link"
    link.symlink_to(target)
    before = tree(tmp_path)
    code, err = call("make-sample-data", ["--output", str(link), "--overwrite"], capsys)
    one_line_refusal("make-sample-data", code, err, str(link), str(target), "demo folder")
    assert tree(tmp_path) == before


def test_demo_folder_through_a_link_is_cleared_and_a_link_inside_it_is_refused(tmp_path):
    target = tmp_path / "demo-out"
    target.mkdir()
    (target / MARKER_FILE).write_text(json.dumps({"efm_product": "demo"}))
    (target / "demo.log").write_text("$ efm ...")
    (target / "comparison.png").write_bytes(b"png")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert demo.prepare_output(str(link), overwrite=True) == str(target)
    assert os.path.islink(link) and sorted(os.listdir(target)) == [MARKER_FILE]
    # a link inside the demo folder (to someone's data) is never followed into a deletion
    outside = tmp_path / "outside"
    (outside / "mirror").mkdir(parents=True)
    (outside / "mirror" / "aef_index.csv").write_text("precious")
    (target / "sample-data").symlink_to(outside)
    before = tree(tmp_path)
    with pytest.raises(InputError, match="symbolic link"):
        demo.prepare_output(str(link), overwrite=True)
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- every check before any deletion


def _bad_model(tmp_path) -> str:
    from sklearn.neighbors import KNeighborsClassifier

    from transforms.learning import models

    model = KNeighborsClassifier(1).fit(np.eye(3), [0, 1, 2])  # 3 bands: does not fit 64
    path = str(tmp_path / "three-bands.skops")
    models.save_model(model, path, {"kind": "classifier", "classes": model.classes_})
    return path


def late_failures(w, tmp_path):
    """{case: (entry point, how the old product is made at `out`, argv of a run failing a late check)}."""
    from pipelines import classify, extract

    emb = make_store(str(tmp_path / "two-years.zarr"), height=40, width=40, chunk_size=32)
    sim = ["--embeddings", w.emb, "--points", w.data.points, "--label", "label=water",
           *FNAPI]  # fmt: skip
    chg = ["--embeddings", emb.path, *FNAPI]

    def copy_of(src):
        return lambda out: copy_store(src, out)

    def made_by(entry, args):
        return lambda out: entry([*args, "--output", str(out)])

    return {
        "extract, a year the mirror lacks": (
            extract.run,
            copy_of(w.emb),
            lambda out: argv("extract", w, out, "--overwrite", "--years=2019"),
        ),
        "classify, a model that does not fit": (
            classify.run,
            copy_of(w.classes),
            lambda out: [
                "--embeddings",
                w.emb,
                "--model",
                _bad_model(tmp_path),
                "--output",
                str(out),
                "--overwrite",
                *FNAPI,
            ],
        ),  # fmt: skip
        "classify, a year the store lacks": (
            classify.run,
            copy_of(w.classes),
            lambda out: argv("classify", w, out, "--overwrite", "--years", "2019"),
        ),
        "similarity, a year the store lacks": (
            similarity.run,
            made_by(similarity.run, sim),
            lambda out: [*sim, "--years", "2019", "--output", str(out), "--overwrite"],
        ),
        "change, a year the store lacks": (
            change.run,
            made_by(change.run, [*chg, "--years", "2021,2022"]),
            lambda out: [*chg, "--years", "2019,2022", "--output", str(out), "--overwrite"],
        ),
    }


LATE = [
    "extract, a year the mirror lacks",
    "classify, a model that does not fit",
    "classify, a year the store lacks",
    "similarity, a year the store lacks",
    "change, a year the store lacks",
]


@pytest.mark.parametrize("case", LATE)
def test_a_late_check_failing_leaves_the_old_store_byte_identical(world, tmp_path, capsys, case):
    entry, make_old, failing = late_failures(world, tmp_path)[case]
    out = tmp_path / "old.zarr"
    assert make_old(out) not in (1, 2)  # copied (None) or made (0)
    assert (out / "zarr.json").is_file()
    link = tmp_path / "link.zarr"
    link.symlink_to(out)  # and through a link, as the issue met it
    before = tree(out)
    for target in (out, link):
        capsys.readouterr()
        code = entry(failing(target))
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err, err
        assert tree(out) == before, err
        assert os.readlink(link) == str(out)


# ---------------------------------------------------------------- a replacement that fails


def _rerun(err: str) -> list[str]:
    """The argv of the command the one-line error tells to run (after its last 're-run: ')."""
    return shlex.split(err.rsplit("re-run: ", 1)[1])[2:]  # drop "efm classify"


def test_a_removal_failing_part_way_says_what_is_left_and_its_rerun_finishes(
    world, tmp_path, capsys, monkeypatch
):
    out = copy_store(world.classes, tmp_path / "classes.zarr")
    total = len(snapshot(out))
    real_unlink, real_remove, calls = os.unlink, os.remove, []

    def failing(real):
        def delete(path, *a, **k):
            if str(path).startswith(str(out)):
                calls.append(path)
                if len(calls) == 3:  # the disk says no on the third file
                    raise PermissionError(13, "Permission denied", str(path))
            return real(path, *a, **k)

        return delete

    monkeypatch.setattr(os, "unlink", failing(real_unlink))
    monkeypatch.setattr(os, "remove", failing(real_remove))
    code, err = call("classify", argv("classify", world, out, "--overwrite"), capsys)
    monkeypatch.undo()
    assert code == 1 and "\n" not in err, err
    left = len(snapshot(out))
    assert 0 < left < total
    assert f"{left} of its {total} files are left" in err and str(out) in err, err
    assert "--overwrite" in err.rsplit("re-run: ", 1)[1], err
    # what is left never looks complete, is not resumed, and is still recognised as efm's
    assert group_attrs(out)["efm_status"] == "removing"
    assert "consolidated_metadata" not in json.loads((out / "zarr.json").read_text())
    code, err2 = call("classify", argv("classify", world, out), capsys)
    one_line_refusal("classify", code, err2, "pass --overwrite to finish")
    code, err2 = call("classify", argv("classify", world, out, "--resume"), capsys)
    assert code == 2 and "nothing to resume" in err2 and "--overwrite" in err2, err2
    code, err2 = call("classify", _rerun(err), capsys)
    assert code == 0, err2
    np.testing.assert_array_equal(class_values(out), class_values(world.classes))


def test_a_setup_failing_after_the_removal_says_so_and_leaves_nothing_that_blocks(
    world, tmp_path, capsys, monkeypatch
):
    from transforms.storage import zarr_direct

    out = copy_store(world.classes, tmp_path / "classes.zarr")
    real_create = zarr_direct.create

    def create_then_fail(path, *args, **kwargs):
        os.makedirs(path, exist_ok=True)
        pathlib.Path(path, "zarr.json").write_text(
            '{"zarr_format": 3, "node_type": "group", "attributes": {}}'
        )  # a first file, then no space
        raise OSError(28, "No space left on device", os.path.join(path, "x"))

    monkeypatch.setattr(zarr_direct, "create", create_then_fail)
    code, err = call("classify", argv("classify", world, out, "--overwrite"), capsys)
    monkeypatch.setattr(zarr_direct, "create", real_create)
    assert code == 1 and "\n" not in err, err
    assert "was removed (nothing of it remains" in err, err
    assert not out.exists() or list(out.rglob("*")) == [], tree(tmp_path)  # nothing that blocks
    code, err2 = call("classify", _rerun(err), capsys)
    assert code == 0, err2
    np.testing.assert_array_equal(class_values(out), class_values(world.classes))


def test_a_half_removed_store_on_disk_is_still_efms(world, tmp_path):
    """Whatever prefix of the removal order ran, what is left is recognised and replaceable."""
    out = copy_store(world.classes, tmp_path / "classes.zarr")
    files = sorted(snapshot(out))
    chunks = shard_files(out)
    for f in chunks:  # a removal stopped after the data: metadata only
        (out / f).unlink()
    found = outputs.check_output(str(out), "classes", overwrite=True)
    assert found.kind == "classes" and not found.foreign
    for f in [f for f in files if "/" in f and f not in chunks]:  # the arrays' documents
        if (out / f).exists():
            (out / f).unlink()
    found = outputs.check_output(str(out), "classes", overwrite=True)
    assert found.kind == "classes" and not found.foreign, found
    # the last step but one: only the group's document is left
    assert [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()] == ["zarr.json"]
    found = outputs.check_output(str(out), "classes", overwrite=True)
    assert found.kind == "classes" and not found.foreign, found
    outputs.remove(str(out), "classes", found=found)
    assert not out.exists()


def test_a_set_up_cut_short_is_still_efms(world, tmp_path):
    """A Ctrl-C while a store's metadata is written (the group's document, with its attributes,
    first; then the arrays): what is left is efm's and --overwrite replaces it."""
    out = copy_store(world.classes, tmp_path / "classes.zarr")
    for f in sorted(snapshot(out)):
        if f != "zarr.json" and not f.startswith(("x/", "y/")):
            (out / f).unlink()  # only the group and two coordinates written so far
    found = outputs.check_output(str(out), "classes", overwrite=True)
    assert found.kind == "classes" and not found.foreign, found
    (out / "notes.txt").write_text("mine")  # a file that is not Zarr's stays foreign
    (out / "class" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        outputs.check_output(str(out), "classes", overwrite=True)
