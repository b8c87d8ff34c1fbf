"""Shared fixtures: a GCS emulator on loopback, Earth Engine credentials for the emulator."""

from __future__ import annotations

import os
import uuid

# Must be set before gcsfs is imported anywhere: its experimental storage-layout gRPC call
# hangs for 60 s per bucket against an emulator.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
# google.auth must never probe the GCE metadata server (a non-loopback address) from tests.
os.environ["NO_GCE_CHECK"] = "True"
os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"

import pytest  # noqa: E402

from tests.helpers.local_servers import FAKE_TOKEN, free_port


def _serve_suffix_ranges() -> None:
    """Make the emulator answer a suffix range (`Range: bytes=-N`, the last N bytes) as GCS does
    (RFC 9110 14.1.2): it ignores one and sends the whole object, which zarr then takes for a
    sharded store's index (read from a shard's end). Rewritten to `bytes=<size-N>-` for it."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    if getattr(objects.download, "_suffix_ranges", False):
        return
    original = objects.download

    def download(request, response, storage, *args, **kwargs):
        spec = (request.get_header("range", None) or "").strip()
        if spec.startswith("bytes=-") and spec[7:].isdigit():
            try:
                size = len(
                    storage.get_file(request.params["bucket_name"], request.params["object_id"])
                )
            except Exception:  # not found: the original says so
                size = None
            if size is not None:
                headers = request._request_handler.headers
                del headers["range"]
                headers["range"] = f"bytes={max(0, size - int(spec[7:]))}-"
        return original(request, response, storage, *args, **kwargs)

    download._suffix_ranges = True
    objects.download = download
    for route in getattr(server, "HANDLERS", ()):  # the routes hold the function itself
        methods = route[-1] if isinstance(route, tuple) else None
        if isinstance(methods, dict):
            for method, handler in list(methods.items()):
                if handler is original:
                    methods[method] = download


def _keep_multipart_bytes() -> None:
    """Store a multipart upload's content byte for byte, as GCS does: the emulator parses the body
    with Python's email parser, which takes a content's last `\r` for part of the line ending
    before the closing boundary (gcsfs ends lines with `\n`), so a file ending in 0x0d lost its
    last byte (a Zarr shard ending so then failed its index checksum on the way back)."""
    from gcp_storage_emulator import server

    if getattr(server._read_data, "_exact", False):
        return
    read_raw, read_data = server._read_raw_data, server._read_data

    def raw(handler):
        handler._efm_raw = read_raw(handler)
        return handler._efm_raw

    def data(handler, query):
        out = read_data(handler, query)
        kind = handler.headers.get("Content-Type") or ""
        body = getattr(handler, "_efm_raw", None)
        if not (
            isinstance(out, dict)
            and "content" in out
            and kind.startswith("multipart/related")
            and "boundary=" in kind
            and body
            and not handler.headers.get("Content-Encoding")
        ):
            return out
        delimiter = b"--" + kind.split("boundary=", 1)[1].strip().strip('"').encode()
        _, meta, rest = body.split(delimiter, 2)
        eol = b"\r\n" if b"\r\n\r\n" in meta else b"\n"
        start = rest.index(eol + eol) + 2 * len(eol)
        end = rest.rindex(eol + delimiter + b"--")
        out["content"] = rest[start:end]
        return out

    data._exact = True
    server._read_raw_data, server._read_data = raw, data


class GcsEmulator:
    """`gcp-storage-emulator` in memory on 127.0.0.1, with gcsfs pointed at it."""

    def __init__(self):
        from gcp_storage_emulator.server import create_server

        _serve_suffix_ranges()
        _keep_multipart_bytes()

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
