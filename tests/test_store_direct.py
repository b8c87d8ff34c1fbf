"""store.setup / store.WriteChunks write with zarr directly (transforms/storage/zarr_direct.py): the stores must be
the ones xarray-beam's setup_zarr / write_chunk_to_zarr write, file for file (metadata and chunks)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr
import xarray_beam as xbeam

from transforms.core import quantize
from transforms.core.grid import Grid
from transforms.products.change import mask_variable, similarity_variable
from transforms.products.chunk_map import Variable, output_template
from transforms.storage import store, zarr_direct

GRID = Grid("EPSG:32631", 10.0, 500000.0, 5000000.0, 150, 140)


def _embeddings(dtype):
    return store.embedding_template(
        GRID,
        [2021, 2022],
        [f"A{i:02d}" for i in range(64)],
        dtype,
        64,
        {"source": "test", "n": np.int64(3)},
    )


@pytest.fixture(scope="module")
def emb():
    """The grid products take from an embedding store (coords and spatial_ref), not written by the code under test."""
    return _embeddings("float32")


def _templates(emb):
    change = [similarity_variable("s"), mask_variable("changed", "below 0.5", 0.5)]
    classes = [
        Variable("class", "uint8", 0, {"flag_values": [1, 2], "class_labels": ["a", "b"]}),
        similarity_variable("c"),
    ]
    return {
        "embeddings-int8": _embeddings("int8"),
        "embeddings-float32": _embeddings("float32"),
        "change": output_template(
            emb,
            change,
            None,
            chunk_rows=64,
            chunk_cols=64,
            product="change",
            attrs={"threshold": 0.5, "years": [1, 2]},
        ),
        "classes": output_template(
            emb,
            classes,
            [2021, 2022],
            chunk_rows=64,
            chunk_cols=64,
            product="classes",
            attrs={"a": 1},
        ),
    }


def _old_setup(path, template):
    """xarray-beam's setup_zarr with the encoding efm's stores have (Zarr 3: sharded, the write
    unit a shard, inner chunks, Blosc-Zstd; bands as Zarr 3 strings): what store.setup must equal."""
    from zarr.codecs import BloscCodec

    variable = next(iter(template.data_vars))
    shards = dict(zip(template[variable].dims, template[variable].data.chunksize))
    inner = {d: zarr_direct.inner_side(c) if d in ("y", "x") else c for d, c in shards.items()}
    encoding = {
        name: {
            "_FillValue": template[name].encoding.get(
                "_FillValue", quantize.fill_value(template[name].dtype)
            ),
            "compressors": [BloscCodec(**zarr_direct.codec(template[name].dtype))],
            # efm also makes the fill Zarr's own (xarray leaves it 0): an absent inner chunk then
            # reads as no data in any reader, not as code 0
            "fill_value": template[name].encoding.get(
                "_FillValue", quantize.fill_value(template[name].dtype)
            ),
        }
        for name in template.data_vars
    }
    if "band" in template.coords:
        template = template.assign_coords(band=template["band"].values.astype(object))
    with zarr_direct.quiet():
        xbeam.setup_zarr(
            template,
            path,
            zarr_chunks=inner,
            zarr_shards=shards,
            zarr_format=store.ZARR_FORMAT,
            encoding=encoding,
        )


def _files(path):
    out = {}
    for folder, _, names in os.walk(path):
        for name in names:
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, path)
            data = open(full, "rb").read()
            out[rel] = json.loads(data) if name.startswith(".z") or name == "zarr.json" else data
    return out


def _chunks(name, template, seed):
    """Every chunk of `template` as (key, Dataset), values as the products make them (fill where no data)."""
    rng = np.random.default_rng(seed)
    variable = template[next(iter(template.data_vars))]
    step = dict(zip(variable.dims, variable.data.chunksize))
    sizes = dict(template.sizes)
    starts = [{}]
    for dim in variable.dims:
        starts = [{**s, dim: o} for s in starts for o in range(0, sizes[dim], step[dim])]
    for offsets in starts:
        region = {d: slice(o, min(o + step[d], sizes[d])) for d, o in offsets.items()}
        data = {}
        for v in template.data_vars:
            shape = tuple(region[d].stop - region[d].start for d in template[v].dims)
            dtype = template[v].dtype
            if dtype == np.int8:
                values = rng.integers(-128, 128, size=shape).astype(np.int8)
            elif np.issubdtype(dtype, np.integer):
                values = rng.integers(0, 3, size=shape).astype(dtype)
            else:
                values = rng.random(shape).astype(dtype)
                values[rng.random(shape) < 0.1] = np.nan
            if (
                offsets.get("y") == 0 and offsets.get("x") == 0
            ):  # an all-fill chunk: stored by neither
                values[...] = template[v].encoding.get("_FillValue", quantize.fill_value(dtype))
            data[v] = (template[v].dims, values)
        yield (
            xbeam.Key(
                {d: o for d, o in offsets.items() if d != "band"}
                | ({"band": 0} if "band" in offsets else {})
            ),
            xr.Dataset(data),
        )


@pytest.mark.parametrize("kind", ["embeddings-int8", "embeddings-float32", "change", "classes"])
def test_setup_and_writes_equal_xarray_beams(emb, tmp_path, kind):
    template = _templates(emb)[kind]
    old, new = str(tmp_path / "old.zarr"), str(tmp_path / "new.zarr")
    _old_setup(old, template)
    store.setup(new, template)
    assert _files(new) == _files(old)
    variable = template[next(iter(template.data_vars))]
    chunks = dict(zip(variable.dims, variable.data.chunksize))
    writer = zarr_direct.ChunkWriter(new, template, chunks)
    for key, chunk in _chunks(kind, template, 1):
        xbeam.write_chunk_to_zarr(key, chunk, old, template)
        writer.write(key.offsets, chunk)
    store.set_status(old, "complete")
    store.set_status(new, "complete")
    got, want = _files(new), _files(old)
    assert sorted(got) == sorted(want) and got == want


def test_setup_never_replaces_a_store(tmp_path):
    path = str(tmp_path / "s.zarr")
    store.setup(path, _embeddings("int8"))
    before = _files(path)
    with pytest.raises(FileExistsError):
        store.setup(path, _embeddings("float32"))
    assert _files(path) == before


def test_bad_chunks_are_refused(emb, tmp_path):
    template = _templates(emb)["change"]
    path = str(tmp_path / "c.zarr")
    store.setup(path, template)
    writer = zarr_direct.ChunkWriter(path, template, {"y": 64, "x": 64})
    good = np.zeros((64, 64), np.float32)
    with pytest.raises(ValueError, match="not aligned"):
        writer.write({"y": 32, "x": 0}, xr.Dataset({"similarity": (("y", "x"), good)}))
    with pytest.raises(ValueError, match="outside the store"):
        writer.write({"y": 128, "x": 0}, xr.Dataset({"similarity": (("y", "x"), good)}))
    with pytest.raises(ValueError, match="not in the store"):
        writer.write({"y": 0, "x": 0}, xr.Dataset({"other": (("y", "x"), good)}))
    with pytest.raises(TypeError, match="dtype"):
        writer.write({"y": 0, "x": 0}, xr.Dataset({"changed": (("y", "x"), good)}))


@pytest.mark.parametrize("kind", ["embeddings-int8", "embeddings-float32"])
def test_a_chunk_of_fill_values_is_no_file_as_with_zarr(emb, tmp_path, kind):
    """zarr writes no chunk file for a chunk of fill values (NaN included) and drops the one there: so does the direct write."""
    template = _templates(emb)[kind]
    path = str(tmp_path / "s.zarr")
    store.setup(path, template)
    chunks = dict(zip(template["embedding"].dims, template["embedding"].data.chunksize))
    writer = zarr_direct.ChunkWriter(path, template, chunks)
    key, chunk = next(  # an edge chunk
        (key, chunk)
        for key, chunk in _chunks(kind, template, 1)
        if key.offsets.get("y") == 64
        and key.offsets.get("x") == 128
        and key.offsets.get("time", 0) == 0
    )
    writer.write(key.offsets, chunk)
    chunk_file = os.path.join(
        path, "embedding", "c", "0", "0", "1", "2"
    )  # (time, band, y, x) shard
    assert os.path.exists(chunk_file)
    writer.write(
        key.offsets,
        chunk.copy(
            data={
                "embedding": np.full(
                    chunk["embedding"].shape,
                    template["embedding"].data.dtype.type(
                        quantize.fill_value(str(template["embedding"].dtype))
                    ),
                )
            }
        ),
    )
    assert not os.path.exists(chunk_file)
    values = (
        xr.open_zarr(path)["embedding"].isel(time=0, y=slice(64, 128), x=slice(128, None)).values
    )
    np.testing.assert_array_equal(
        values, np.full(values.shape, quantize.fill_value(str(values.dtype)), values.dtype)
    )


@pytest.mark.parametrize("dtype, blocksize", [("float32", 256 * 1024), ("int8", 0)])
def test_float32_inner_chunks_are_blosc_blocks_of_256_kib(tmp_path, dtype, blocksize):
    """float32 arrays are Blosc-Zstd in 256 KiB blocks (smaller, faster to decode: the blocks
    blosc picks by itself at level 1 are small); int8 ones keep blosc's own. Read from the shard
    file with numcodecs alone: the blosc header's block size, and the values."""
    import numcodecs

    template = _embeddings(dtype)
    path = str(tmp_path / "s.zarr")
    store.setup(path, template)
    meta = json.load(open(os.path.join(path, "embedding", "zarr.json")))
    (sharding,) = meta["codecs"]
    blosc = sharding["configuration"]["codecs"][1]["configuration"]
    assert (blosc["cname"], blosc["clevel"], blosc["shuffle"]) == ("zstd", 1, "noshuffle")
    assert blosc["blocksize"] == blocksize
    writer = zarr_direct.ChunkWriter(path, template, {"time": 1, "band": 64, "y": 64, "x": 64})
    rng = np.random.default_rng(5)
    codes = rng.integers(-127, 128, size=(1, 64, 64, 64)).astype(np.int8)  # (time, y, x, band)
    values = codes if dtype == "int8" else quantize.dequantize(codes)
    dims = ("time", "y", "x", "band")
    writer.write({"time": 0, "y": 64, "x": 64}, xr.Dataset({"embedding": (dims, values)}))
    data = open(os.path.join(path, "embedding", "c", "0", "0", "1", "1"), "rb").read()
    offset, nbytes = np.frombuffer(data[-20:-4], dtype="<u8")  # one inner chunk: its index
    chunk = data[int(offset) : int(offset + nbytes)]
    header_blocksize = int.from_bytes(chunk[8:12], "little")
    if blocksize:
        assert header_blocksize == blocksize
    else:
        assert header_blocksize != 256 * 1024
    decoded = np.frombuffer(numcodecs.Blosc().decode(chunk), dtype=dtype).reshape(64, 64, 64)
    assert np.array_equal(decoded, values[0].transpose(2, 0, 1), equal_nan=True)
