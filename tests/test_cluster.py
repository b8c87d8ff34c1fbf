"""efm cluster: k-means on a uniform random sample recovers well-separated classes."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr
from sklearn.metrics import adjusted_rand_score

from pipelines import classify as classify_cli
from pipelines import cluster as cluster_cli
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import make_store
from transforms.learning import random_pixels


def test_kmeans_recovers_synthetic_classes(tmp_path, capsys):
    s = make_store(str(tmp_path / "emb.zarr"), n_classes=5, dtype="int8", seed=2)
    model = tmp_path / "km.skops"
    assert (
        cluster_cli.run(
            [
                "--embeddings",
                s.path,
                "--clusters",
                "5",
                "--tuning",
                "sample_size=3000",
                "--output",
                str(model),
                *FNAPI,
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "3000 pixels drawn uniformly" in captured.out
    assert (
        "efm cluster: drawing 3,000 valid pixels uniformly from " in captured.err
    )  # says what it does before it starts
    meta = json.loads((tmp_path / "km.skops.json").read_text())
    assert (
        meta["kind"] == "clusterer"
        and meta["classes"] == [0, 1, 2, 3, 4]
        and meta["metrics"]["sample_size"] == 3000
    )
    out = tmp_path / "clusters.zarr"
    assert (
        classify_cli.run(
            ["--embeddings", s.path, "--model", str(model), "--output", str(out), *FNAPI]
        )
        == 0
    )
    clusters = xr.open_zarr(out, mask_and_scale=False)["class"]
    assert clusters.attrs["flag_meanings"] == "cluster_0 cluster_1 cluster_2 cluster_3 cluster_4"
    clusters = clusters.values
    assert adjusted_rand_score(s.labels[s.valid], clusters[s.valid]) > 0.99
    assert (clusters[~s.valid] == 255).all()


def test_bottom_k_sample_is_split_independent():
    rng = np.random.default_rng(0)
    keys = rng.random(10_000)
    vectors = np.arange(10_000, dtype=np.float32)[:, None]
    whole = random_pixels.bottom_k(keys, vectors, 100)
    combine = random_pixels.BottomK(100, 1)
    parts = [
        combine.add_input(combine.create_accumulator(), (keys[i : i + 999], vectors[i : i + 999]))
        for i in range(0, 10_000, 999)
    ]
    merged = combine.extract_output(combine.merge_accumulators(parts))
    assert sorted(merged[1][:, 0]) == sorted(whole[1][:, 0])


def test_bottom_k_sample_is_uniform():
    """Over many seeds, every item is drawn with probability k/n: a chi-square test over the items'
    inclusion counts, plus the first and last halves and single positions, each against a bound
    from the binomial (hypergeometric for halves) at a false-alarm rate below 1e-6. Drawn through
    the combiner, split in uneven parts, as the pipeline does. A first-k sampler, or one that leans
    to low or high positions by a few percent, fails it."""
    from scipy import stats

    n, k, seeds = 200, 20, 3000
    p = k / n
    hits = np.zeros(n)
    first_half = np.zeros(seeds)
    combine = random_pixels.BottomK(k, 1)
    items = np.arange(n, dtype=np.float32)[:, None]
    for seed in range(seeds):
        keys = np.random.default_rng(seed).random(n)
        parts = [
            combine.add_input(combine.create_accumulator(), (keys[i:j], items[i:j]))
            for i, j in [(0, 37), (37, 120), (120, n)]
        ]
        drawn = combine.extract_output(combine.merge_accumulators(parts))[1][:, 0].astype(int)
        assert len(drawn) == k and len(set(drawn)) == k
        hits[drawn] += 1
        first_half[seed] = (drawn < n // 2).sum()
    z = 5.3  # two-sided normal tail ~1e-7
    chi2 = ((hits - seeds * p) ** 2 / (seeds * p * (1 - p))).sum()
    assert chi2 < stats.chi2.ppf(1 - 1e-7, n - 1), chi2
    half_sd = np.sqrt(
        seeds * k * 0.25 * (n - k) / (n - 1)
    )  # hypergeometric: k of n, half of them "first"
    assert abs(first_half.sum() - seeds * k / 2) < z * half_sd, first_half.sum()
    single_sd = np.sqrt(seeds * p * (1 - p))
    for position in (0, 1, n // 2, n - 2, n - 1):
        assert abs(hits[position] - seeds * p) < z * single_sd, (position, hits[position])


def test_cluster_refuses_bad_flags(tmp_path, capsys):
    assert (
        cluster_cli.run(
            [
                "--embeddings",
                str(tmp_path / "x.zarr"),
                "--clusters",
                "1",
                "--output",
                str(tmp_path / "m.skops"),
            ]
        )
        == 2
    )
    assert "--clusters: k-means needs at least 2" in capsys.readouterr().err
    assert (
        cluster_cli.run(
            [
                "--embeddings",
                str(tmp_path / "x.zarr"),
                "--clusters",
                "8",
                "--tuning",
                "sample_size=4",
                "--output",
                str(tmp_path / "m.skops"),
            ]
        )
        == 2
    )
    assert (
        "efm cluster: error: --tuning: sample_size: 4 pixels cannot make 8 clusters; draw at least "
        "as many pixels as clusters" in capsys.readouterr().err
    )
    assert (
        cluster_cli.run(
            [
                "--embeddings",
                str(tmp_path / "x.zarr"),
                "--clusters",
                "100000",
                "--output",
                str(tmp_path / "m.skops"),
            ]
        )
        == 2
    )
    assert "--clusters: 100000 clusters cannot be stored in a class map" in capsys.readouterr().err


def test_sample_size_and_seed_are_tuning_keys(tmp_path, capsys):
    """sample_size and seed (were --sample-size, --seed) reach the run: the sidecar records them,
    k-means is seeded with the seed, the same seed draws the same sample (the same centres) and
    another seed another; the old flags and bad values are refused in one line."""
    from transforms.learning import models

    s = make_store(str(tmp_path / "emb.zarr"), n_classes=3, seed=4)

    def fit(name: str, tuning: str) -> tuple[dict, np.ndarray, object]:
        argv = ["--embeddings", s.path, "--clusters", "3", "--output", str(tmp_path / name)]
        assert cluster_cli.run([*argv, "--tuning", tuning, *FNAPI]) == 0
        meta = json.loads((tmp_path / f"{name}.json").read_text())
        model = models.load_model(str(tmp_path / name)).model
        return meta, np.sort(model.cluster_centers_, axis=0), model

    meta, centres, model = fit("a.skops", "sample_size=60,seed=7")
    assert meta["params"] == {"n_clusters": 3, "seed": 7, "sample_size": 60}
    assert meta["metrics"]["sample_size"] == 60 and model.random_state == 7
    _, again, _ = fit("b.skops", "seed=7,sample_size=60")
    np.testing.assert_array_equal(again, centres)
    other_meta, other, _ = fit("c.skops", "sample_size=60,seed=8")
    assert other_meta["params"]["seed"] == 8 and not np.array_equal(other, centres)
    capsys.readouterr()
    base = ["--embeddings", s.path, "--output", str(tmp_path / "d.skops"), *FNAPI]
    for extra, line in [
        (["--sample-size", "500"], "--sample-size: moved: use --tuning sample_size=500 "),
        (["--seed=3"], "--seed: moved: use --tuning seed=3 "),
        (["--tuning", "sample_size=0"], "--tuning: sample_size: must be a positive integer, got 0"),
        (["--tuning", "seed=1.5"], "--tuning: seed: must be an integer, got '1.5'"),
    ]:
        assert cluster_cli.run([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and line in err, err
    assert not (tmp_path / "d.skops").exists()
