"""The COG mirror read from s3:// (moto's S3 server on loopback) and http:// (a static server).

The generated mirror is uploaded to a local S3-compatible server (moto's ThreadedMotoServer,
reached through the real s3fs/aiobotocore via AWS_ENDPOINT_URL, as a user would point at any
S3 endpoint) and served over plain HTTP by a range-capable static server (fsspec's
HTTPFileSystem handles http:// and https:// alike; only TLS differs). `efm extract` from
each must equal, pixel for pixel, the extract from the local copy and the independent
nearest look-up of tests/helpers/cog_mirror.py, which reads the source files with rasterio directly.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("s3fs", reason="the [s3] extra")
moto_server = pytest.importorskip("moto.server", reason="moto[server], in the [test] extra")

from pipelines import extract  # noqa: E402
from sample_data import generate as sample_data  # noqa: E402
from tests.helpers import range_http  # noqa: E402
from tests.helpers import s3 as s3_helpers  # noqa: E402
from tests.helpers.cog_mirror import (
    SPEC,
    bbox_arg,
    check_nearest,
    files_of,
    grid_of,
    make_source,
    reference_grid,
    sample_data_aoi,
)
from tests.helpers.runners import FNAPI, MULTIPROCESS
from transforms.core.errors import InputError  # noqa: E402
from transforms.core.grid import Window  # noqa: E402
from transforms.sources import cog_index, cog_paths, remote_fs  # noqa: E402

PREFIX = "tge-labs/aef/v1/annual"  # the public mirror's layout under its bucket
_fresh_s3_state = s3_helpers.fresh_state
_uploader = s3_helpers.uploader


SPEC_DATA: dict = {}  # the generated mirror, for run_extract's --bbox


@pytest.fixture(scope="module", autouse=True)
def mirror(tmp_path_factory):
    SPEC_DATA["mirror"] = sample_data.generate(str(tmp_path_factory.mktemp("sample")), SPEC)
    return SPEC_DATA["mirror"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 and an environment with no AWS credentials at all."""
    with s3_helpers.moto_server(str(tmp_path_factory.mktemp("no-aws"))) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def s3_mirror(mirror, s3):
    """The mirror in a public bucket, as on Source Cooperative (anonymous reads allowed)."""
    return s3_helpers.upload_folder(mirror.mirror, "opendata", PREFIX)


@pytest.fixture(scope="module")
def http_mirror(mirror):
    server, url = range_http.serve(os.path.dirname(mirror.mirror))
    server.root = f"{url}/{os.path.basename(mirror.mirror)}"
    yield server
    server.shutdown()


def run_extract(root, output, *extra, years="2022,2023"):
    return extract.run(
        [
            "--source",
            "cog",
            "--cog-root",
            root,
            f"--bbox={bbox_arg(SPEC_DATA['mirror'])}",
            "--crs",
            "EPSG:32610",
            "--years",
            years,
            "--output",
            str(output),
            "--tuning",
            "chunk_size=128",
            "--dtype",
            "int8",
            "--tuning",
            "max_concurrent_requests=4",
            *(extra or FNAPI),
        ]
    )


def read_store(output):
    ds = xr.open_zarr(str(output), consolidated=True, mask_and_scale=False).transpose(
        "time", "y", "x", "band"
    )
    assert ds.attrs["efm_status"] == "complete"
    return ds


@pytest.fixture(scope="module")
def local_store(mirror, tmp_path_factory):
    """The extract from the local mirror, checked against the direct rasterio look-up."""
    output = tmp_path_factory.mktemp("local") / "local.zarr"
    assert run_extract(mirror.mirror, output) == 0
    ds = read_store(output)
    grid = grid_of(ds)
    source = make_source(mirror.mirror, grid, "int8")
    for t, year in enumerate((2022, 2023)):
        check_nearest(
            ds["embedding"].isel(time=t).values,
            grid,
            Window(0, 0, grid.height, grid.width),
            files_of(source, year),
        )
    return ds


def assert_same_store(output, local, root):
    ds = read_store(output)
    assert ds.attrs["source"] == f"cog:{root}"
    for name in ("x", "y", "time"):
        np.testing.assert_array_equal(ds[name].values, local[name].values)
    got = ds["embedding"].values
    assert got.dtype == np.int8 and (got != -128).any()
    np.testing.assert_array_equal(got, local["embedding"].values)


# ---------------------------------------------------------------------------------------
# s3://
# ---------------------------------------------------------------------------------------


def test_s3_is_anonymous_without_credentials_and_signed_with_them(s3, monkeypatch):
    assert remote_fs.storage_options("s3://opendata/x") == {"anon": True}
    remote_fs._s3_anonymous.cache_clear()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert remote_fs.storage_options("s3://opendata/x") == {"anon": False}
    remote_fs._s3_anonymous.cache_clear()
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")  # the AWS CLI's switch wins over credentials
    assert remote_fs.storage_options("s3://opendata/x") == {"anon": True}
    remote_fs._s3_anonymous.cache_clear()
    assert (
        remote_fs.storage_options("gs://b/x") == {}
        and remote_fs.storage_options("https://h/x") == {}
    )


