"""The S3 emulator the tests use (tests/helpers/s3.py) starts empty every time."""

from __future__ import annotations

import pytest

pytest.importorskip("moto.server", reason="moto[server], in the [test] extra")

from tests.helpers import s3  # noqa: E402


def test_each_server_starts_without_the_buckets_of_the_last(tmp_path):
    """moto keeps buckets per process: without the reset, a module's private bucket was still
    there for the next module on the same xdist worker (test_cog_s3 then failed to make its own)."""
    with s3.moto_server(str(tmp_path / "a")):
        s3.uploader().mkdir("private", region_name="us-west-2")
        assert s3.uploader().exists("private")
    with s3.moto_server(str(tmp_path / "b")):
        assert not s3.uploader().exists("private")
