"""`efm extract --add-years` (issue 18, item 3): a store grows by a year without rewriting.

Real runs of `efm extract --source cog` on the sample-data mirror (2022 and 2023). A store of
2022 grown by 2023 must hold, value for value (read with zarr directly), what a fresh extract of
2022,2023 holds; the 2022 files (shards and done markers) keep their bytes and mtimes; only the
new year's chunks are fetched (the summary's counts against the fresh one-year run's). An add
that stops is finished by the same command with --resume. Bad input: one line, exit 2, nothing
written (the store's files compared byte for byte and by mtime).
"""

from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr

from pipelines import classify as classify_cli
from pipelines import extract
from sample_data import generate as sample_data
from tests.helpers.run_summary import summary_values
from tests.helpers.runners import FNAPI
from transforms.learning import models
from transforms.sources import cog

ARRAYS = ("embedding", "time", "x", "y", "band")


def argv(data, output, *extra, chunk_size=128) -> list[str]:
    return [
        "--source",
        "cog",
        "--cog-root",
        data["mirror"],
        f"--bbox={data['bbox']}",
        "--crs",
        "EPSG:32610",
        "--output",
        str(output),
        "--tuning",
        f"chunk_size={chunk_size}",
        "--dtype",
        "int8",
        "--tuning",
        "max_concurrent_requests=2",
        *extra,
        *FNAPI,
    ]


def files(path) -> dict[str, tuple[bytes, int]]:
    """Every file under `path`: its bytes and mtime (ns)."""
    p = pathlib.Path(path)
    return {
        str(f.relative_to(p)): (f.read_bytes(), f.stat().st_mtime_ns)
        for f in sorted(p.rglob("*"))
        if f.is_file()
    }


def arrays(path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(group[name][:]) for name in ARRAYS}


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """The mirror (2022, 2023), a store of 2022 and a fresh store of 2022,2023 with their summaries."""
    root = tmp_path_factory.mktemp("add-years")
    spec = sample_data.SampleSpec(**sample_data.SMALL, years=(2022, 2023), seed=7)
    generated = sample_data.generate(str(root / "sd"), spec)
    data = {
        "root": root,
        "mirror": str(root / "sd" / "mirror"),
        "bbox": ",".join(repr(v) for v in generated.bbox),
    }
    with pytest.MonkeyPatch.context() as mp:
        import io
        import sys

        for name, years in (("y2022", "2022"), ("both", "2022,2023")):
            out = io.StringIO()
            mp.setattr(sys, "stdout", out)
            assert extract.run(argv(data, root / f"{name}.zarr", "--years", years)) == 0
            data[f"{name}_summary"] = summary_values(out.getvalue())
    return data


def grown_copy(sd, tmp_path) -> str:
    return str(shutil.copytree(sd["root"] / "y2022.zarr", tmp_path / "emb.zarr"))


def test_added_year_equals_a_fresh_extract_and_leaves_the_old_files(sd, tmp_path, capsys):
    path = grown_copy(sd, tmp_path)
    before = files(path)
    capsys.readouterr()
    assert extract.run(argv(sd, path, "--add-years", "2023")) == 0
    out = capsys.readouterr().out
    grown, fresh = arrays(path), arrays(sd["root"] / "both.zarr")
    for name in ARRAYS:
        assert grown[name].shape == fresh[name].shape, name
        assert np.array_equal(grown[name], fresh[name]), name
    assert list(grown["time"]) == [2022, 2023]
    # every file of 2022's data and markers: the same bytes, never rewritten
    after = files(path)
    kept = [f for f in before if f.startswith(("embedding/c/0/", ".efm/done/0."))]
    assert len(kept) == 2 * 6  # 6 shards and 6 markers
    for f in kept:
        assert after[f] == before[f], f
    assert not any(f.startswith("embedding/c/0/") for f in set(after) - set(before))
    # the new year's done markers, and the store complete
    assert sorted(f for f in after if f.startswith(".efm/done/1.")) == sorted(
        f.replace("/0.", "/1.") for f in kept if f.startswith(".efm/")
    )
    group = zarr.open_group(path, mode="r")
    assert group.attrs["efm_status"] == "complete" and group.attrs["years"] == [2022, 2023]
    # the source record is the one a fresh extract of both years makes (a later --resume checks it)
    both = zarr.open_group(str(sd["root"] / "both.zarr"), mode="r").attrs
    for key in ("cog_files", "cog_files_sha256", "cog_index_sha256"):
        assert group.attrs[key] == both[key], key
    # only the new year was fetched: the counts of a fresh one-year run
    summary, one_year = summary_values(out), sd["y2022_summary"]
    assert summary["chunks written"] == one_year["chunks written"] == "6"
    assert summary["requests"] == one_year["requests"]
    assert summary["chunks already done (resume)"] == "6"
    xr.open_zarr(path).load()  # xarray opens it with its consolidated metadata