def test_s3_root_reads_the_same_as_local(mirror, s3_mirror):
    aoi = sample_data_aoi(mirror)
    index = cog_index.check_cog_root(s3_mirror, [2022], aoi)
    assert len(index) and all(p.startswith(s3_mirror + "/") for p in index["path"])
    grid = reference_grid(mirror)
    window = Window(40, 130, 150, 150)  # both zones, reprojection included
    for dtype in ("int8", "float32"):
        np.testing.assert_array_equal(
            _fetch(make_source(s3_mirror, grid, dtype), window),
            _fetch(make_source(mirror.mirror, grid, dtype), window),
        )


def _fetch(source, window):
    from transforms.core.chunks import ChunkSpec

    return source.fetch(ChunkSpec(0, 0, 2022, window), window)


def test_extract_from_s3_equals_local(s3_mirror, local_store, tmp_path):
    output = tmp_path / "s3.zarr"
    assert run_extract(s3_mirror, output) == 0
    assert_same_store(output, local_store, s3_mirror)


def test_extract_from_s3_multiprocess(s3_mirror, local_store, tmp_path):
    output = tmp_path / "s3-mp.zarr"
    assert (
        run_extract(s3_mirror, output, *MULTIPROCESS) == 0
    )  # workers find the endpoint and anonymity themselves
    assert_same_store(output, local_store, s3_mirror)


def test_private_bucket_needs_credentials(mirror, s3, tmp_path, capsys, monkeypatch):
    fs = _uploader()
    fs.mkdir("private", region_name="us-west-2")  # no public-read: anonymous reads are refused
    fs.put_file(os.path.join(mirror.mirror, "aef_index.parquet"), "private/aef/aef_index.parquet")
    output = tmp_path / "out.zarr"
    _fresh_s3_state()
    assert run_extract("s3://private/aef", output, years="2022") == 2
    assert_one_line(capsys, output, "--cog-root", "cannot reach s3://private/aef")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    _fresh_s3_state()
    try:
        assert cog_index.find_index("s3://private/aef") == "s3://private/aef/aef_index.parquet"
    finally:
        monkeypatch.undo()
        _fresh_s3_state()


# ---------------------------------------------------------------------------------------
# http:// (the https:// class: same fsspec filesystem)
# ---------------------------------------------------------------------------------------


def test_extract_from_http_equals_local(http_mirror, local_store, tmp_path):
    output = tmp_path / "http.zarr"
    http_mirror.requests_seen.clear()
    assert run_extract(http_mirror.root, output) == 0
    assert_same_store(output, local_store, http_mirror.root)
    assert any(r.startswith("GET /mirror/aef_index.") for r in http_mirror.requests_seen)
    assert not any(
        r.endswith((".aux.xml", ".ovr")) for r in http_mirror.requests_seen
    )  # GDAL looks for no side-cars


def test_file_vanishing_after_the_check_is_a_clear_error(mirror, s3_mirror, http_mirror):
    grid = reference_grid(mirror)
    for root in (s3_mirror, http_mirror.root):
        source = make_source(root, grid, "int8")
        source.files = (
            cog_index.CogFile(
                f"{root}/2022/10N/gone.tiff", 2022, "EPSG:32610", source.files[0].bounds
            ),
        )
        source.setup()
        with pytest.raises(
            FileNotFoundError, match="gone.tiff.*listed in the index but does not exist"
        ):
            _fetch(source, Window(0, 0, 64, 64))


def test_http_server_gone_mid_run_is_retried_not_called_missing(mirror):
    from transforms.sources.fetch import RetryableError

    server, url = range_http.serve(os.path.dirname(mirror.mirror))
    root = f"{url}/{os.path.basename(mirror.mirror)}"
    source = make_source(root, reference_grid(mirror), "int8")
    server.shutdown()
    server.server_close()
    with pytest.raises(RetryableError):
        _fetch(source, Window(0, 0, 64, 64))


# ---------------------------------------------------------------------------------------
# Bad roots: one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------


def assert_one_line(capsys, output, *fragments):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("efm extract: error: --cog-root:"), err
    for fragment in fragments:
        assert fragment in err, err
    assert not os.path.exists(output)


@pytest.mark.parametrize(
    "root, fragments",
    [
        ("s3://no-such-bucket/aef", ("no bucket named 'no-such-bucket'",)),
        (f"s3://opendata/{PREFIX}/2022", ("no index table in s3://opendata/", "aef_index.parquet")),
    ],
)
def test_bad_s3_roots_fail_fast(s3_mirror, local_store, tmp_path, capsys, root, fragments):
    output = tmp_path / "out.zarr"
    assert run_extract(root, output, years="2022") == 2
    assert_one_line(capsys, output, *fragments)


def test_bad_http_roots_fail_fast(http_mirror, local_store, tmp_path, capsys):
    output = tmp_path / "out.zarr"
    assert run_extract(http_mirror.root + "/2022", output, years="2022") == 2
    assert_one_line(capsys, output, "no index table in http://127.0.0.1")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run_extract(f"http://127.0.0.1:{port}/mirror", output, years="2022") == 2
    assert_one_line(capsys, output, f"cannot reach http://127.0.0.1:{port}/mirror")


def test_s3_without_s3fs_names_the_extra(monkeypatch):
    import sys

    registry = sys.modules["fsspec.registry"]._registry  # classes fsspec has already imported
    for protocol in ("s3", "s3a"):
        monkeypatch.delitem(registry, protocol, raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs -> ImportError
    with pytest.raises(InputError, match=r"--cog-root.*s3fs.*efm-pipelines\[s3\]"):
        cog_paths.filesystem("s3://opendata/x")
