"""A chunk predicted in threads over its rows (transforms/products/classify.py, `in_parts`) gives
exactly what one call on the whole chunk gives, for every model kind and with confidence."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

from transforms.products.classify import class_encoding, in_parts, predict_chunk, regress_chunk


@pytest.fixture(scope="module")
def chunk():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(120, 100, 8)).astype(
        np.float32
    )  # 12,000 rows: split in parts of 4,096-row multiples
    values[rng.random((120, 100)) < 0.05] = np.nan
    X = rng.normal(size=(300, 8)).astype(np.float32)
    return values, X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)


@pytest.mark.parametrize(
    "model",
    [KNeighborsClassifier(5), RandomForestClassifier(20, random_state=0), LogisticRegression()],
    ids=type,
)
def test_threads_over_rows_give_the_single_call(chunk, model):
    values, X, y = chunk
    model.fit(X, y)
    enc = class_encoding(model.classes_)
    one = predict_chunk(model, values, enc.lookup(), enc.dtype, enc.fill, confidence=True, parts=1)
    for parts in (2, 3):
        got = predict_chunk(
            model, values, enc.lookup(), enc.dtype, enc.fill, confidence=True, parts=parts
        )
        np.testing.assert_array_equal(got[0], one[0])
        np.testing.assert_array_equal(got[1], one[1])


def test_parts_cover_every_row_once():
    rows = np.arange(20_000)
    seen = []
    out = in_parts(lambda part: (seen.append(len(part)), part * 2)[1], rows, 3)
    np.testing.assert_array_equal(out, rows * 2)
    assert sorted(seen) == [3616, 8192, 8192]  # parts of ceil(20000 / 3 / 4096) * 4096 = 8192 rows


def test_regression_in_threads(chunk):
    values, X, y = chunk
    model = KNeighborsRegressor(5).fit(X, y.astype(float))
    np.testing.assert_array_equal(
        regress_chunk(model, values, parts=2), regress_chunk(model, values, parts=1)
    )
