"""moto's S3 server on 127.0.0.1, reached by the real s3fs through AWS_ENDPOINT_URL, in an
environment without AWS credentials (so reads are anonymous, as of a public bucket)."""

from __future__ import annotations

import contextlib
import os

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
