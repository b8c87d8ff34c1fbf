"""Shared fixtures: a GCS emulator on loopback, Earth Engine credentials for the emulator."""

from __future__ import annotations

import os
import socket
import uuid

# Must be set before gcsfs is imported anywhere: its experimental storage-layout gRPC call
# hangs for 60 s per bucket against an emulator.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
# google.auth must never probe the GCE metadata server (a non-loopback address) from tests.
os.environ["NO_GCE_CHECK"] = "True"
os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"

import pytest  # noqa: E402

FAKE_TOKEN = "efm-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GcsEmulator:
    """`gcp-storage-emulator` in memory on 127.0.0.1, with gcsfs pointed at it."""

    def __init__(self):
        from gcp_storage_emulator.server import create_server

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = create_server("127.0.0.1", self.port, in_memory=True)

    def start(self):
        self._server.start()
        # Every gcsfs user, in this process and in Beam worker subprocesses, finds the emulator.
        os.environ["STORAGE_EMULATOR_HOST"] = self.endpoint
        os.environ["FSSPEC_GCS_TOKEN"] = "anon"
        import fsspec.config

        fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
        return self

    def stop(self):
        self._server.stop()
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
        os.environ.pop("FSSPEC_GCS_TOKEN", None)

    @property
    def fs(self):
        import gcsfs

        return gcsfs.GCSFileSystem(endpoint_url=self.endpoint, token="anon")

    def make_bucket(self) -> str:
        name = f"efm-test-{uuid.uuid4().hex[:8]}"
        self.fs.mkdir(name)
        return name


@pytest.fixture(scope="session")
def gcs():
    emulator = GcsEmulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture
def gcs_bucket(gcs) -> str:
    """A fresh, empty bucket: returns its gs:// URL."""
    return f"gs://{gcs.make_bucket()}"


@pytest.fixture
def ee_token(monkeypatch):
    """A bearer token in the environment, as `gcloud auth print-access-token` would give."""
    monkeypatch.setenv("EFM_EE_ACCESS_TOKEN", FAKE_TOKEN)
    return FAKE_TOKEN
