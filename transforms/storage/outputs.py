"""Where a command may write: the one check every writing command makes before it writes.

`--overwrite` replaces only a product efm wrote, of the kind the command writes. Anything
else -- a folder or file that is not ours, a product of another kind, a bucket root, the
filesystem root or a home folder, a path that is, holds or lies inside an input -- is
refused with one line, and nothing is touched. How a product is recognised: its kind's marks
(transforms/storage/kinds.py), judged by transforms/storage/recognise.py; places no command writes
to, links and listings: transforms/storage/places.py.

Replacing deletes only the product's own files (for a store: its Zarr keys and `.efm/`),
and a product holding anything else is refused, not cleaned.

Links: a local output is judged, and written, where it really is (`resolve`: `~` expanded,
every symbolic link resolved, a parent folder's too). A link to an efm product of the same kind
is replaced with `--overwrite` (the product it points to is replaced; the link stays); a link
to anything else is refused naming both paths, and so are a dangling link and a link loop. A
product holding a symbolic link is refused: a listing never enters a linked folder and a
removal deletes files by name (`os.unlink`), never what a link points to.

Replacing a store or folder is "old removed only after every check has passed": the commands
make every check first, then `remove` deletes the old product's chunks before its metadata, so
that whatever an interrupted removal leaves is still recognised as the product (its status set
to "removing" first: it never looks complete) and `--overwrite` finishes the job; a removal that
fails raises `RemovalError`, whose one line says what is left.
"""

from __future__ import annotations

import json
import os

from transforms.core import atomic
from transforms.core.errors import EfmError, InputError, first_line
from transforms.storage import kinds, places, recognise


class RemovalError(EfmError, RuntimeError):
    """Deleting an old product failed part-way; the message says what is left and how to finish.
    Its line stands whatever else failed with it."""

    decisive = True

    def line(self) -> str:
        return str(self)


_removed: list[str] = []  # products removed by this process (for the failure line's advice)


def removed_paths() -> list[str]:
    return list(_removed)


def forget_removed() -> None:
    _removed.clear()


def resolve(path: str) -> str:
    """Where a local output really is: `~` expanded, every symbolic link resolved (parents' too).

    Remote paths come back unchanged. Commands judge, write, mark and remove at this path.
    """
    fs, _ = places.location(path)
    if places.fs_is_remote(fs):
        return path
    return os.path.realpath(places.local_root(path))


def inspect(path: str, kind: str, *, shallow: bool = False) -> recognise.Found:
    """What `path` holds, judged as a place to write a product of `kind` (Found(None) = nothing there).

    shallow: stores are judged by their metadata only (enough to resume into; not to delete).
    """
    fs, root = places.location(path)
    if not places.fs_is_remote(fs):
        root = os.path.realpath(os.path.expanduser(root))  # judged where it really is
    found = recognise.inspect_at(fs, root, kind, shallow=shallow)
    found.path = root if not places.fs_is_remote(fs) else path
    return found


def _names(files: list[str], n: int = 3) -> str:
    shown = ", ".join(f or "a file" for f in files[:n])
    return shown + (f" and {len(files) - n} more" if len(files) > n else "")


