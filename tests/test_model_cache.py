"""The per-process model cache (transforms/learning/model_cache.py): a file is parsed once per
process whatever the number of DoFn instances or threads, and a changed file is never served
from the cache."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from transforms.core.errors import InputError
from transforms.learning import model_cache, models


@pytest.fixture(autouse=True)
def empty_cache():
    model_cache.clear()
    yield
    model_cache.clear()


def _save(path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(60, 4)), np.arange(60) % 3
    return models.save_model(LogisticRegression().fit(X, y), str(path), {"kind": "classifier"})[
        "sha256"
    ]


def test_one_parse_per_process_whatever_the_callers(tmp_path):
    path = tmp_path / "m.skops"
    sha = _save(path, 0)
    got = []
    threads = [
        threading.Thread(target=lambda: got.append(model_cache.load(str(path), sha)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert model_cache.loads == 1
    assert len(got) == 8 and all(m is got[0] for m in got)
    assert model_cache.load(str(path), sha.upper()) is got[0]  # the sha the user typed, any case
    assert model_cache.loads == 1


def test_a_changed_file_is_not_served_from_the_cache(tmp_path):
    path = tmp_path / "m.skops"
    old_sha = _save(path, 0)
    old = model_cache.load(str(path), old_sha)
    new_sha = _save(path, 1)  # same path, other content
    assert new_sha != old_sha
    with pytest.raises(InputError, match="sha256"):
        model_cache.load(str(path), old_sha)  # the driver checked the old file: refuse the new one
    new = model_cache.load(str(path), new_sha)
    assert new is not old and model_cache.loads == 2
    assert not np.array_equal(new.coef_, old.coef_)


def test_the_drivers_load_is_reused(tmp_path):
    path = tmp_path / "m.skops"
    _save(path, 0)
    loaded = models.load_model(str(path))
    model_cache.put(loaded)
    assert model_cache.load(str(path), loaded.sha256) is loaded.model
    assert model_cache.loads == 0
