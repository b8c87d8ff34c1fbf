"""--resume checks what the source is, not how it is spelled; the summary tells what was read.

Issue 16, items 4 and 7. Two sample-data mirrors made with different seeds sit in folders `a/`
and `b/`, each as `sd/mirror`: the same relative `--cog-root` names a different mirror from
each folder. A store interrupted from `a/` and resumed from `b/` must be refused and left
untouched; the same mirror spelled absolute, with a trailing slash or through a symlink must
resume and finish the store exactly as a direct read of the mirror's files gives it. Earth
Engine: an image list that changed in the emulator between the runs is refused.

The summary's byte figure is checked against the mirror's file sizes (os.path.getsize), its
no-data warning against the share of pixels with data in the store it wrote.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pathlib
import re
import shutil

import numpy as np
import pytest
import xarray as xr

from emulators.earthengine import EarthEngineEmulator
from emulators.earthengine.synthetic import make_embedding_collection
from pipelines import extract
from sample_data import generate as sample_data
from tests.helpers.cog_mirror import check_nearest, grid_of
from tests.helpers.ee_extract import bbox_inside, ee_argv, ee_change
from tests.helpers.run_summary import summary_values
from tests.helpers.runners import FNAPI
from tests.helpers.store_files import interrupt, snapshot
from transforms.core.grid import Window

MIRROR = os.path.join("sd", "mirror")  # the relative spelling, from folder a/ or b/


def cog_argv(root: str, output, bbox: str, *extra) -> list[str]:
    return [
        "--source",
        "cog",
        "--cog-root",
        root,
        f"--bbox={bbox}",
        "--crs",
        "EPSG:32610",
        "--years",
        "2022",
        "--output",
        str(output),
        "--tuning",
        "chunk_size=128",
        "--dtype",
        "int8",
        "--tuning",
        "max_concurrent_requests=2",
        *extra,
        *FNAPI,
    ]


def codes(path) -> np.ndarray:
    return (
        xr.open_zarr(str(path), mask_and_scale=False)
        .transpose("time", "y", "x", "band")["embedding"]
        .values
    )


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Mirrors a (seed 7) and b (seed 8) at a/sd/mirror and b/sd/mirror, and a complete store of
    each, extracted from its own folder with the relative spelling."""
    root = tmp_path_factory.mktemp("two-mirrors")
    data = {
        name: sample_data.generate(
            str(root / name / "sd"),
            sample_data.SampleSpec(**sample_data.SMALL, years=(2022,), seed=seed),
        )
        for name, seed in (("a", 7), ("b", 8))
    }
    assert data["a"].bbox == data["b"].bbox  # one area, one grid: only the mirrors differ
    bbox = ",".join(repr(v) for v in data["a"].bbox)
    with pytest.MonkeyPatch.context() as mp:
        for name in data:
            mp.chdir(root / name)
            assert extract.run(cog_argv(MIRROR, root / f"complete-{name}.zarr", bbox)) == 0
    return {"root": root, "data": data, "bbox": bbox}


def interrupted_copy(two, tmp_path) -> str:
    path = str(shutil.copytree(two["root"] / "complete-a.zarr", tmp_path / "emb.zarr"))
    interrupt(path)
    return path


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_resume_from_another_folder_with_the_same_spelling_is_refused(
    two, tmp_path, monkeypatch, capsys, dry_run
):
    """The issue's scenario: from b/, `sd/mirror` is another mirror; today it finished the store from it."""
    path = interrupted_copy(two, tmp_path)
    before = snapshot(path)
    monkeypatch.chdir(two["root"] / "b")
    capsys.readouterr()
    code = extract.run(cog_argv(MIRROR, path, two["bbox"], "--resume", *dry_run))
    out, err = capsys.readouterr()
    err = err.strip()
    assert code == 2, err
    assert err.startswith("efm extract: error: --cog-root: ") and "\n" not in err, err
    mirror_a = os.path.realpath(two["root"] / "a" / MIRROR)
    mirror_b = os.path.realpath(two["root"] / "b" / MIRROR)
    assert f"was extracted from {mirror_a} (index sha256 " in err, err
    assert f"this run reads {mirror_b} (index sha256 " in err, err
    assert "resume from the same source or --overwrite" in err, err
    assert "chunks already done" not in out
    assert snapshot(path) == before