def check_output(
    path: str,
    kind: str,
    *,
    inputs: dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
    flag: str = "--output",
) -> recognise.Found:
    """Before anything is written: may a command that writes `kind` write at `path`? Raises InputError if not.

    Returns what is there (Found(None) for a new path). `inputs`: {flag: path or paths} the command reads.
    """
    if resume and overwrite:
        raise InputError("--resume", "--resume and --overwrite contradict each other; pass one")
    if resume and kind not in kinds.RESUMABLE:
        raise InputError("--resume", f"only stores can be resumed, not {kinds.KINDS[kind][3:]}")
    shown = places.check_link(
        path, flag
    )  # a dangling link or a loop: refused; else where it really is
    real = resolve(path)
    places.check_place(path, inputs=inputs, flag=flag)
    places.check_local_writable(real, flag)
    fs, root = places.location(path)
    places.check_bucket(fs, path, root, flag)
    found = inspect(real, kind, shallow=resume)
    found.path = real
    if found.empty:
        return _sidecar_check(real, kind, inputs, overwrite, flag) or found
    what = kinds.KINDS[kind]
    if found.links:
        links = [f"{f} -> {os.readlink(os.path.join(real, f))}" for f in found.links[:3]]
        raise InputError(
            flag,
            f"{shown} holds symbolic links ({_names(links + found.links[3:])}); efm writes none and never "
            "deletes through one: move them out or choose another path",
        )
    if found.kind is None:
        holds = (
            "it is a file" if found.is_file else f"it holds {_names(found.foreign or found.files)}"
        )
        raise InputError(
            flag,
            f"{shown} exists and is not {what} ({holds}); efm replaces only what it wrote: choose another path",
        )
    if found.kind != kind:
        raise InputError(
            flag, f"{shown} is {kinds.KINDS[found.kind]}, not {what}; choose another path"
        )
    if found.foreign:
        raise InputError(
            flag,
            f"{shown} is {what} but also holds files efm did not write ({_names(found.foreign)}); move them out or choose another path",
        )
    if found.status == kinds.REMOVING and not overwrite:
        raise InputError(
            "--resume" if resume else flag,
            f"{shown} is what is left of {what} that an --overwrite was removing; nothing to resume: "
            "pass --overwrite to finish replacing it",
        )
    if resume:
        return found
    if not overwrite:
        if kind in kinds.RESUMABLE and not found.complete:
            raise InputError(
                flag,
                f"{shown} already exists; pass --resume to finish it or --overwrite to replace it",
            )
        raise InputError(
            flag,
            f"{shown} already exists ({what}{', complete' if found.complete else ''}); pass --overwrite to replace it",
        )
    _sidecar_check(real, kind, inputs, overwrite, flag)  # beside the model, where it really is
    return found


def _sidecar_check(
    path: str, kind: str, inputs, overwrite: bool, flag: str
) -> recognise.Found | None:
    """A model file's sidecar is written too: it must be new, or ours and replaceable."""
    if kind != "model":
        return None
    sidecar = path + ".json"
    places.check_place(sidecar, inputs=inputs, flag=flag)
    found = inspect(sidecar, "model-sidecar")
    if found.empty:
        return None
    if found.kind is None:
        raise InputError(
            flag,
            f"{sidecar} (where the model's sidecar goes) exists and is not an efm sidecar; choose another path",
        )
    if not overwrite:
        raise InputError(
            flag, f"{sidecar} (an efm model sidecar) already exists; pass --overwrite to replace it"
        )
    return found


def _array_dirs(files: list[str]) -> set[str]:
    """Folders holding an array's metadata: Zarr 2's `.zarray`; Zarr 3's `zarr.json` one level
    below another `zarr.json` (its group's)."""
    v3 = {f.rpartition("/")[0] for f in files if f.rpartition("/")[2] == "zarr.json"}
    v3 = {d for d in v3 if d and d.rpartition("/")[0] in v3}
    return {f.rpartition("/")[0] for f in files if f.rpartition("/")[2] == ".zarray"} | v3


def _removal_rank(name: str, array_dirs: set[str]) -> int:
    """Deletion order: consolidated metadata, then data, then array metadata, the group's, the marker.

    Whatever an interrupted removal leaves still has its product's metadata, so it is still
    recognised as efm's (and never as complete: `remove` marks it "removing" first).
    """
    folder, _, base = name.rpartition("/")
    if base == ".zmetadata":
        return 0
    if base == ".zarray" or (base in (".zattrs", "zarr.json") and folder in array_dirs):
        return 2
    if base == ".zgroup":
        return 3
    if base in (".zattrs", "zarr.json"):  # the group's attributes (Zarr 3: its whole document)
        return 4
    if name in (kinds.MARKER_FILE, kinds.COLLECTION_INDEX):
        return 5
    return 1


