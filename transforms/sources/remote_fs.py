"""fsspec filesystems for the mirror's root: local, gs://, s3://, http(s)://.

All of them reach GDAL the same way: as fsspec file objects (`rasterio.open(path,
opener=fs)`), so GDAL's own /vsis3/, /vsigs/, /vsicurl/ and their settings are never
involved; credentials and endpoints follow each fsspec backend's usual rules.

s3:// (s3fs, the `[s3]` extra) is anonymous unless the user has credentials: the public
mirror on Source Cooperative needs none, and botocore refuses to send an unsigned request
unless told. The rule, in order: `anon` set in fsspec's config (`FSSPEC_S3_ANON`) wins;
`AWS_NO_SIGN_REQUEST=YES` (the AWS CLI's variable) means anonymous; otherwise signed if
botocore finds credentials (environment, profile, instance role), anonymous if not.
The endpoint is botocore's: `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`, or fsspec's
`FSSPEC_S3_ENDPOINT_URL`; that is how the tests point at a local S3-compatible server.

http:// and https:// use fsspec's HTTPFileSystem (aiohttp): the server must answer HEAD
with a Content-Length and honour Range requests, as object stores and CDNs do.
"""

from __future__ import annotations

import functools
import os

from transforms.core.errors import InputError

EXTRAS = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}  # protocol -> the package fsspec needs


def protocol(root: str) -> str:
    return root.split("://", 1)[0].lower() if "://" in root else "file"


def storage_options(root: str) -> dict:
    """The options to open `root`'s filesystem with (only s3:// needs any)."""
    if protocol(root) not in ("s3", "s3a"):
        return {}
    import fsspec.config

    if "anon" in fsspec.config.conf.get("s3", {}):
        return {}
    return {"anon": _s3_anonymous()}


@functools.cache
def _s3_anonymous() -> bool:
    if os.environ.get("AWS_NO_SIGN_REQUEST", "").strip().lower() in ("yes", "true", "1"):
        return True
    try:
        import botocore.session

        return botocore.session.Session().get_credentials() is None
    except Exception:  # a broken profile: let s3fs say what is wrong when it signs
        return False


def url_to_fs(root: str, flag: str):
    """(filesystem, path as that filesystem names it); a missing backend is a one-line InputError."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(root, **storage_options(root))
    except ImportError:
        package = EXTRAS.get(protocol(root), "the fsspec backend for " + protocol(root) + "://")
        extra = " (pip install 'efm-pipelines[s3]')" if package == "s3fs" else ""
        raise InputError(
            flag, f"{protocol(root)}:// roots need {package}, which is not installed{extra}"
        ) from None
    except ValueError as exc:  # unknown protocol
        raise InputError(flag, f"cannot open {root}: {exc}") from None


def exists(fs, path: str) -> bool:
    """Like fs.exists, but an unreachable HTTP server raises instead of reading as 'absent'
    (HTTPFileSystem.exists swallows connection errors)."""
    if "http" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
        return fs.exists(path, strict=True)  # 404 -> False; a connection error is raised
    return fs.exists(path)


def size(fs, path: str) -> int | None:
    """A file's size in bytes, or None if it does not exist (an unreachable server raises, as in
    `exists`); one metadata call, like `exists`."""
    try:
        info = fs.info(path)
    except FileNotFoundError:  # HTTPFileSystem says so for an unreachable server too: ask strictly
        return -1 if exists(fs, path) else None
    if info.get("type") == "directory":
        return None
    value = info.get("size")
    return int(value) if value is not None else -1  # exists, size unknown (e.g. no Content-Length)


def bucket_missing(fs, root: str) -> str | None:
    """For s3:// and gs:// roots: the bucket's name when it does not exist, else None."""
    if protocol(root) not in ("s3", "s3a", "gs", "gcs"):
        return None
    bucket = root.split("://", 1)[1].split("/", 1)[0]
    try:
        return None if fs.exists(bucket) else bucket
    except Exception:  # no right to look at the bucket itself: say nothing more
        return None
