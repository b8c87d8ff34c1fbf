"""Every product on a collection (one store per UTM zone): each output, member by member, equals an
independent reference computed with numpy / scikit-learn / rasterio on the member's own arrays
(tests/helpers/collections.py builds the two-zone collection, 31N | 32N at 6 E, and says which
pixels each member counts, `owned`, computed with pyproj on its own)."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import xarray as xr

from pipelines import change as change_cli
from pipelines import classify as classify_cli
from pipelines import cluster as cluster_cli
from pipelines import sample as sample_cli
from pipelines import similarity as similarity_cli
from pipelines import zonal as zonal_cli
from tests.helpers.collection_seam import (
    CELLS,
    CRS,
    MEMBER,
    cell_of,
    expected_zonal,
    pixel_of,
    points_near_seam,
    seam_polygons,
    write_points,
)
from tests.helpers.collections import make_collection
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import BANDS, make_store


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    return make_collection(str(tmp_path_factory.mktemp("coll") / "emb"), chunk_size=64)


def fresh(tmp_path, name="emb"):
    """A collection of one's own (for tests that damage it)."""
    return make_collection(str(tmp_path / name), chunk_size=64)


def run(cli, *argv):
    return cli.run([*map(str, argv), *FNAPI])


def files_state(folder):
    """{relative path: (mtime_ns, bytes)} of every file under folder."""
    out = {}
    for d, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = (os.stat(p).st_mtime_ns, f.read())
    return out


