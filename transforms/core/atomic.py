"""Whole or not at all: every single-file product (model + sidecar, table, GeoTIFF, PNG, points
GeoJSON) is written here.

A local file is written under a temporary name in the SAME folder (`.<name>.efm-tmp-<random>`),
flushed to disk (fsync), then renamed over its place (`os.replace`, atomic on POSIX) and the
folder fsynced. On any failure -- a full disk (ENOSPC) while writing, while flushing, at the
rename -- the temporary file is removed and the error re-raised: the old product is untouched
(or, for a new path, nothing is there), so the re-run the error line suggests is accepted.

A remote object (gs://, s3://, ...) is written with ONE upload of the whole content
(`pipe_file` for bytes, `put_file` for a local file): an object store creates an object only
when its upload completes, so a failed upload leaves the old object, never part of a new one.
Never an open write stream, which fsspec commits on close even when the writer failed.

A model and its sidecar (which records the model's sha256) are replaced as a pair by
`write_pair`: both temporary files are written and flushed first (a full disk fails here,
with the old pair untouched); then the old model is kept under a hard link
(`.<name>.efm-old-<random>`), the model is renamed into place, then the sidecar; if the
sidecar's rename fails, the old model is renamed back, so the old pair is whole again (on a
filesystem without hard links, the half-replaced pair is removed instead: nothing is left). Only a
process killed between the two renames (SIGKILL, power loss) can leave the new model beside the
old sidecar; the new sidecar is then still there as `.<model>.json.efm-tmp-*`, which
`outputs.check_output` accepts as proof that the model is efm's, so `--overwrite` replaces it.

Leftover temporary files (a killed process) are named `.<name>.efm-tmp-*` / `.<name>.efm-old-*`:
`is_temp` recognises them; the folder checks count them as the product's own (see transforms/storage/recognise.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import tempfile

import fsspec

TEMP_MARK = ".efm-tmp-"
OLD_MARK = ".efm-old-"
_TEMP_NAME = re.compile(r"^\..+\.efm-(tmp|old)-[0-9a-f]{12}$")


def is_temp(name: str) -> bool:
    """A temporary file of this module (in a folder listing): `.<name>.efm-tmp-…` or `.efm-old-…`."""
    return bool(_TEMP_NAME.match(os.path.basename(name.rstrip("/"))))


def temp_name(path: str, mark: str = TEMP_MARK) -> str:
    """A fresh temporary name beside `path` (same folder, so the rename is atomic)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}{mark}{secrets.token_hex(6)}")


def pending_temps(path: str) -> list[str]:
    """Temporary files left beside a local `path` by a write that never reached its rename."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    prefix = f".{name}{TEMP_MARK}"
    return sorted(os.path.join(folder, e) for e in entries if e.startswith(prefix) and is_temp(e))


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    """The local file a path names, links resolved: a product reached through a symbolic link is
    replaced where it is and the link is kept, as for stores (transforms/storage/outputs.resolve)."""
    path = path[len("file://") :] if path.startswith("file://") else path
    return os.path.realpath(os.path.expanduser(path))


def _named(exc: OSError, path: str) -> OSError:
    """The error with the product's path as its filename (a write error has none): the failure line names it."""
    if getattr(exc, "filename", None) is None and exc.errno is not None:
        try:
            return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), path)
        except Exception:  # a subclass with another constructor: keep it as it is
            return exc
    return exc


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory handles: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _File:
    """A binary file object over a raw descriptor: every write goes to `os.write` (no buffer to
    lose), so a failed write raises at once."""

    def __init__(self, fd: int):
        self.fd = fd
        self.position = 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        total = view.nbytes
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.position += n
        return total

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return False

    def close(self) -> None:  # the context manager closes the descriptor
        pass


