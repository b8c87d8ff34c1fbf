"""Places a command writes to: local or remote, a path's identity, the places no command writes to
(a bucket root, the filesystem root, a home folder, an input), links, and listings that never
follow a link.

Links: a local output is judged, and written, where it really is (every symbolic link resolved,
a parent folder's too); a dangling link and a link loop are refused. A listing never enters a
linked folder: links are listed, never followed.
"""

from __future__ import annotations

import errno
import os

import fsspec

from transforms.core.errors import InputError, first_line


def location(path: str):
    fs, root = fsspec.core.url_to_fs(path)
    return fs, root.rstrip("/") or "/"


def fs_is_remote(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol not in ("file", "local")


def is_remote(path: str) -> bool:
    return fs_is_remote(location(path)[0])


def _key(path: str) -> str:
    """A path normalised for comparison: absolute and symlink-free locally, protocol + key remotely."""
    fs, root = location(path)
    if fs_is_remote(fs):
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        return f"{protocol}://{root}"
    return os.path.realpath(os.path.expanduser(root))


def local_root(path: str) -> str:
    """A local path as the OS sees it (file:// stripped, ~ expanded), not yet resolved."""
    fs, root = location(path)
    return os.path.expanduser(root)


def check_link(path: str, flag: str) -> str:
    """Resolve `path`, refusing a dangling link and a link loop; returns how to name it in messages."""
    fs, _ = location(path)
    if fs_is_remote(fs):
        return path
    local = local_root(path)
    try:
        os.stat(local)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(
                flag,
                f"{path} is a symbolic link loop; efm does not write through it: remove the link or choose another path",
            ) from None
        if os.path.islink(local):
            raise InputError(
                flag,
                f"{path} is a link to {os.readlink(local)}, which does not exist; efm does not write through "
                "a dangling link: remove the link or choose another path",
            ) from None
    real = os.path.realpath(local)
    if os.path.islink(local):
        return f"{path} (a link to {real})"
    if real != os.path.abspath(local):
        return f"{path} (really {real})"
    return path


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def check_place(path: str, *, inputs: dict | None = None, flag: str = "--output") -> None:
    """Refuse a bucket root, the filesystem root, a home folder, and any overlap with an input."""
    fs, root = location(path)
    if fs_is_remote(fs) and "/" not in root:
        raise InputError(
            flag, f"{path} is a bucket root; write to a path inside it, e.g. {path.rstrip('/')}/out"
        )
    key = _key(path)
    if not fs_is_remote(fs):
        homes = {
            os.path.realpath(os.path.expanduser("~")),
            os.path.realpath(os.environ.get("HOME", "~")),
        }
        if key == os.path.realpath(os.sep) or key in homes:
            raise InputError(
                flag,
                f"{path} is {'the filesystem root' if key == os.sep else 'a home folder'}; write to a new path inside it, e.g. {os.path.join(path, 'out')}",
            )
    for input_flag, value in (inputs or {}).items():
        for item in [value] if isinstance(value, str) else list(value or []):
            other = _key(item)
            if key == other:
                raise InputError(flag, f"{path} is the {input_flag} input; write to another path")
            if _inside(key, other):
                raise InputError(
                    flag,
                    f"{path} is inside the {input_flag} input {item}; write to a path outside it",
                )
            if _inside(other, key):
                raise InputError(
                    flag, f"{path} holds the {input_flag} input {item}; write to another path"
                )


def check_bucket(fs, path: str, root: str, flag: str) -> None:
    if not fs_is_remote(fs):
        return
    bucket = root.split("/", 1)[0]
    try:
        bucket_exists = fs.exists(bucket)
    except Exception as exc:  # auth or network: say so now, not on a worker later
        raise InputError(flag, f"cannot reach {path}: {first_line(exc)}") from None
    if not bucket_exists:
        raise InputError(
            flag,
            f"bucket {bucket!r} of {path} does not exist (or is not visible to these credentials)",
        )


def check_local_writable(path: str, flag: str) -> None:
    """A local output must be creatable: tried in its nearest existing folder (missing ones are made),
    by creating and removing a temporary file, as permission bits mislead (root, read-only mounts)."""
    if "://" in path:
        return  # buckets: permission errors surface at write time, as one line
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise InputError(
            flag, f"{folder} is a file, so {path} cannot be created; choose another path"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".efm-write-check-", dir=folder)
    except OSError as exc:
        raise InputError(
            flag,
            f"cannot write in {folder} ({exc.strerror or exc}); pick a folder you can write to",
        ) from None
    os.close(fd)
    os.remove(probe)


def local_listing(root: str) -> tuple[list[str] | None, list[str]]:
    """(files, links) under a local `root`, relative to it, never entering a linked folder.

    files: [""] when root is a file, None when nothing is there; links: every symbolic link in it
    (to a file or a folder, dangling or not), listed and never followed.
    """
    if os.path.islink(root):
        return [], [""]
    if not os.path.exists(root):
        return None, []
    if not os.path.isdir(root):
        return [""], []
    files, links = [], []
    for directory, dirnames, filenames in os.walk(root):  # followlinks=False
        rel = os.path.relpath(directory, root)
        for name in dirnames + filenames:
            full = os.path.join(directory, name)
            relative = name if rel == "." else f"{rel}/{name}"
            if os.path.islink(full):
                links.append(relative)
            elif name in filenames:
                files.append(relative)
    return sorted(files), sorted(links)


def listing(fs, root: str) -> list[str] | None:
    """Files under `root`, relative to it; [""] when root is a file; None when nothing is there."""
    if not fs_is_remote(fs):
        files, links = local_listing(root)
        return files if files is None else sorted(files + links)
    fs.invalidate_cache()
    if not fs.exists(root):
        return None
    if fs.isfile(root):
        return [""]
    return sorted(
        p[len(root) + 1 :] for p in fs.find(root, withdirs=False) if p.rstrip("/") != root
    )
