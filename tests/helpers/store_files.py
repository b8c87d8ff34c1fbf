"""A store's files as bytes, and a store as a killed run leaves it (read and cut directly on disk)."""

from __future__ import annotations

import json
import os
import pathlib


def snapshot(path) -> dict[str, bytes]:
    """Every file under `path` (or the file itself) with its bytes."""
    p = pathlib.Path(path)
    if p.is_file():
        return {"": p.read_bytes()}
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}


def interrupt(path: str) -> None:
    """As a run killed half-way leaves a store: incomplete, every other chunk really not written
    (its done marker and the Zarr 3 shard files of every data variable under it deleted, found
    from the arrays' own zarr.json, not through the code under test)."""
    root = pathlib.Path(path)
    done = root / ".efm" / "done"
    removed = 0
    for marker in sorted(os.listdir(done))[::2]:
        t, row, col = (int(v) for v in marker.split("."))
        for meta_file in root.glob("*/zarr.json"):
            meta = json.loads(meta_file.read_text())
            dims = meta.get("dimension_names") or []
            if meta.get("node_type") != "array" or not {"y", "x"} <= set(dims):
                continue
            shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
            at = {"time": str(t), "y": str(row // shard[dims.index("y")])}
            at["x"] = str(col // shard[dims.index("x")])
            encoding = meta["chunk_key_encoding"]
            assert encoding["name"] == "default", encoding
            sep = encoding.get("configuration", {}).get("separator", "/")
            pattern = sep.join(["c", *(at.get(d, "*") for d in dims)])
            files = list(meta_file.parent.glob(pattern))
            for f in files:
                f.unlink()
            removed += len(files)
        (done / marker).unlink()
    assert removed, f"no chunk file to delete in {path}: was anything written?"
    # the status as a killed run leaves it, written into the group's zarr.json directly
    group = root / "zarr.json"
    meta = json.loads(group.read_text())
    meta["attributes"]["efm_status"] = "incomplete"
    group.write_text(json.dumps(meta))