def test_a_changed_mirror_at_the_same_place_is_refused(two, tmp_path, capsys):
    """Same place, same spelling, but the files under it were replaced by another mirror's."""
    place = tmp_path / "place" / "mirror"
    shutil.copytree(two["root"] / "a" / MIRROR, place)
    path = str(tmp_path / "emb.zarr")
    assert extract.run(cog_argv(str(place), path, two["bbox"])) == 0
    interrupt(path)
    before = snapshot(path)
    shutil.rmtree(place)
    shutil.copytree(two["root"] / "b" / MIRROR, place)
    capsys.readouterr()
    code = extract.run(cog_argv(str(place), path, two["bbox"], "--resume"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("efm extract: error: --cog-root: ") and "\n" not in err, err
    where = os.path.realpath(place)
    assert err.count(f"{where} (index sha256 ") == 2, err  # one place, two fingerprints
    assert snapshot(path) == before


SPELLINGS = {
    "absolute with a trailing slash": lambda root: str(root / "a" / MIRROR) + "/",
    "through a symlink": lambda root: str(root / "link-to-a"),
    "file:// URL": lambda root: "file://" + str(root / "a" / MIRROR),
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_the_same_mirror_spelled_otherwise_resumes_and_finishes_exactly(
    two, tmp_path, monkeypatch, capsys, spelling
):
    root = two["root"]
    if not (root / "link-to-a").exists():
        os.symlink(root / "a" / MIRROR, root / "link-to-a")
    path = interrupted_copy(two, tmp_path)
    monkeypatch.chdir(root / "b")  # where `sd/mirror` is the other mirror: the spelling decides
    capsys.readouterr()
    code = extract.run(cog_argv(SPELLINGS[spelling](root), path, two["bbox"], "--resume"))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert int(summary_values(out.split("complete")[-1])["chunks already done (resume)"]) > 0
    got = codes(path)
    ds = xr.open_zarr(path, mask_and_scale=False).transpose("time", "y", "x", "band")
    assert ds.attrs["efm_status"] == "complete"
    # An independent reference: the nearest-pixel mosaic of mirror a's files, read with rasterio.
    files = sorted(glob.glob(str(root / "a" / MIRROR / "2022" / "*" / "*.tiff")))
    grid = grid_of(ds)
    check_nearest(got[0], grid, Window(0, 0, grid.height, grid.width), files)
    np.testing.assert_array_equal(got, codes(root / "complete-a.zarr"))
    assert not np.array_equal(got, codes(root / "complete-b.zarr"))  # b would have shown


def test_store_records_the_place_and_fingerprint(two):
    attrs = json.loads((two["root"] / "complete-a.zarr" / "zarr.json").read_text())["attributes"]
    mirror = pathlib.Path(os.path.realpath(two["root"] / "a" / MIRROR))
    index = mirror / "aef_index.parquet"
    assert attrs["cog_root"] == str(mirror) and attrs["cog_root_given"] == MIRROR
    assert attrs["source"] == f"cog:{mirror}" and attrs["cog_index"] == str(index)
    assert attrs["cog_index_bytes"] == index.stat().st_size
    assert attrs["cog_index_sha256"] == hashlib.sha256(index.read_bytes()).hexdigest()
    assert attrs["cog_files"] == len(glob.glob(str(mirror / "2022" / "*" / "*.tiff")))


def test_a_store_without_a_fingerprint_resumes_on_the_old_rule(two, tmp_path, monkeypatch, capsys):
    """Stores written before fingerprints: their spelling of the root is compared as a string."""
    from transforms.storage import store

    path = interrupted_copy(two, tmp_path)
    group = pathlib.Path(path) / "zarr.json"  # the group's document (Zarr 3)
    document = json.loads(group.read_text())
    attrs = {k: v for k, v in document["attributes"].items() if not k.startswith("cog_")}
    document["attributes"] = {**attrs, "cog_root": MIRROR, "source": f"cog:{MIRROR}"}
    group.write_text(json.dumps(document))
    store.set_status(path, "incomplete")  # (consolidates the metadata again)
    monkeypatch.chdir(two["root"] / "a")
    absolute = str(two["root"] / "a" / MIRROR)
    capsys.readouterr()
    assert extract.run(cog_argv(absolute, path, two["bbox"], "--resume")) == 2
    assert f"COG root '{MIRROR}' (this run: '{absolute}')" in capsys.readouterr().err
    assert extract.run(cog_argv(MIRROR, path, two["bbox"], "--resume")) == 0
    np.testing.assert_array_equal(codes(path), codes(two["root"] / "complete-a.zarr"))


# ---------------------------------------------------------------- Earth Engine


@pytest.fixture
def emulator(ee_token):
    images = make_embedding_collection(years=(2021,), seed=3)
    emu = EarthEngineEmulator(max_in_flight=40)
    for image in images:
        emu.add_image(**image)
    with emu:
        yield emu, images


@pytest.mark.parametrize("change", ["an image added", "an image's new version"])
def test_ee_resume_after_the_image_list_changed_is_refused(emulator, tmp_path, capsys, change):
    emu, images = emulator
    bbox = bbox_inside(images, 2021)
    path = str(tmp_path / "emb.zarr")
    assert extract.run(ee_argv(emu, path, bbox)) == 0
    attrs = xr.open_zarr(path).attrs
    assert attrs["ee_images"] >= 1 and len(attrs["ee_images_sha256"]) == 64
    interrupt(path)
    before = snapshot(path)
    ee_change(emu, images, change)
    capsys.readouterr()
    code = extract.run(ee_argv(emu, path, bbox, "--resume"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert err.startswith("efm extract: error: --tuning: collection: ") and "ids sha256 " in err, (
        err
    )
    assert "resume from the same source or --overwrite" in err
    assert snapshot(path) == before


def test_ee_resume_with_the_same_images_finishes(emulator, tmp_path, capsys):
    emu, images = emulator
    bbox = bbox_inside(images, 2021)
    reference, path = str(tmp_path / "ref.zarr"), str(tmp_path / "emb.zarr")
    assert extract.run(ee_argv(emu, reference, bbox)) == 0
    assert extract.run(ee_argv(emu, path, bbox)) == 0
    interrupt(path)
    collection = images[0]["collection"]
    spelled = "projects/earthengine-public/assets/" + collection  # one collection, two spellings
    assert (
        extract.run(ee_argv(emu, path, bbox, "--resume", "--tuning", f"collection={spelled}")) == 0
    )
    np.testing.assert_array_equal(
        xr.open_zarr(path)["embedding"].values, xr.open_zarr(reference)["embedding"].values
    )


# ---------------------------------------------------------------- the summary (item 7)


def transferred_bytes(out: str) -> float:
    value = summary_values(out.split(" complete")[-1])["transferred"]
    return float(re.match(r"([\d.]+) MB", value)[1]) * 1e6


def grown(bbox: str, factor: float) -> str:
    w, s, e, n = (float(v) for v in bbox.split(","))
    cx, cy, hw, hh = (w + e) / 2, (s + n) / 2, (e - w) / 2 * factor, (n - s) / 2 * factor
    return f"{cx - hw!r},{cy - hh!r},{cx + hw!r},{cy + hh!r}"


def test_summary_over_an_area_much_bigger_than_the_mirror(two, tmp_path, capsys):
    """The issue's case: 25x the mirror's area. Bytes read are the files' bytes, not the area's."""
    mirror = two["data"]["a"].mirror
    output = tmp_path / "big.zarr"
    capsys.readouterr()
    assert extract.run(cog_argv(mirror, output, grown(two["bbox"], 5.0))) == 0
    out, err = capsys.readouterr()
    files = glob.glob(os.path.join(mirror, "2022", "*", "*.tiff"))
    on_disk = sum(os.path.getsize(f) for f in files)
    read = transferred_bytes(out)
    assert 0.25 * on_disk <= read <= on_disk + 0.05e6, (read, on_disk)  # .1f MB rounding
    got = codes(output)
    share = 100.0 * np.count_nonzero(got[..., 0] != -128) / got[..., 0].size
    assert share < 10
    warnings = [line for line in err.splitlines() if line.startswith("efm extract: warning: ")]
    assert len(warnings) == 1, err
    assert f"only {share:.1f} % of the area read" in warnings[0], (share, warnings[0])
    assert "the mirror's files for these years span lon " in warnings[0]
    assert "data only in lon " in warnings[0] and "--bbox/--aoi" in warnings[0]


def test_summary_over_a_covered_area_has_no_warning(two, tmp_path, capsys):
    mirror = two["data"]["a"].mirror
    output = tmp_path / "covered.zarr"
    capsys.readouterr()
    assert extract.run(cog_argv(mirror, output, two["bbox"])) == 0
    out, err = capsys.readouterr()
    on_disk = sum(
        os.path.getsize(f) for f in glob.glob(os.path.join(mirror, "2022", "*", "*.tiff"))
    )
    assert 0.25 * on_disk <= transferred_bytes(out) <= on_disk + 0.05e6
    assert "warning" not in err, err


def test_ee_summary_counts_the_response_bodies_and_warns_past_the_tiles(emulator, tmp_path, capsys):
    emu, images = emulator
    bbox = grown(bbox_inside(images, 2021), 4.0)
    emu.reset_stats()
    capsys.readouterr()
    assert extract.run(ee_argv(emu, tmp_path / "emb.zarr", bbox)) == 0
    out, err = capsys.readouterr()
    bodies = sum(r.bytes_out for r in emu.requests if r.kind == "computePixels")
    assert abs(transferred_bytes(out) - bodies) <= 0.05e6, (out, bodies)
    assert "efm extract: warning: only " in err and "data only in lon " in err, err


def test_remote_roots_are_compared_by_their_canonical_url():
    from transforms.sources.cog_paths import canonical

    assert (
        canonical("GS://bucket//aef/v1/")
        == canonical("gcs://bucket/aef/v1")
        == "gs://bucket/aef/v1"
    )
    assert canonical("s3a://b/x/") == canonical("S3://b/x") == "s3://b/x"
    assert canonical("https://Data.Example.org/m/") == "https://data.example.org/m"
    assert canonical("s3://b/x") != canonical("s3://b/y") and canonical("s3://B/x") != "s3://b/x"
