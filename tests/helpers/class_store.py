"""A complete class-map store written directly (zarr), not by efm classify."""

from __future__ import annotations

import numpy as np
import zarr

from transforms.products.classify import class_encoding, class_template
from transforms.storage import store


def make_class_store(path, embeddings, labels=("water", "forest", "crop land")):
    """A complete class-map store on the embedding store's grid, written directly."""
    ds = store.open_embeddings(embeddings)
    enc = class_encoding(list(labels))
    chunk = ds["embedding"].encoding["chunks"][1]
    template = class_template(
        ds,
        [2021, 2022],
        enc,
        confidence=False,
        chunk_rows=chunk,
        chunk_cols=chunk,
        attrs={"source": embeddings},
    )
    store.setup(path, template)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, len(labels), (2, ds.sizes["y"], ds.sizes["x"])).astype(np.uint8)
    codes[:, :40, :50] = enc.fill
    zarr.open_group(path, mode="r+")["class"][...] = codes
    store.set_status(path, "complete")
    return ds, codes
