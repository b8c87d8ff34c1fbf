"""efm cluster: k-means on a uniform random sample recovers well-separated classes."""
from __future__ import annotations

import json

import numpy as np
import xarray as xr
from sklearn.metrics import adjusted_rand_score

from pipelines import classify as classify_cli, cluster as cluster_cli
from store_factory import make_store
from transforms import sampling

FNAPI = ["--runner=FnApiRunner"]


def test_kmeans_recovers_synthetic_classes(tmp_path, capsys):
    s = make_store(str(tmp_path / "emb.zarr"), n_classes=5, dtype="int8", seed=2)
    model = tmp_path / "km.skops"
    assert cluster_cli.run(["--embeddings", s.path, "--clusters", "5", "--sample-size", "3000", "--output", str(model), *FNAPI]) == 0
    printed = capsys.readouterr().out
    assert "3000 pixels drawn uniformly" in printed
    meta = json.loads((tmp_path / "km.skops.json").read_text())
    assert meta["kind"] == "clusterer" and meta["classes"] == [0, 1, 2, 3, 4] and meta["metrics"]["sample_size"] == 3000
    out = tmp_path / "clusters.zarr"
    assert classify_cli.run(["--embeddings", s.path, "--model", str(model), "--output", str(out), *FNAPI]) == 0
    clusters = xr.open_zarr(out, mask_and_scale=False)["class"]
    assert clusters.attrs["flag_meanings"] == "cluster_0 cluster_1 cluster_2 cluster_3 cluster_4"
    clusters = clusters.values
    assert adjusted_rand_score(s.labels[s.valid], clusters[s.valid]) > 0.99
    assert (clusters[~s.valid] == 255).all()


def test_bottom_k_sample_is_uniform_and_split_independent():
    rng = np.random.default_rng(0)
    keys = rng.random(10_000)
    vectors = np.arange(10_000, dtype=np.float32)[:, None]
    whole = sampling.bottom_k(keys, vectors, 100)
    combine = sampling.BottomK(100, 1)
    parts = [combine.add_input(combine.create_accumulator(), (keys[i:i + 999], vectors[i:i + 999])) for i in range(0, 10_000, 999)]
    merged = combine.extract_output(combine.merge_accumulators(parts))
    assert sorted(merged[1][:, 0]) == sorted(whole[1][:, 0])
    # uniform: over many draws each item is picked with probability k / n
    hits = np.zeros(1000)
    for seed in range(400):
        hits[sampling.bottom_k(np.random.default_rng(seed).random(1000), np.arange(1000)[:, None], 50)[1][:, 0]] += 1
    assert abs(hits.mean() - 20) < 1e-9 and hits[:500].sum() / hits.sum() > 0.45


def test_cluster_refuses_bad_flags(tmp_path, capsys):
    assert cluster_cli.run(["--embeddings", str(tmp_path / "x.zarr"), "--clusters", "1", "--output", str(tmp_path / "m.skops")]) == 2
    assert "--clusters: k-means needs at least 2" in capsys.readouterr().err
    assert cluster_cli.run(["--embeddings", str(tmp_path / "x.zarr"), "--clusters", "8", "--sample-size", "4", "--output", str(tmp_path / "m.skops")]) == 2
    assert "--sample-size" in capsys.readouterr().err