def _write_temp(path: str, data: bytes) -> str:
    """`data` under a fresh temporary name beside local `path`, flushed to disk; returns the name."""
    temp = temp_name(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            _File(fd).write(data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _remove(temp)
        raise
    return temp


def _replace(temp: str, path: str) -> None:
    try:
        os.replace(temp, path)
    except BaseException:
        _remove(temp)
        raise


def write_bytes(path: str, data: bytes | str) -> None:
    """`path` (local or remote) holds `data` whole, or keeps what it held (see the module docstring)."""
    if isinstance(data, str):
        data = data.encode()
    if not _is_local(path):
        fs, root = fsspec.core.url_to_fs(path)
        fs.pipe_file(root, data)  # one PUT: the object is created whole or not at all
        return
    path = _local(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        _replace(_write_temp(path, data), path)
        _fsync_dir(folder)
    except OSError as exc:
        raise _named(exc, path) from exc


@contextlib.contextmanager
def open_write(path: str):
    """A binary file object to write `path` through; the product appears whole on success only.

    Local: the writes go to a temporary file in the same folder (renamed on success). Remote: to a
    local temporary file, uploaded in one piece on success."""
    with local_path(path) as temp:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            yield _File(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def local_path(path: str):
    """A local file path for a writer that needs one (GDAL, ...): on success it becomes `path`.

    Local `path`: a temporary name in the same folder, fsynced and renamed over `path`.
    Remote `path`: a local temporary file, uploaded whole with one `put_file` (the object is
    created when the upload completes, so a failure leaves the old object)."""
    if not _is_local(path):
        fd, temp = tempfile.mkstemp(prefix=".efm-upload-", suffix=os.path.splitext(path)[1])
        os.close(fd)
        try:
            yield temp
            fs, root = fsspec.core.url_to_fs(path)
            fs.put_file(temp, root)
        finally:
            _remove(temp)
        return
    path = _local(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temp = temp_name(path)
    try:
        yield temp
        if not os.path.exists(temp):
            raise FileNotFoundError(errno.ENOENT, "the writer wrote nothing", path)
        _fsync_path(temp)
        os.replace(temp, path)
        _fsync_dir(folder)
    except OSError as exc:
        _remove(temp)
        raise _named(exc, path) from exc
    except BaseException:
        _remove(temp)
        raise


def write_pair(first: str, first_data: bytes, second: str, second_data: bytes) -> None:
    """Replace `first` (a model) and `second` (its sidecar) together: after a failure at any
    step, either both hold their old content or both hold the new (see the module docstring)."""
    if not _is_local(first):
        _write_pair_remote(first, first_data, second, second_data)
        return
    if second == first + ".json":  # the sidecar goes beside the model, where it really is
        first = _local(first)
        second = first + ".json"
    else:
        first, second = _local(first), _local(second)
    folder = os.path.dirname(os.path.abspath(first))
    os.makedirs(folder, exist_ok=True)
    temps: list[str] = []
    backup = None
    try:
        try:
            temps.append(_write_temp(first, first_data))
            temps.append(_write_temp(second, second_data))
            had_old = os.path.exists(first)
            if had_old:
                backup = temp_name(first, OLD_MARK)
                try:
                    os.link(first, backup)  # the old model, kept by name until the pair is whole
                except OSError as exc:
                    backup = None
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                        raise  # e.g. ENOSPC: nothing was replaced yet
            os.replace(temps[0], first)
            try:
                os.replace(temps[1], second)
            except BaseException:
                _undo_first(first, second, backup, had_old, temps)
                backup = None
                raise
            _fsync_dir(folder)
        except OSError as exc:
            raise _named(exc, first) from exc
    finally:
        for temp in temps:
            _remove(temp)
        if backup is not None:
            _remove(backup)


def _undo_first(first: str, second: str, backup: str | None, had_old: bool, temps: list) -> None:
    """The sidecar's rename failed after the model's: put the old model back (or leave nothing)."""
    if backup is None:  # a new pair, or no hard links here: nothing rather than a mismatched pair
        _remove(first)
        if had_old:  # the old sidecar describes a model that is gone: it goes too
            _remove(second)
        return
    try:
        os.replace(backup, first)  # the old model is back beside the old sidecar
    except OSError:
        # Could not even rename back: keep the old model under its .efm-old- name and the new
        # sidecar under its temporary name, which outputs.check_output accepts as proof that the
        # model in place is efm's (so `--overwrite` replaces it).
        temps.clear()


def _write_pair_remote(first: str, first_data: bytes, second: str, second_data: bytes) -> None:
    """Objects: each PUT is atomic; the old model is copied aside (server side) and copied back if
    the sidecar's PUT fails."""
    fs, root = fsspec.core.url_to_fs(first)
    _, second_root = fsspec.core.url_to_fs(second)
    folder, name = root.rsplit("/", 1)
    backup = None
    if fs.exists(root):
        backup = f"{folder}/.{name}{OLD_MARK}{secrets.token_hex(6)}"
        fs.copy(root, backup)
    try:
        fs.pipe_file(root, first_data)
        try:
            fs.pipe_file(second_root, second_data)
        except BaseException:
            if backup is not None:
                fs.copy(backup, root)
            else:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(root)
            raise
    finally:
        if backup is not None:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(backup)
