"""Can a remote store's root be reached and read? One bounded look before any Zarr call.

Left to themselves, the libraries under Zarr take long to give up on a root that does not answer
and say it badly: gcsfs retries six times with back-off (35 s against a refused port, 50 s when
the name does not resolve) and logs an ERROR line; botocore retries a refused endpoint for 7 s,
and Zarr's concurrent first reads leave "Exception ignored" tracebacks behind at exit; a host
that accepts the connection and never answers holds aiohttp for its 5-minute timeout.

`check_root` asks once, itself, with one deadline over the whole look (`EFM_REMOTE_TIMEOUT`
seconds, default 20): the store's `zarr.json` (and `.zgroup` when that is refused: a bucket that
may not be listed answers 403 for a key that is not there, and efm's v2 stores have no
zarr.json). It raises a one-line InputError naming the root when the server cannot be reached,
gives no answer in time, or refuses the read (HTTP 401/403, S3 AccessDenied); anything else
(the store is missing, it is not Zarr) is left to the reader, which says so itself.
For gs:// only the endpoint's reachability is looked at (a refusal is said by the reader:
a look without the user's credentials could not tell).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from transforms.core.errors import InputError, first_line
from transforms.sources import remote_fs

# The options a root's filesystem is opened with (s3: anonymous unless credentials are set): here
# too, for the layers above storage (products), which do not reach into sources.
storage_options = remote_fs.storage_options

TIMEOUT_ENV = "EFM_REMOTE_TIMEOUT"
DEFAULT_TIMEOUT = 20.0  # s: a cloud endpoint answers a HEAD in well under a second
PROBED = ("zarr.json", ".zgroup")
CREDENTIALS_HINT = {
    "s3": "a private bucket needs credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY); a bucket that may not be listed also answers so for a path that "
    "is not there",
    "gs": "a private bucket needs credentials (gcloud auth application-default login)",
    "http": "the server refuses to serve it; check the address (a bucket behind it answers so "
    "for a path that is not there, too)",
}


def denied_hint(path: str) -> str:
    """What to do about a refused read of `path`."""
    return CREDENTIALS_HINT.get(_kind(path) or "", "check the path's permissions")


def timeout() -> float:
    try:
        value = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if value > 0 else DEFAULT_TIMEOUT


class _Unreachable(Exception):
    pass


class _Denied(Exception):
    pass


def _kind(path: str) -> str | None:
    proto = remote_fs.protocol(path)
    if proto in ("http", "https"):
        return "http"
    if proto in ("s3", "s3a"):
        return "s3"
    if proto in ("gs", "gcs"):
        return "gs"
    return None


# What a look depends on besides the root: a root found readable under the same settings is not
# looked at again in this process (a command opens its store several times, and each look opens a
# client of its own: ~0.2 s on S3). A refusal is never remembered.
SETTINGS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_NO_SIGN_REQUEST",
    "AWS_SHARED_CREDENTIALS_FILE",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
)
_READABLE: set[tuple] = set()


def check_root(path: str, flag: str) -> None:
    """Raise a one-line InputError if the remote root `path` cannot be reached or read."""
    kind = _kind(path)
    if kind is None:
        return
    seen = (path.rstrip("/"), *(os.environ.get(name) for name in SETTINGS))
    if seen in _READABLE:
        return
    import fsspec.asyn

    limit = timeout()
    look = {"http": _look_http, "s3": _look_s3, "gs": _look_gs}[kind]

    async def bounded():
        return await asyncio.wait_for(look(path, limit), limit)

    try:
        fsspec.asyn.sync(fsspec.asyn.get_loop(), bounded)
        _READABLE.add(seen)
    except TimeoutError:
        raise InputError(
            flag,
            f"cannot reach {path}: no answer within {limit:g} s; check the address and the "
            f"network (or wait longer: {TIMEOUT_ENV}=<seconds>)",
        ) from None
    except _Unreachable as exc:
        raise InputError(
            flag, f"cannot reach {path}: {exc}; check the address and the network{_endpoint(kind)}"
        ) from None
    except _Denied as exc:
        raise InputError(
            flag, f"access to {path} was denied ({exc}); {CREDENTIALS_HINT[kind]}"
        ) from None


def _endpoint(kind: str) -> str:
    if kind == "s3" and (
        os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    ):
        return " (the endpoint comes from AWS_ENDPOINT_URL)"
    if kind == "gs" and os.environ.get("STORAGE_EMULATOR_HOST"):
        return " (the endpoint comes from STORAGE_EMULATOR_HOST)"
    return ""


def _connection_errors() -> tuple:
    import aiohttp

    errors: tuple = (aiohttp.ClientConnectionError, ConnectionError)
    try:
        import botocore.exceptions as bx

        errors += (bx.ConnectionError, bx.HTTPClientError)
    except ImportError:
        pass
    return errors


async def _look_http(path: str, limit: float) -> None:
    import aiohttp

    root = path.rstrip("/")
    refused = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit)) as session:
        for name in PROBED:
            try:
                async with session.head(f"{root}/{name}", allow_redirects=True) as answer:
                    status = answer.status
            except _connection_errors() as exc:
                raise _Unreachable(first_line(exc)) from None
            except aiohttp.ClientError:  # an answer, if a strange one: the reader says the rest
                return
            if status not in (401, 403):
                if refused and status == 404:  # zarr.json refused, no .zgroup: refused
                    break
                return
            refused.append(f"HTTP {status} for {name}")
    raise _Denied(", ".join(refused))


async def _look_s3(path: str, limit: float) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(
        path,
        **remote_fs.storage_options(path),
        skip_instance_cache=True,
        asynchronous=True,
        config_kwargs={
            "connect_timeout": limit,
            "read_timeout": limit,
            "retries": {"max_attempts": 1, "mode": "standard"},
        },
    )
    fs.retries = 1  # s3fs's own retries, around botocore's (one attempt: config_kwargs)
    refused = []
    try:
        await fs.set_session()
        for name in PROBED:
            try:
                await fs._info(f"{root.rstrip('/')}/{name}")
                return
            except FileNotFoundError:
                if refused:  # zarr.json refused, no .zgroup: the store is there, and refused
                    break
                return  # the endpoint answers: whether a store is there is the reader's to say
            except PermissionError as exc:
                refused.append(f"{name}: {first_line(exc)}")
            except _connection_errors() as exc:
                raise _Unreachable(first_line(exc)) from None
            except Exception:  # another answer: the endpoint is there; the reader says the rest
                return
    finally:
        with contextlib.suppress(Exception):
            s3 = getattr(fs, "_s3", None)
            if s3 is not None:
                await s3.close()
    raise _Denied("; ".join(refused))


async def _look_gs(path: str, limit: float) -> None:
    import aiohttp
    import fsspec

    # token="anon": the endpoint's address only; no credential look-up (on a machine without
    # credentials google-auth asks the metadata server first, for seconds)
    fs, _ = fsspec.core.url_to_fs(path, token="anon", skip_instance_cache=True)
    base = str(getattr(fs, "_location", "https://storage.googleapis.com")).rstrip("/")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit)) as session:
        try:
            async with session.head(f"{base}/storage/v1/b/{path.split('://', 1)[1].split('/')[0]}"):
                return
        except _connection_errors() as exc:
            raise _Unreachable(first_line(exc)) from None


class QuietLibraries(logging.Filter):
    """Demotes gcsfs's ERROR lines ("_request non-retriable exception: Forbidden ...") to INFO
    while a root is opened: the refusal is said once, as efm's own line; the log file keeps them."""

    NAMES = ("gcsfs",)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


@contextlib.contextmanager
def quiet_libraries():
    quiet = QuietLibraries()
    loggers = [logging.getLogger(name) for name in QuietLibraries.NAMES]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
