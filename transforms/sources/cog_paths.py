"""Paths of the COG mirror: its root's filesystem and canonical spelling, files under it
(`<root>/<year>/<zone, e.g. 10N>/<name>.tiff`), and UTM zone names <-> CRSs."""

from __future__ import annotations

import os
import re

import pyproj

from transforms.core.errors import InputError
from transforms.sources import remote_fs

FLAG = "--cog-root"


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def filesystem(root: str):
    fs, stripped = remote_fs.url_to_fs(
        root, FLAG
    )  # s3:// anonymous unless credentials: see remote_fs
    return fs, stripped.rstrip("/")


def canonical(root: str) -> str:
    """Where `root` is, whatever its spelling: a local folder's real absolute path (relative
    spellings, `file://`, trailing slashes and symlinks resolved), or a remote URL with its scheme
    in lower case (`gcs://` as `gs://`, `s3a://` as `s3://`), its host in lower case, no repeated or
    trailing slashes. Two spellings of one place give one string; the string names the place.
    """
    if not is_remote(root):
        return os.path.realpath(os.path.expanduser(root.removeprefix("file://")))
    scheme, rest = root.split("://", 1)
    scheme = {"gcs": "gs", "s3a": "s3"}.get(scheme.lower(), scheme.lower())
    host, _, path = rest.partition("/")
    if scheme in ("http", "https"):
        host = host.lower()
    path = re.sub("/+", "/", path).strip("/")
    return f"{scheme}://{host}/{path}" if path else f"{scheme}://{host}"


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def zone_crs(zone: str) -> str:
    """`10N` -> EPSG:32610, `33S` -> EPSG:32733."""
    match = re.fullmatch(r"\s*(\d{1,2})\s*([NSns])\s*", str(zone))
    if not match or not 1 <= int(match[1]) <= 60:
        raise ValueError(f"not a UTM zone like 10N: {zone!r}")
    return f"EPSG:{(32600 if match[2].upper() == 'N' else 32700) + int(match[1])}"


def crs_zone(crs: str) -> str:
    """EPSG:32610 -> `10N` (the mirror's folder name)."""
    epsg = pyproj.CRS.from_user_input(crs).to_epsg()
    if epsg is None or not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        raise ValueError(f"{crs} is not a WGS 84 / UTM zone")
    return f"{epsg % 100}{'N' if epsg < 32700 else 'S'}"


LAYOUT = re.compile(r"(?:^|/)(\d{4})/(\d{1,2}[NSns])/([^/]+\.tiff?)$")


def resolve_path(root: str, listed: str) -> str:
    """Where a file the index lists lives under `root`.

    The index of the public mirror lists absolute URLs of the original bucket; a copy of
    the mirror keeps the layout `<year>/<zone>/<name>.tiff`, so that tail is joined to
    `root`. A relative path is joined as is.
    """
    listed = str(listed)
    match = LAYOUT.search(listed)
    if match:
        return join(root, match[1], match[2], match[3])
    if "://" in listed or listed.startswith("/"):
        raise InputError(
            FLAG, f"the index lists {listed!r}, which is not laid out as <year>/<zone>/<name>.tiff"
        )
    return join(root, listed)