def index_of(path):
    with open(os.path.join(path, "collection.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------- per-pixel maps


def expected_change(s, t0=0, t1=1):
    v = s.values.astype(np.float64)
    nodata = np.isnan(v[t0]).any(-1) | np.isnan(v[t1]).any(-1)
    sim = np.einsum("yxb,yxb->yx", np.nan_to_num(v[t0]), np.nan_to_num(v[t1]))
    sim[nodata] = np.nan
    return sim


def test_change_writes_a_collection_of_maps(coll, tmp_path, capsys):
    out = tmp_path / "change"
    assert run(change_cli, "--embeddings", coll.root, "--years", "2021,2022",
               "--output", out) == 0  # fmt: skip
    index = index_of(out)
    assert index["kind"] == "change"
    assert [(m["cell"], m["path"]) for m in index["members"]] == [(c, MEMBER[c]) for c in CELLS]
    for cell in CELLS:
        got = xr.open_zarr(out / MEMBER[cell])["similarity"].values
        np.testing.assert_allclose(got, expected_change(coll.members[cell]), atol=1e-5)
        assert xr.open_zarr(out / MEMBER[cell]).attrs["crs"] == CRS[cell]
    err = capsys.readouterr().err
    assert "31N (utm-31n.zarr)" in err and "32N (utm-32n.zarr)" in err and "total" in err


def test_dry_run_plans_per_member_and_writes_nothing(coll, tmp_path, capsys):
    out = tmp_path / "change"
    assert run(change_cli, "--embeddings", coll.root, "--years", "2021,2022",
               "--output", out, "--dry-run") == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "plan for" in err and "utm-31n.zarr" in err and "utm-32n.zarr" in err
    assert "total" in err and "2 stores" in err
    assert not out.exists()


def expected_similarity(s, refs):
    v = s.values.astype(np.float64)
    out = []
    for t in range(v.shape[0]):
        sim = np.einsum("yxb,b->yx", np.nan_to_num(v[t]), refs[t])
        sim[np.isnan(v[t]).any(-1)] = np.nan
        out.append(sim)
    return np.stack(out)


def test_similarity_references_from_the_member_holding_each_point(coll, tmp_path):
    pts = points_near_seam(coll)
    assert {cell_of(lon) for lon, _ in pts} == set(CELLS)
    path = write_points(tmp_path / "refs.geojson", pts)
    refs = []  # direct indexing of the member whose cell holds each point
    for t in range(2):
        vecs = [
            coll.members[cell_of(lon)].values[(t, *pixel_of(coll, cell_of(lon), lon, lat))]
            for lon, lat in pts
        ]
        refs.append(np.mean(np.array(vecs, dtype=np.float64), axis=0))
    out = tmp_path / "sim"
    assert run(similarity_cli, "--embeddings", coll.root, "--points", path, "--output", out) == 0
    for cell in CELLS:
        ds = xr.open_zarr(out / MEMBER[cell])
        np.testing.assert_allclose(
            ds["similarity"].values, expected_similarity(coll.members[cell], refs), atol=1e-5
        )
        np.testing.assert_allclose(  # the same reference for every member
            np.array(ds.attrs["reference_vectors"]), np.array(refs), atol=1e-6
        )


def owned_valid_pixels(tc, years=(0, 1)):
    return np.concatenate(
        [
            tc.members[c].values[t][tc.owned[c] & tc.members[c].valid[t]].astype(np.float64)
            for c in CELLS
            for t in years
        ]
    )


def test_cluster_once_across_members_then_classify_the_collection(coll, tmp_path):
    from sklearn.cluster import KMeans

    from transforms.learning import models

    model = tmp_path / "k.skops"
    owned = owned_valid_pixels(coll)
    assert run(cluster_cli, "--embeddings", coll.root, "--clusters", 8, "--tuning", f"sample_size={10**7}",
               "--output", model) == 0  # fmt: skip
    meta = json.loads((tmp_path / "k.skops.json").read_text())
    # each place once: every owned valid pixel, none of the seam strip twice
    assert meta["metrics"]["sample_size"] == len(owned)
    reference = KMeans(n_clusters=8, n_init=4, random_state=0).fit(owned)
    fitted = models.load_model(str(model)).model
    order = lambda c: c[np.lexsort(np.round(c, 3).T[::-1])]  # noqa: E731
    np.testing.assert_allclose(
        order(fitted.cluster_centers_), order(reference.cluster_centers_), atol=1e-4
    )

    out = tmp_path / "classes"
    assert run(classify_cli, "--embeddings", coll.root, "--model", model, "--output", out) == 0
    assert index_of(out)["kind"] == "classes"
    for cell in CELLS:  # one model for every member: the same cluster ids across the seam
        s = coll.members[cell]
        got = xr.open_zarr(out / MEMBER[cell], mask_and_scale=False)["class"].values
        for t in range(2):
            want = np.full(s.valid[t].shape, 255, np.uint8)
            want[s.valid[t]] = fitted.predict(s.values[t][s.valid[t]])
            np.testing.assert_array_equal(got[t], want)


def test_resume_writes_only_the_missing_member_chunks(tmp_path):
    from transforms.storage import store

    tc = fresh(tmp_path)
    out = tmp_path / "change"
    argv = ["--embeddings", tc.root, "--years", "2021,2022", "--output", out]
    assert run(change_cli, *argv) == 0
    # the second member interrupted: two of its chunks unmarked and their files gone
    second = str(out / MEMBER["32N"])
    dropped = sorted(store.done_markers(second))[:2]
    store.drop_markers(second, dropped)
    before_first = files_state(out / MEMBER["31N"])
    before_second = files_state(second)
    assert run(change_cli, *argv) == 2  # exists: --resume or --overwrite
    assert run(change_cli, *argv, "--resume") == 0
    assert files_state(out / MEMBER["31N"]) == before_first  # the complete member untouched
    after = files_state(second)
    changed = {k for k in after if after[k] != before_second.get(k)}
    assert changed and all(
        k.startswith((".efm/", "zarr.json")) or "/c/" in k for k in changed
    )  # chunk files, markers and the status: nothing else
    assert store.done_markers(second) >= set(dropped)
    assert xr.open_zarr(second).attrs["efm_status"] == "complete"
    np.testing.assert_allclose(
        xr.open_zarr(second)["similarity"].values, expected_change(tc.members["32N"]), atol=1e-5
    )
    assert run(change_cli, *argv, "--overwrite") == 0
    np.testing.assert_allclose(
        xr.open_zarr(second)["similarity"].values, expected_change(tc.members["32N"]), atol=1e-5
    )


def test_resume_with_a_missing_member_writes_it(tmp_path):
    tc = fresh(tmp_path)
    out = tmp_path / "change"
    argv = ["--embeddings", tc.root, "--years", "2021,2022", "--output", out]
    assert run(change_cli, *argv) == 0
    shutil.rmtree(out / MEMBER["32N"])  # cut short before the second member began
    before = files_state(out / MEMBER["31N"])
    assert run(change_cli, *argv, "--resume") == 0
    assert files_state(out / MEMBER["31N"]) == before
    np.testing.assert_allclose(
        xr.open_zarr(out / MEMBER["32N"])["similarity"].values,
        expected_change(tc.members["32N"]),
        atol=1e-5,
    )


def test_bbox_writes_the_members_it_reaches_and_resume_checks_them(coll, tmp_path, capsys):
    out = tmp_path / "change"
    argv = ["--embeddings", coll.root, "--years", "2021,2022", "--output", out]
    assert run(change_cli, *argv, "--bbox", "5.98,45.005,5.99,45.015") == 0
    assert [m["cell"] for m in index_of(out)["members"]] == ["31N"]
    assert not (out / MEMBER["32N"]).exists()
    before = files_state(out)
    capsys.readouterr()
    code = run(change_cli, *argv, "--resume")  # without the area: other members
    err = one_line_refusal(capsys, code, "efm change", "--resume")
    assert "31N (utm-31n.zarr)" in err and "32N (utm-32n.zarr)" in err
    assert files_state(out) == before


def test_resume_refuses_members_of_another_place_before_writing(coll, tmp_path, capsys):
    out = tmp_path / "change"
    argv = ["--years", "2021,2022", "--output", out]
    assert run(change_cli, "--embeddings", coll.root, *argv) == 0
    shutil.rmtree(out / MEMBER["32N"])
    other = make_collection(str(tmp_path / "other"), chunk_size=64, area=(5.97, 45.0, 6.03, 45.02))
    before = files_state(out)
    capsys.readouterr()
    code = run(change_cli, "--embeddings", other.root, *argv, "--resume")
    one_line_refusal(capsys, code, "efm change", "--")
    assert files_state(out) == before  # the index and the complete member untouched


def one_line_refusal(capsys, code, prog, flag):
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{prog}: error: {flag}"), err
    return err


def test_refuses_a_collection_whose_index_lists_a_missing_store(tmp_path, capsys):
    tc = fresh(tmp_path)
    shutil.rmtree(os.path.join(tc.root, MEMBER["32N"]))
    out = tmp_path / "change"
    code = run(change_cli, "--embeddings", tc.root, "--years", "2021,2022",
               "--output", out)  # fmt: skip
    err = one_line_refusal(capsys, code, "efm change", "--embeddings")
    assert "utm-32n.zarr" in err and "disagree" in err
    assert not out.exists()


def test_overwrite_refuses_a_collection_holding_a_foreign_file(coll, tmp_path, capsys):
    out = tmp_path / "change"
    argv = ["--embeddings", coll.root, "--years", "2021,2022", "--output", out]
    assert run(change_cli, *argv) == 0
    (out / "notes.txt").write_text("mine")
    before = files_state(out)
    capsys.readouterr()
    code = run(change_cli, *argv, "--overwrite")
    err = one_line_refusal(capsys, code, "efm change", "--output")
    assert "notes.txt" in err
    assert files_state(out) == before


def test_overwrite_refuses_a_collection_of_another_kind(coll, tmp_path, capsys):
    out = tmp_path / "maps"
    assert run(change_cli, "--embeddings", coll.root, "--years", "2021,2022",
               "--output", out) == 0  # fmt: skip
    before = files_state(out)
    capsys.readouterr()
    pts = write_points(tmp_path / "p.geojson", points_near_seam(coll, 6))
    code = run(similarity_cli, "--embeddings", coll.root, "--points", pts, "--output", out,
               "--overwrite")  # fmt: skip
    err = one_line_refusal(capsys, code, "efm similarity", "--output")
    assert "change" in err
    assert files_state(out) == before


def test_a_check_failing_on_the_second_member_writes_nothing(tmp_path, capsys):
    """The model's bands fit the first member, not the second: refused before any member."""
    tc = fresh(tmp_path)
    model = tmp_path / "k.skops"
    assert run(cluster_cli, "--embeddings", tc.members["31N"].path, "--clusters", 3,
               "--tuning", "sample_size=500", "--output", model) == 0  # fmt: skip
    g = tc.members["32N"].grid
    path = tc.members["32N"].path
    shutil.rmtree(path)
    make_store(path, height=g.height, width=g.width, chunk_size=64, crs=g.crs, x0=g.x0,
               y0=g.y0, bands=BANDS[:32])  # fmt: skip
    capsys.readouterr()
    out = tmp_path / "classes"
    code = run(classify_cli, "--embeddings", tc.root, "--model", model, "--output", out)
    err = one_line_refusal(capsys, code, "efm classify", "--model")
    assert "utm-32n.zarr" in err
    assert not out.exists()


# ---------------------------------------------------------------- tables


def test_sample_reads_each_point_from_the_member_holding_it(coll, tmp_path, capsys):
    import pandas as pd

    pts = points_near_seam(coll, 10, seed=3)
    outside = (9.5, 45.01)  # in 32N's cell but beyond its store: outside every member
    far = (13.0, 45.01)  # zone 33: no member
    path = write_points(tmp_path / "pts.geojson", pts + [outside, far], list("ab" * 6))
    out = tmp_path / "t.parquet"
    assert run(sample_cli, "--embeddings", coll.root, "--points", path, "--label-column", "kind",
               "--output", out) == 0  # fmt: skip
    summary = capsys.readouterr().out
    assert re.search(r"dropped: outside the stores +2\n", summary), summary
    assert re.search(r"rows per member +utm-31n.zarr: \d+, utm-32n.zarr: \d+\n", summary)
    table = pd.read_parquet(out)
    assert len(table) == 2 * len(pts)
    for _, row in table.iterrows():
        lon, lat = pts[row["point_id"]]
        cell = cell_of(lon)
        r, c = pixel_of(coll, cell, lon, lat)
        assert row["member"] == MEMBER[cell] and row["crs"] == CRS[cell]
        assert (row["pixel_y"], row["pixel_x"]) == (r, c)
        t = row["year"] - 2021
        np.testing.assert_allclose(
            row[list(BANDS)].to_numpy(np.float32), coll.members[cell].values[t, r, c], atol=1e-6
        )


def test_sample_refuses_points_outside_every_member(coll, tmp_path, capsys):
    path = write_points(tmp_path / "pts.geojson", [(13.0, 45.01), (9.5, 45.01)])
    out = tmp_path / "t.parquet"
    code = run(sample_cli, "--embeddings", coll.root, "--points", path, "--label-column", "kind",
               "--output", out)  # fmt: skip
    err = one_line_refusal(capsys, code, "efm sample", "--points")
    assert "collection" in err
    assert not out.exists()


def test_zonal_combines_polygons_across_members_exactly(coll, tmp_path):
    import geopandas
    import pandas as pd

    geoms = seam_polygons()
    path = tmp_path / "fields.gpkg"
    geopandas.GeoDataFrame({"name": list("abcde")}, geometry=geoms, crs="EPSG:4326").to_file(path)
    out = tmp_path / "z.parquet"
    assert run(zonal_cli, "--embeddings", coll.root, "--polygons", path, "--output", out,
               "--stat", "mean,std,median") == 0  # fmt: skip
    table = pd.read_parquet(out)
    assert len(table) == len(geoms) * 2
    want = expected_zonal(coll, geoms)
    for _, row in table.iterrows():
        n, mean, std, median = want[row["polygon_id"], row["year"] - 2021]
        assert row["pixel_count"] == n and n > 0
        np.testing.assert_allclose(row[list(BANDS)].to_numpy(float), mean, atol=1e-5)
        np.testing.assert_allclose(row[[f"{b}_std" for b in BANDS]].to_numpy(float), std, atol=1e-5)
        np.testing.assert_allclose(
            row[[f"{b}_median" for b in BANDS]].to_numpy(float), median, atol=1e-5
        )
