"""moto's S3 server on 127.0.0.1, reached by the real s3fs through AWS_ENDPOINT_URL, in an
environment without AWS credentials (so reads are anonymous, as of a public bucket)."""

from __future__ import annotations

import contextlib
import os
import urllib.request

CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_NO_SIGN_REQUEST",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)


def fresh_state() -> None:
    """Forget cached filesystems and credential look-ups (after the environment changed)."""
    import s3fs

    from transforms.sources import remote_fs

    s3fs.S3FileSystem.clear_instance_cache()
    remote_fs._s3_anonymous.cache_clear()


@contextlib.contextmanager
def moto_server(scratch: str):
    """Yields the endpoint URL; `scratch` is a folder for an empty AWS config."""
    from moto import server as moto

    saved = {k: os.environ.get(k) for k in CREDENTIAL_VARS}
    server = moto.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto keeps its buckets in the process, not in the server: a bucket another test module
    # made in this process (one pytest-xdist worker runs several) would still be there.
    reset = urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=30).close()
    for k in CREDENTIAL_VARS:
        os.environ.pop(k, None)
    nowhere = os.path.join(scratch, "none")
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_SHARED_CREDENTIALS_FILE": nowhere,
            "AWS_CONFIG_FILE": nowhere,
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-west-2"),
        }
    )
    fresh_state()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        fresh_state()


def uploader():
    """An s3fs client with (any) credentials: moto accepts them and lets it write."""
    import s3fs

    return s3fs.S3FileSystem(key="uploader", secret="uploader", skip_instance_cache=True)


def upload_folder(local: str, bucket: str, prefix: str, *, public: bool = True) -> str:
    """Put every file under `local` at s3://bucket/prefix/...; returns that URL."""
    fs = uploader()
    acl = {"acl": "public-read"} if public else {}
    if not fs.exists(bucket):
        fs.mkdir(bucket, region_name="us-west-2", **acl)
    for folder, _, names in os.walk(local):
        for name in names:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, local).replace(os.sep, "/")
            fs.put_file(path, f"{bucket}/{prefix}/{key}", **acl)
    return f"s3://{bucket}/{prefix}"


class CountingProxy:
    """A TCP proxy on 127.0.0.1 in front of `endpoint` (http://host:port) that counts every byte
    the server sends back (bodies and headers): what an S3 client fetched, counted at the wire.
    Point AWS_ENDPOINT_URL at `.url`."""

    def __init__(self, endpoint: str):
        import socket
        import threading

        host, port = endpoint.split("://", 1)[1].rstrip("/").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.bytes_from_server = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while self._open:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source, sink, count: bool):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if count:
                    with self._lock:
                        self.bytes_from_server += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def close(self):
        self._open = False
        self._listener.close()