def test_dry_run_plans_only_the_new_year_and_writes_nothing(sd, tmp_path, capsys):
    path = grown_copy(sd, tmp_path)
    before = files(path)
    capsys.readouterr()
    assert extract.run(argv(sd, path, "--add-years", "2023", "--dry-run")) == 0
    plan = summary_values(capsys.readouterr().out)
    assert plan["adding years"].startswith("2023 after the store's 2022")
    assert plan["chunks planned"] == "6" and "1 year(s)" in plan["grid"]
    assert plan["requests"] == sd["y2022_summary"]["requests"]
    assert files(path) == before


def test_an_add_that_stops_is_finished_with_resume(sd, tmp_path, monkeypatch, capsys):
    """The mirror's read fails for 2023 after the time axis grew: exit 1, a store marked
    incomplete that says how to finish it; `--add-years 2023 --resume` finishes it exactly."""
    path = grown_copy(sd, tmp_path)
    before = files(path)
    real = cog.CogSource.fetch
    calls = {"n": 0}

    def failing(self, spec, tile):
        if spec.year == 2023:
            calls["n"] += 1
            if calls["n"] > 2:
                raise OSError("mirror unreachable (test)")
        return real(self, spec, tile)

    monkeypatch.setattr(cog.CogSource, "fetch", failing)
    capsys.readouterr()
    code = extract.run(argv(sd, path, "--add-years", "2023", "--tuning", "max_retries=0"))
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert err.endswith("--add-years 2023 --tuning max_retries=0 --runner=FnApiRunner --resume"), (
        err
    )
    group = zarr.open_group(path, mode="r")
    assert group.attrs["efm_status"] == "incomplete"
    with pytest.raises(Exception, match="incomplete"):
        from transforms.storage import store

        store.open_embeddings(path)
    monkeypatch.setattr(cog.CogSource, "fetch", real)
    # without --resume: refused, in one line, saying to add it
    assert extract.run(argv(sd, path, "--add-years", "2023")) == 2
    assert "add --resume" in capsys.readouterr().err
    assert extract.run(argv(sd, path, "--add-years", "2023", "--resume")) == 0
    grown, fresh = arrays(path), arrays(sd["root"] / "both.zarr")
    for name in ARRAYS:
        assert np.array_equal(grown[name], fresh[name]), name
    after = files(path)
    for f in before:
        if f.startswith(("embedding/c/0/", ".efm/done/0.")):
            assert after[f] == before[f], f
    assert zarr.open_group(path, mode="r").attrs["efm_status"] == "complete"


def test_products_made_before_keep_working_and_classify_maps_all_years(sd, tmp_path):
    path = grown_copy(sd, tmp_path)
    values = arrays(path)["embedding"][0]  # (band, y, x) int8 codes of 2022
    X = values.reshape(values.shape[0], -1).T.astype(np.float32)
    X = X[(X != -128).all(axis=1)][::64]  # any model does: a k-NN on every pixel took ~3 min
    from sklearn.neighbors import KNeighborsClassifier

    y = np.where(X[:, 0] > np.median(X[:, 0]), "high", "low")
    bands = [str(b) for b in arrays(path)["band"]]
    model = KNeighborsClassifier(3).fit(store_as_float(X), y)
    model_path = str(tmp_path / "knn.skops")
    models.save_model(
        model, model_path, {"kind": "classifier", "classes": model.classes_, "bands": bands}
    )
    old_map = tmp_path / "old.zarr"
    run = lambda *a: classify_cli.run([*map(str, a), *FNAPI])  # noqa: E731
    assert run("--embeddings", path, "--model", model_path, "--output", old_map) == 0
    old = xr.open_zarr(old_map, mask_and_scale=False)["class"].values
    assert extract.run(argv(sd, path, "--add-years", "2023")) == 0
    again = xr.open_zarr(old_map, mask_and_scale=False)["class"].values  # still opens, the same
    assert np.array_equal(old, again)
    new_map = tmp_path / "new.zarr"
    assert run("--embeddings", path, "--model", model_path, "--output", new_map) == 0
    new = xr.open_zarr(new_map, mask_and_scale=False)
    assert [int(str(t)[:4]) for t in new["time"].values] == [2022, 2023]
    assert np.array_equal(new["class"].values[0], old[0])


