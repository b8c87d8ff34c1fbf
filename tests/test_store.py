"""The embedding store: contract, refusal of existing outputs, resume markers, completion."""

import apache_beam as beam
import numpy as np
import pytest
import rioxarray  # noqa: F401
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.core import quantize
from transforms.core.chunks import plan_chunks
from transforms.core.errors import InputError
from transforms.core.grid import Grid, chunk_windows
from transforms.sources.grid_source import GridSource
from transforms.storage import store

GRID = Grid("EPSG:32631", 10.0, 500000.0, 5000000.0, 300, 200)
YEARS = [2021, 2022]
BANDS = tuple(f"A{i:02d}" for i in range(64))


def template(dtype="float32", **attrs):
    return store.embedding_template(
        GRID, YEARS, BANDS, dtype, 128, {"source": "test", "collection": "c", **attrs}
    )


def values(spec):
    w = spec.window
    rng = np.random.default_rng(spec.index)
    codes = rng.integers(-127, 128, size=(w.rows, w.cols, 64)).astype(np.int8)
    codes[:5, :5] = quantize.NODATA_CODE
    return codes


def write(path, specs, dtype="float32"):
    source = GridSource(
        grid=GRID, years=tuple(YEARS), bands=BANDS, store_dtype=dtype, transfer_itemsize=1
    )
    tmpl = template(dtype)

    def chunk(spec):
        codes = values(spec)
        return spec.key, source.to_dataset(
            spec, codes if dtype == "int8" else quantize.dequantize(codes)
        )

    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        written = p | beam.Create(specs) | beam.Map(chunk) | store.WriteChunks(path, tmpl)
        written | store.MarkComplete(
            path, [s.marker for s in plan_chunks(YEARS, list(chunk_windows(GRID, 128)))]
        )


def test_template_follows_the_contract():
    t = template()
    assert t["embedding"].dims == ("time", "band", "y", "x")  # the geo-embedding convention
    assert list(t["band"].values) == list(BANDS)
    assert t["time"].values.tolist() == YEARS and t["time"].dtype == np.int32
    assert t.rio.crs.to_epsg() == 32631 and t.rio.transform() == GRID.transform
    assert t["embedding"].data.chunksize == (1, 64, 128, 128)  # one shard per chunk written
    assert t.attrs["geoemb:dimensions"] == 64 and t.attrs["geoemb:data_type"] == "float32"
    assert t.attrs["license"] == "CC-BY-4.0" and t.attrs[store.STATUS_ATTR] == "incomplete"


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_written_store_round_trips_and_is_marked_complete(tmp_path, dtype):
    path = str(tmp_path / "s.zarr")
    assert store.prepare(path, template(dtype), resume=False, overwrite=False) == set()
    with pytest.raises(InputError, match="incomplete"):
        store.open_embeddings(path)
    specs = plan_chunks(YEARS, list(chunk_windows(GRID, 128)))
    write(path, specs, dtype)
    ds = store.open_embeddings(path)
    assert ds.attrs[store.STATUS_ATTR] == "complete"
    assert ds.rio.crs.to_epsg() == 32631 and ds.rio.transform() == GRID.transform
    for spec in specs:
        w = spec.window
        got = (
            ds["embedding"]
            .isel(
                time=spec.time_index, y=slice(w.row, w.row + w.rows), x=slice(w.col, w.col + w.cols)
            )
            .values
        )
        if dtype == "int8":
            np.testing.assert_array_equal(got, values(spec))
            assert ds["embedding"].attrs["_FillValue"] == -128 and "quantization" in ds.attrs
        else:
            np.testing.assert_array_equal(got, quantize.dequantize(values(spec)))
        np.testing.assert_array_equal(store.as_float(got), quantize.dequantize(values(spec)))


def test_existing_output_is_refused_and_nothing_is_written(tmp_path):
    path = str(tmp_path / "s.zarr")
    store.prepare(path, template(), resume=False, overwrite=False)
    before = sorted(p.name for p in (tmp_path / "s.zarr").iterdir())
    with pytest.raises(InputError, match="already exists; pass --resume"):
        store.check_output_location(path, resume=False, overwrite=False)
    with pytest.raises(InputError, match="already exists"):
        store.prepare(path, template(), resume=False, overwrite=False)
    assert sorted(p.name for p in (tmp_path / "s.zarr").iterdir()) == before


def test_resume_returns_done_chunks_and_refuses_a_different_run(tmp_path):
    path = str(tmp_path / "s.zarr")
    store.prepare(path, template(), resume=False, overwrite=False)
    specs = plan_chunks(YEARS, list(chunk_windows(GRID, 128)))
    with pytest.raises(Exception, match="chunks were not written"):
        write(path, specs[:3])
    assert store.prepare(path, template(), resume=True, overwrite=False) == {
        s.marker for s in specs[:3]
    }
    with pytest.raises(InputError, match=r"--resume: .* has collection 'c' \(this run: 'other'\)"):
        store.prepare(path, template(collection="other"), resume=True, overwrite=False)
    assert store.prepare(path, template(), resume=False, overwrite=True) == set()
    assert store.done_markers(path) == set()


def test_dequantize_is_the_published_formula_bit_for_bit():
    codes = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    c = codes.astype(np.float64)
    expected = ((c / 127.5) ** 2 * np.sign(c)).astype(
        np.float32
    )  # float64 then float32, as Earth Engine serves
    expected[codes == -128] = np.nan
    got = quantize.dequantize(codes)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(quantize.quantize(got), codes)  # and back
