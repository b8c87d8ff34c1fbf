"""efm similarity: the similarity store equals an independent float64 numpy computation on the whole array."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from pipelines import similarity as similarity_cli
from tests.helpers.runners import FNAPI, MULTIPROCESS
from tests.helpers.store_factory import make_store
from transforms.storage import store

ATOL = 1e-5  # float32 dot products against float64
X0, Y0, SCALE = 500_000.0, 5_000_000.0, 10.0  # store_factory's grid


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {
        dtype: make_store(str(root / f"{dtype}.zarr"), dtype=dtype) for dtype in ("float32", "int8")
    }


def store_values(s) -> np.ndarray:
    return s.values.astype(np.float64)  # the factory's values (de-quantised for int8)


def write_points(path, pixels, labels, crs="EPSG:32631"):
    """GeoJSON points at the centres of (row, col) pixels (a pixel may be outside the grid)."""
    features = [
        {
            "type": "Feature",
            "properties": {"kind": lab},
            "geometry": {
                "type": "Point",
                "coordinates": [X0 + (c + 0.5) * SCALE, Y0 - (r + 0.5) * SCALE],
            },
        }
        for (r, c), lab in zip(pixels, labels)
    ]
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": crs}},
                "features": features,
            }
        )
    )
    return path


def expected(s, pixels, ref_time=None, threshold=None):
    """(time, y, x) similarity to the per-year (or ref_time's) plain mean of the points' vectors."""
    v = store_values(s)
    nodata = np.isnan(v).any(axis=-1)
    sims = []
    for t in range(v.shape[0]):
        rt = t if ref_time is None else ref_time
        vecs = np.array(
            [
                v[rt, r, c]
                for r, c in pixels
                if 0 <= r < v.shape[1] and 0 <= c < v.shape[2] and not nodata[rt, r, c]
            ]
        )
        sim = np.einsum("yxb,b->yx", np.nan_to_num(v[t]), vecs.mean(axis=0))
        sim[nodata[t]] = np.nan
        sims.append(sim)
    sim = np.stack(sims)
    mask = None if threshold is None else np.where(nodata, 255, sim >= threshold).astype(np.uint8)
    return sim, mask


def run(*argv):
    return similarity_cli.run([*map(str, argv)])


def class_pixels(s, cls, n=6, t=0, seed=0):
    r, c = np.nonzero(s.labels[t] == cls)
    pick = np.random.default_rng(seed).choice(len(r), n, replace=False)
    return list(zip(r[pick].tolist(), c[pick].tolist()))


@pytest.mark.parametrize(
    "dtype,runner", [("float32", FNAPI), ("int8", FNAPI), ("float32", MULTIPROCESS)]
)
def test_similarity_equals_numpy(stores, tmp_path, dtype, runner, capsys):
    s = stores[dtype]
    hole = tuple(int(i) for i in np.argwhere(~s.valid[0])[0])
    pixels = class_pixels(s, 1) + [
        hole,
        (-5, 3),
        (10, 10_000),
    ]  # one point on no data, two outside: skipped
    points = write_points(tmp_path / "refs.geojson", pixels, ["a"] * len(pixels))
    output = tmp_path / "sim.zarr"
    assert (
        run(
            "--embeddings",
            s.path,
            "--points",
            points,
            "--output",
            output,
            "--threshold",
            0.6,
            *runner,
        )
        == 0
    )
    assert "complete" in capsys.readouterr().out
    got = xr.open_zarr(output, mask_and_scale=False)
    sim, mask = expected(s, pixels, threshold=0.6)
    assert got["similarity"].dims == ("time", "y", "x") and got["similarity"].dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got["similarity"].values), np.isnan(sim))
    np.testing.assert_allclose(got["similarity"].values, sim, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(got["similar"].values, mask)
    # the reference class is similar, the others are not (per year: the pattern shifts)
    assert np.all(got["similar"].values[s.labels == np.array([1, 2])[:, None, None]] == 1)
    assert got.attrs["efm_product"] == "similarity" and got.attrs[store.STATUS_ATTR] == "complete"
    assert got.attrs["reference_points"] == [6, 6]
    emb = store.open_embeddings(s.path)
    assert got.rio.crs == emb.rio.crs and got.rio.transform() == emb.rio.transform()
    np.testing.assert_array_equal(got["time"].values, emb["time"].values)


def test_label_filter_and_reference_year(stores, tmp_path):
    s = stores["float32"]
    water, forest = class_pixels(s, 0, seed=1), class_pixels(s, 3, seed=2)
    points = write_points(tmp_path / "refs.geojson", water + forest, ["water"] * 6 + ["forest"] * 6)
    output = tmp_path / "sim.zarr"
    assert (
        run(
            "--embeddings",
            s.path,
            "--points",
            points,
            "--label",
            "kind=forest",
            "--reference-year",
            2021,
            "--years",
            2022,
            "--output",
            output,
            *FNAPI,
        )
        == 0
    )
    got = xr.open_zarr(output)
    v = store_values(s)
    ref = np.mean([v[0, r, c] for r, c in forest], axis=0)
    want = np.einsum("yxb,b->yx", v[1], ref)  # NaN propagates through einsum: no data stays NaN
    assert got["similarity"].shape == (1, s.grid.height, s.grid.width)
    np.testing.assert_allclose(got["similarity"].values[0], want, rtol=0, atol=ATOL)
    np.testing.assert_allclose(
        got.attrs["reference_vectors"][0], ref, rtol=0, atol=1e-6
    )  # plain mean, not re-normalised
    assert abs(np.linalg.norm(ref) - 1) > 1e-4


def test_resume_refuses_other_reference_points(stores, tmp_path, capsys):
    s = stores["float32"]
    first = write_points(tmp_path / "a.geojson", class_pixels(s, 1), ["a"] * 6)
    other = write_points(tmp_path / "b.geojson", class_pixels(s, 2), ["a"] * 6)
    output = tmp_path / "sim.zarr"
    assert (
        run("--embeddings", s.path, "--points", first, "--years", 2021, "--output", output, *FNAPI)
        == 0
    )
    assert (
        run(
            "--embeddings",
            s.path,
            "--points",
            first,
            "--years",
            2021,
            "--output",
            output,
            "--resume",
            *FNAPI,
        )
        == 0
    )
    capsys.readouterr()
    assert (
        run(
            "--embeddings",
            s.path,
            "--points",
            other,
            "--years",
            2021,
            "--output",
            output,
            "--resume",
            *FNAPI,
        )
        == 2
    )
    assert "efm similarity: error: --resume: " in capsys.readouterr().err
    assert (
        run(
            "--embeddings",
            s.path,
            "--points",
            first,
            "--years",
            2021,
            "--output",
            output,
            "--resume",
            "--threshold",
            0.5,
            *FNAPI,
        )
        == 2
    )


def test_similarity_on_gcs(stores, tmp_path, gcs, gcs_bucket):
    s = stores["int8"]
    gcs.fs.put(s.path, f"{gcs_bucket[5:]}/emb.zarr", recursive=True)
    pixels = class_pixels(s, 2)
    points = write_points(tmp_path / "refs.geojson", pixels, ["x"] * len(pixels))
    output = f"{gcs_bucket}/sim.zarr"
    assert (
        run(
            "--embeddings", f"{gcs_bucket}/emb.zarr", "--points", points, "--output", output, *FNAPI
        )
        == 0
    )
    got = xr.open_zarr(output, mask_and_scale=False)
    np.testing.assert_allclose(got["similarity"].values, expected(s, pixels)[0], rtol=0, atol=ATOL)
    assert got.attrs[store.STATUS_ATTR] == "complete"


def _bad_cases(s, tmp_path):
    holes = [tuple(int(i) for i in p) for p in np.argwhere(~s.valid[1])[:5]]
    good = class_pixels(s, 1)
    return {
        "nodata": (
            write_points(tmp_path / "nodata.geojson", holes, ["a"] * 5),
            ["--years", 2022],
            "--points",
        ),
        "outside": (
            write_points(tmp_path / "outside.geojson", [(-3, -3), (5000, 5)], ["a", "a"]),
            [],
            "--points",
        ),
        "label-only": (
            write_points(tmp_path / "p.geojson", good, ["a"] * 6),
            ["--label", "a"],
            "--label",
        ),
        "no-such-label": (
            write_points(tmp_path / "p2.geojson", good, ["a"] * 6),
            ["--label", "kind=b"],
            "--label",
        ),
        "no-such-column": (
            write_points(tmp_path / "p6.geojson", good, ["a"] * 6),
            ["--label", "colour=a"],
            "--label: ",
        ),
        # --label-column merged into --label COLUMN=VALUE; --points-crs is a --tuning key
        "label-column": (
            write_points(tmp_path / "p7.geojson", good, ["a"] * 6),
            ["--label-column", "kind", "--label", "a"],
            "--label-column: merged into --label: give --label COLUMN=VALUE (e.g. --label "
            "kind=forest)",
        ),
        "points-crs": (
            write_points(tmp_path / "p8.geojson", good, ["a"] * 6),
            ["--points-crs", "EPSG:32631"],
            "--points-crs: moved: use --tuning points_crs=EPSG:32631 ",
        ),
        "bad-points-crs": (
            write_points(tmp_path / "p9.geojson", good, ["a"] * 6),
            ["--tuning", "points_crs=EPSG:99999"],
            "--tuning: points_crs: unknown CRS (give e.g. EPSG:32631), got EPSG:99999",
        ),
        "ref-year": (
            write_points(tmp_path / "p3.geojson", good, ["a"] * 6),
            ["--reference-year", 2019],
            "--reference-year",
        ),
        "threshold": (
            write_points(tmp_path / "p4.geojson", good, ["a"] * 6),
            ["--threshold", -1.5],
            "--threshold",
        ),
        "years": (
            write_points(tmp_path / "p5.geojson", good, ["a"] * 6),
            ["--years", 2030],
            "--years",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "nodata",
        "outside",
        "label-only",
        "no-such-label",
        "no-such-column",
        "label-column",
        "points-crs",
        "bad-points-crs",
        "ref-year",
        "threshold",
        "years",
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(stores, tmp_path, capsys, case):
    points, flags, flag = _bad_cases(stores["float32"], tmp_path)[case]
    output = tmp_path / "sim.zarr"
    assert (
        run(
            "--embeddings",
            stores["float32"].path,
            "--points",
            points,
            *flags,
            "--output",
            output,
            *FNAPI,
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"efm similarity: error: {flag}") and "\n" not in err, err
    assert not output.exists()


def test_reference_points_from_a_file_or_a_frame_keep_only_the_label(tmp_path):
    """One reading of the reference points for the command (a file) and the Python API (a file or
    a DataFrame): the points whose column equals the label, compared as text."""
    import pandas as pd

    from transforms.core.errors import InputError
    from transforms.products.similarity import reference_points

    frame = pd.DataFrame(
        {"lon": [1.0, 2.0, 3.0, 4.0], "lat": [10.0, 20.0, 30.0, 40.0], "kind": ["a", "b", "a", "7"]}
    )
    path = tmp_path / "refs.csv"
    frame.to_csv(path, index=False)
    for points, api in ((str(path), False), (str(path), True), (frame, True)):
        got = reference_points(points, "kind", "a", api=api)
        assert got.x.tolist() == [1.0, 3.0] and got.y.tolist() == [10.0, 30.0]
        assert reference_points(points, "kind", 7, api=api).x.tolist() == [4.0]  # as text
        assert len(reference_points(points, None, None, api=api).x) == 4
    with pytest.raises(
        InputError, match=r"no point of the points has kind = 'c'; its values are 7, a, b"
    ) as caught:
        reference_points(frame, "kind", "c", api=True)
    assert caught.value.flag == "label"
    with pytest.raises(InputError, match=r"no point of .*refs.csv has kind = 'c'") as caught:
        reference_points(str(path), "kind", "c")
    assert caught.value.flag == "--label"
    # the API: a label needs its column (and the other way round)
    with pytest.raises(InputError) as caught:
        reference_points(str(path), None, "a", api=True)
    assert caught.value.flag == "label_column"
    with pytest.raises(InputError) as caught:
        reference_points(str(path), "kind", None, api=True)
    assert caught.value.flag == "label"


def test_similarity_asks_once_whether_its_input_is_a_collection(stores, tmp_path, monkeypatch):
    """Each look may be a remote reachability check (under a deadline): one per run, not one per use."""
    from transforms.storage import collection

    looked = []
    real = collection.is_collection

    def is_collection(path, *args, **kwargs):
        looked.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(collection, "is_collection", is_collection)
    s = stores["float32"]
    points = write_points(tmp_path / "refs.geojson", class_pixels(s, 1), ["a"] * 6)
    output = tmp_path / "sim.zarr"
    assert run("--embeddings", s.path, "--points", points, "--output", output, *FNAPI) == 0
    assert looked.count(s.path) == 1, looked


def test_label_is_column_equals_value(tmp_path):
    """`--label COLUMN=VALUE` split at the first `=` (a value may hold one); a bare VALUE, or an
    empty side, is refused naming the form (there is no default column)."""
    from transforms.core.errors import InputError
    from transforms.products.similarity import split_label

    assert split_label(None) == (None, None)
    assert split_label("kind=forest") == ("kind", "forest")
    assert split_label("kind=a=b") == ("kind", "a=b")
    assert split_label("kind= x") == ("kind", " x")  # compared as text, as given
    for bad in ("forest", "=forest", "kind=", ""):
        with pytest.raises(InputError) as caught:
            split_label(bad)
        assert str(caught.value) == (
            "--label: expected COLUMN=VALUE, the column of the points and the value that marks "
            f"the reference points (e.g. kind=forest), got {bad!r}"
        )


def test_points_crs_key_and_a_label_value_holding_an_equals_sign(stores, tmp_path, capsys):
    """A CSV in the store's CRS (x/y columns, no CRS of its own) read with --tuning points_crs,
    the reference the points whose kind is 'forest=old': equals numpy on the whole array. Without
    the key the coordinates are taken for degrees and refused, naming the key."""
    import pandas as pd

    s = stores["float32"]
    water, forest = class_pixels(s, 0, seed=3), class_pixels(s, 3, seed=4)
    pixels = water + forest
    pd.DataFrame(
        {
            "x": [X0 + (c + 0.5) * SCALE for _, c in pixels],
            "y": [Y0 - (r + 0.5) * SCALE for r, _ in pixels],
            "kind": ["water"] * len(water) + ["forest=old"] * len(forest),
        }
    ).to_csv(tmp_path / "refs.csv", index=False)
    argv = ["--embeddings", s.path, "--points", tmp_path / "refs.csv", "--label", "kind=forest=old"]
    output = tmp_path / "sim.zarr"
    assert run(*argv, "--output", output, *FNAPI) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("efm similarity: error: --points: ") and "\n" not in err
    assert err.endswith("for other coordinates give their CRS, e.g. --tuning points_crs=EPSG:32631")
    assert not output.exists()
    tuned = ["--tuning", f"points_crs={s.grid.crs}"]
    assert run(*argv, *tuned, "--output", output, *FNAPI) == 0
    got = xr.open_zarr(output, mask_and_scale=False)
    np.testing.assert_allclose(got["similarity"].values, expected(s, forest)[0], rtol=0, atol=ATOL)
    assert got.attrs["label_column"] == "kind" and got.attrs["label"] == "forest=old"
    with_data = [sum(bool(s.valid[t, r, c]) for r, c in forest) for t in range(2)]
    assert got.attrs["reference_points"] == with_data