def _mark_removing(fs, root: str, files: list[str], array_dirs: set[str]) -> None:
    """Every group of the product (a store, a demo's stores) says "removing" before a file goes."""
    for f in files:
        folder, _, base = f.rpartition("/")
        if base not in (".zattrs", "zarr.json") or folder in array_dirs:
            continue
        document = recognise.read_json(fs, f"{root}/{f}")
        attrs = (
            document.get("attributes")
            if base == "zarr.json" and isinstance(document, dict)
            else document
        )
        if isinstance(attrs, dict) and kinds.STATUS_ATTR in attrs:
            attrs[kinds.STATUS_ATTR] = kinds.REMOVING
            if base == "zarr.json":  # the consolidated copy of the attributes too, if any
                document.pop("consolidated_metadata", None)
            data = json.dumps(document, indent=4, sort_keys=True).encode()
            if places.fs_is_remote(fs):
                fs.pipe_file(f"{root}/{f}", data)
            else:  # atomic: a crash leaves the old attrs or the new ones
                tmp = f"{root}/{f}.efm-tmp-{os.getpid()}"
                with open(tmp, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, f"{root}/{f}")


def remove(
    path: str, kind: str, flag: str = "--output", found: recognise.Found | None = None
) -> None:
    """Delete the product at `path` (where it really is: links resolved): only its own files, after
    checking that it is ours and alone (`found`: what a check_output without --resume just saw,
    to spare a second listing). Local files are unlinked by name: a link is never followed.

    Raises RemovalError, saying what is left, when a deletion fails part-way.
    """
    shown = places.check_link(path, flag)
    real = resolve(path)
    fs, root = places.location(real)
    if not (found is not None and found.path == real and (found.files or found.is_file)):
        found = inspect(real, kind)
    if found.empty:
        return
    if found.kind != kind or found.foreign:
        raise InputError(
            flag,
            f"{shown} is not {kinds.KINDS[kind]} alone ({_names(found.foreign) or 'a file'}); nothing was deleted: choose another path",
        )
    array_dirs = _array_dirs(found.files)
    ordered = sorted(found.files, key=lambda f: (_removal_rank(f, array_dirs), f))
    done = 0
    try:
        _mark_removing(fs, root, found.files, array_dirs)
        if places.fs_is_remote(fs):
            for rank in sorted({_removal_rank(f, array_dirs) for f in ordered}):
                batch = [f for f in ordered if _removal_rank(f, array_dirs) == rank]
                fs.rm([root if f == "" else f"{root}/{f}" for f in batch])
                done += len(batch)
        else:
            for f in ordered:
                os.unlink(
                    root if f == "" else os.path.join(root, f)
                )  # a link itself, never its target
                done += 1
            if os.path.isdir(root) and not os.path.islink(root):
                for directory, _, _ in sorted(os.walk(root), key=lambda item: -len(item[0])):
                    if not os.path.islink(directory) and not os.listdir(directory):
                        os.rmdir(directory)
    except OSError as exc:
        left = len(found.files) - done
        raise RemovalError(
            f"{shown}: removing the old {kinds.KINDS[kind][3:]} failed ({type(exc).__name__}: "
            f"{exc.strerror or first_line(exc)}{f' on {exc.filename}' if getattr(exc, 'filename', None) else ''}); "
            f"{left} of its {len(found.files)} files are left, still recognised as efm's "
            f"(status {kinds.REMOVING!r}, never complete), and nothing else was touched: fix the cause and re-run with "
            "--overwrite to finish replacing it"
        ) from exc
    fs.invalidate_cache()
    _removed.append(real)


def mark_folder(path: str, kind: str) -> None:
    """Make `path` (a local folder) recognisable as efm's before filling it."""
    from transforms.storage.store import tool_version

    os.makedirs(path, exist_ok=True)
    atomic.write_bytes(  # whole: a truncated marker would make the folder look foreign
        os.path.join(path, kinds.MARKER_FILE),
        json.dumps({kinds.PRODUCT_ATTR: kind, "efm_version": tool_version()}),
    )