def store_as_float(X):
    from transforms.storage import store

    return store.as_float(X.astype(np.int8))


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--add-years", "2022"], "--add-years: 2022 is already in "),
        (["--add-years", "2021"], "--add-years: 2021 is not after "),
        (["--add-years", "2024"], "--add-years: "),
        (
            ["--add-years", "2023", "--overwrite"],
            "--add-years: adds years to the store at --output",
        ),
        (
            ["--add-years", "2023", "--years", "2022"],
            "--years: not allowed with argument --add-years",
        ),
        (["--add-years", "2023", "chunk_size=256"], "--add-years: "),
        (["--add-years", "2023", "--crs", "EPSG:32611"], "--add-years: "),
    ],
    ids=["present", "before-last", "not-in-source", "overwrite", "with-years", "chunk_size", "crs"],
)
def test_bad_input_is_one_line_and_writes_nothing(sd, tmp_path, capsys, extra, message):
    path = grown_copy(sd, tmp_path)
    before = files(path)
    capsys.readouterr()
    # chunk_size=N: the store's --tuning chunk_size replaced (a key is given once)
    chunk = dict(e.split("=") for e in extra if e.startswith("chunk_size="))
    rest = [e for e in extra if not e.startswith("chunk_size=")]
    code = extract.run(argv(sd, path, *rest, **chunk))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith(f"efm extract: error: {message}") and "\n" not in err, err
    said = {
        "2024": "lists no files for 2024",
        "chunk_size=256": "chunk size 128 (this run: 256); add years with the flags that made it",
        "EPSG:32611": "CRS EPSG:32610 (this run: EPSG:32611)",
    }.get(extra[-1])
    assert said is None or said in err, err
    assert files(path) == before


def test_without_a_store_is_refused(sd, tmp_path, capsys):
    path = tmp_path / "none.zarr"
    assert extract.run(argv(sd, path, "--add-years", "2023")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("efm extract: error: --add-years: no store at ") and "\n" not in err
    assert not os.path.exists(path)


def test_a_zarr2_store_is_refused(sd, tmp_path, capsys):
    """Stores from before Zarr 3: refused in one line (they stay readable and resumable)."""
    ds = xr.open_zarr(sd["root"] / "y2022.zarr", mask_and_scale=False).load()
    path = tmp_path / "v2.zarr"
    ds.attrs["efm_status"] = "complete"
    for v in ds.variables.values():
        v.encoding = {}
    ds.to_zarr(path, zarr_format=2, consolidated=True)
    before = files(path)
    assert extract.run(argv(sd, path, "--add-years", "2023")) == 2
    err = capsys.readouterr().err.strip()
    assert "--add-years: " in err and "Zarr 2" in err and "\n" not in err, err
    assert files(path) == before


def test_old_years_read_from_changed_files_are_refused(sd, tmp_path, capsys):
    """The place check covers the source: the 2022 files the store was made from have changed."""
    mirror = shutil.copytree(sd["mirror"], tmp_path / "mirror")
    data = {**sd, "mirror": str(mirror)}
    path = tmp_path / "emb.zarr"
    assert extract.run(argv(data, path, "--years", "2022")) == 0
    tiff = sorted(pathlib.Path(mirror, "2022").rglob("*.tif*"))[0]
    with open(tiff, "ab") as f:
        f.write(b"\0")  # another size: another listing of the year's files
    before = files(path)
    capsys.readouterr()
    assert extract.run(argv(data, path, "--add-years", "2023")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("efm extract: error: --cog-root: ") and "\n" not in err, err
    assert "listing sha256" in err and err.endswith("add years from the source that made it"), err
    assert files(path) == before


# ---------------------------------------------------------------- Earth Engine (the emulator)


@pytest.fixture
def ee_emulator(ee_token):
    from emulators.earthengine import EarthEngineEmulator
    from emulators.earthengine.synthetic import make_embedding_collection

    images = make_embedding_collection(years=(2021, 2022), seed=3)
    emu = EarthEngineEmulator(max_in_flight=40)
    for image in images:
        emu.add_image(**image)
    with emu:
        yield emu, images


def test_ee_add_a_year_and_refuse_changed_images_of_the_old_one(ee_emulator, tmp_path, capsys):
    from tests.helpers.ee_extract import bbox_inside, ee_argv, ee_change

    emu, images = ee_emulator
    bbox = bbox_inside(images, 2021)

    def run(path, years_flag, years, *extra):
        argv = ee_argv(emu, path, bbox, *extra)
        argv[argv.index("--years") : argv.index("--years") + 2] = [years_flag, years]
        return extract.run(argv)

    fresh, path = tmp_path / "fresh.zarr", str(tmp_path / "emb.zarr")
    assert run(fresh, "--years", "2021,2022") == 0
    assert run(path, "--years", "2021") == 0
    before = files(path)
    changed = str(shutil.copytree(path, tmp_path / "changed.zarr"))
    assert run(path, "--add-years", "2022") == 0
    for name in ARRAYS:  # float32: NaN (no data) where the fresh store has NaN
        np.testing.assert_array_equal(arrays(path)[name], arrays(fresh)[name], err_msg=name)
    after = files(path)
    assert all(
        after[f] == before[f] for f in before if f.startswith(("embedding/c/0/", ".efm/done/0."))
    )
    # an image of 2021 reprocessed since: the store's year is not what the source holds now
    ee_change(emu, [i for i in images if i["start"].startswith("2021")], "an image added")
    before = files(changed)
    capsys.readouterr()
    assert run(changed, "--add-years", "2022") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("efm extract: error: --tuning: collection: ") and "\n" not in err, err
    assert files(changed) == before
