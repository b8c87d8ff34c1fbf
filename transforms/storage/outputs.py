"""Where a command may write: the one check every writing command makes before it writes.

`--overwrite` replaces only a product efm wrote, of the kind the command writes. Anything
else -- a folder or file that is not ours, a product of another kind, a bucket root, the
filesystem root or a home folder, a path that is, holds or lies inside an input -- is
refused with one line, and nothing is touched. How a product is recognised:

    embedding / class-map store  group attr `efm_product` ("embeddings" | "classes" | "change" |
                                 "similarity" | "prediction"); older
                                 stores by their variable plus `efm_version`/`efm_status`
    sample table                 the Parquet schema metadata key b"efm" (transforms.learning.sampling)
    model file                   its sidecar: `format: efm-model/1`, sha256 equal to the file's
    GeoTIFF / PNG (export)       the GeoTIFF tag EFM_PRODUCT / the PNG text chunk efm_product
    sample-data / demo folder    the marker file `.efm-product` in it
    points file (efm label)      the GeoJSON top-level member `efm_product: "points"`

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

import dataclasses
import errno
import fnmatch
import json
import os
import re

import fsspec

from transforms.core import atomic
from transforms.core.errors import EfmError, InputError, first_line

TABLE_METADATA_KEY = (
    b"efm"  # a sample table's Parquet schema key holding its provenance (efm sample)
)

PRODUCT_ATTR = "efm_product"
STATUS_ATTR = "efm_status"  # == transforms.storage.store.STATUS_ATTR
REMOVING = "removing"  # a store's status while `remove` deletes it
MARKER_FILE = ".efm-product"  # in the folders efm makes (sample data, demo)
PARTS_MARKER = ".efm-parts"  # in `efm sample`'s <output>.parts folder
GEOTIFF_TAG = "EFM_PRODUCT"
PNG_KEY = "efm_product"

KINDS = {
    "embeddings": "an efm embedding store",
    "classes": "an efm class-map store",
    "change": "an efm change store",
    "similarity": "an efm similarity store",
    "prediction": "an efm prediction store",
    "table": "an efm sample table",
    "model": "an efm model file",
    "geotiff": "an efm GeoTIFF export",
    "png": "an efm quicklook PNG",
    "sample-data": "an efm sample-data folder",
    "demo": "an efm demo folder",
    "points": "an efm points file",
}
STORE_VARIABLE = {
    "embeddings": "embedding",
    "classes": "class",
    "change": "similarity",
    "similarity": "similarity",
    "prediction": "prediction",
}
RESUMABLE = set(STORE_VARIABLE)
# A collection (transforms/storage/collection.py): a folder of one store per UTM zone and its
# index; its kind names what its stores are.
COLLECTION_INDEX = "collection.json"  # == collection.INDEX
for _kind in STORE_VARIABLE:
    KINDS[f"{_kind}-collection"] = f"an efm collection of {_kind} stores"
    RESUMABLE.add(f"{_kind}-collection")
# `efm export` of a collection (transforms/products/zone_export.py): a folder marked with
# MARKER_FILE holding a COG and a warped VRT per zone and the VRT over all of them.
KINDS["cog-collection"] = "an efm export of a collection (a COG per zone and a VRT)"
COG_COLLECTION_ENTRIES = {
    "utm-[0-9]*[ns].tif": "geotiff",
    "utm-[0-9]*[ns]_[0-9][0-9][0-9][0-9].tif": "geotiff",
    "utm-[0-9]*[ns].vrt": None,
    "utm-[0-9]*[ns]_[0-9][0-9][0-9][0-9].vrt": None,
    "map.vrt": None,
    "map_[0-9][0-9][0-9][0-9].vrt": None,
}
_BEFORE_PRODUCT_ATTR = (
    "embeddings",
    "classes",
)  # kinds that existed before `efm_product`: recognised by their variable

# What each folder product holds (glob patterns of top-level entries -> the product an entry is, if any).
SAMPLE_DATA_ENTRIES = {
    "mirror": "mirror",
    "ground_truth.tif": None,
    "labels.geojson": None,
    "colors.json": None,
    "sample_data.json": None,
    "biomass.tif": None,
    "gedi.geojson": None,
    "refs.geojson": None,
    "change_truth.tif": None,
    "parcels.geojson": None,
}
DEMO_ENTRIES = {
    "sample-data": "sample-data",
    "embeddings.zarr": "embeddings",
    "samples.parquet": None,
    "model.skops": None,
    "model.skops.json": None,
    "classes.zarr": "classes",
    "land_cover_*.tif": None,
    "land_cover_*.png": None,
    "comparison.png": None,
    "demo.log": None,
    "gedi_samples.parquet": None,
    "biomass_model.skops": None,
    "biomass_model.skops.json": None,
    "biomass.zarr": "prediction",
    "similarity.zarr": "similarity",
    "change.zarr": "change",
    "biomass_*.tif": None,
    "biomass_*.png": None,
    "similarity_*.tif": None,
    "similarity_*.png": None,
    "change.tif": None,
    "change.png": None,
    "area.collection": "embeddings-collection",
    "parcels.parquet": None,
}
_MIRROR_FILE = re.compile(r"^(aef_index\.(parquet|gpkg|csv)|\d{4}/[^/]+/[^/]+\.tiff?)$")
_ZARR_META = {".zgroup", ".zattrs", ".zmetadata", "zarr.json"}  # Zarr 2's, Zarr 3's
_CHUNK_KEY = re.compile(r"^(\d+([./]\d+)*|c/\d+(/\d+)*)$")  # Zarr 2 `0.1.1.0`, Zarr 3 `c/0/0/1/1`
_ARRAY_META = (".zarray", ".zattrs", "zarr.json")
_EFM_DIR = ".efm/"  # a store's own bookkeeping (chunk markers, ...): part of the store
_PART = re.compile(r"^part-\d+-\d+\.parquet$")


@dataclasses.dataclass
class Found:
    """What is at a path: the efm product (None: not one), its files, and files that are not its own."""

    kind: str | None
    files: list[str] = dataclasses.field(default_factory=list)  # relative to the path
    foreign: list[str] = dataclasses.field(default_factory=list)
    complete: bool | None = None  # stores only
    is_file: bool = False
    links: list[str] = dataclasses.field(
        default_factory=list
    )  # symbolic links in it (also foreign)
    status: str | None = None  # a store's efm_status
    path: str = ""  # where it really is (`resolve`d): what a command writes to and removes

    @property
    def empty(self) -> bool:
        """Nothing there (or an empty folder): nothing to lose."""
        return self.kind is None and not self.files and not self.foreign and not self.is_file


# ---------------------------------------------------------------- places


def _location(path: str):
    fs, root = fsspec.core.url_to_fs(path)
    return fs, root.rstrip("/") or "/"


def _is_remote(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol not in ("file", "local")


def is_remote(path: str) -> bool:
    return _is_remote(_location(path)[0])


def _key(path: str) -> str:
    """A path normalised for comparison: absolute and symlink-free locally, protocol + key remotely."""
    fs, root = _location(path)
    if _is_remote(fs):
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        return f"{protocol}://{root}"
    return os.path.realpath(os.path.expanduser(root))


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


def _local_root(path: str) -> str:
    """A local path as the OS sees it (file:// stripped, ~ expanded), not yet resolved."""
    fs, root = _location(path)
    return os.path.expanduser(root)


def resolve(path: str) -> str:
    """Where a local output really is: `~` expanded, every symbolic link resolved (parents' too).

    Remote paths come back unchanged. Commands judge, write, mark and remove at this path.
    """
    fs, _ = _location(path)
    if _is_remote(fs):
        return path
    return os.path.realpath(_local_root(path))


def _check_link(path: str, flag: str) -> str:
    """Resolve `path`, refusing a dangling link and a link loop; returns how to name it in messages."""
    fs, _ = _location(path)
    if _is_remote(fs):
        return path
    local = _local_root(path)
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
    fs, root = _location(path)
    if _is_remote(fs) and "/" not in root:
        raise InputError(
            flag, f"{path} is a bucket root; write to a path inside it, e.g. {path.rstrip('/')}/out"
        )
    key = _key(path)
    if not _is_remote(fs):
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


def _check_bucket(fs, path: str, root: str, flag: str) -> None:
    if not _is_remote(fs):
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


def _local_listing(root: str) -> tuple[list[str] | None, list[str]]:
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


def _listing(fs, root: str) -> list[str] | None:
    """Files under `root`, relative to it; [""] when root is a file; None when nothing is there."""
    if not _is_remote(fs):
        files, links = _local_listing(root)
        return files if files is None else sorted(files + links)
    fs.invalidate_cache()
    if not fs.exists(root):
        return None
    if fs.isfile(root):
        return [""]
    return sorted(
        p[len(root) + 1 :] for p in fs.find(root, withdirs=False) if p.rstrip("/") != root
    )


# ---------------------------------------------------------------- what is there


def _read_json(fs, path: str):
    try:
        with fs.open(path, "r") as f:
            return json.load(f)
    except Exception:  # unreadable or not JSON: not ours
        return None


def _inspect_store(fs, root: str, files: list[str]) -> Found:
    attrs = _group_attrs(fs, root, files)
    arrays = {
        f.split("/", 1)[0]
        for f in files
        if f.endswith(("/.zarray", "/zarr.json")) and f.count("/") == 1
    }
    kind = attrs.get(PRODUCT_ATTR) if isinstance(attrs, dict) else None
    if kind not in STORE_VARIABLE:
        kind = None
        if isinstance(attrs, dict) and (
            "efm_version" in attrs or "efm_status" in attrs
        ):  # stores from before efm_product
            kind = next((k for k in _BEFORE_PRODUCT_ATTR if STORE_VARIABLE[k] in arrays), None)
    own, foreign = [], []
    for f in files:
        head, _, rest = f.partition("/")
        ok = (
            f in _ZARR_META
            or f.startswith(_EFM_DIR)
            # an array's metadata, also before its .zarray is written (a set-up cut short)
            or (rest in _ARRAY_META and "/" not in rest and bool(head))
            or (head in arrays and _CHUNK_KEY.match(rest))
        )
        (own if ok else foreign).append(f)
    return Found(
        kind,
        own,
        foreign,
        complete=attrs.get("efm_status") == "complete" if kind else None,
        status=attrs.get("efm_status") if kind else None,
    )


def _folder_entries(kind: str) -> dict:
    if kind == "cog-collection":
        return COG_COLLECTION_ENTRIES
    if kind.endswith("-collection"):
        return {COLLECTION_INDEX: None, "utm-[0-9]*[ns].zarr": kind.removesuffix("-collection")}
    return SAMPLE_DATA_ENTRIES if kind == "sample-data" else DEMO_ENTRIES


def _inspect_folder(fs, root: str, files: list[str], kind: str) -> Found:
    entries = _folder_entries(kind)
    own, foreign = [], []
    by_entry: dict[str, list[str]] = {}
    for f in files:
        by_entry.setdefault(f.split("/", 1)[0], []).append(f)
    for name, members in by_entry.items():
        pattern = next((p for p in entries if fnmatch.fnmatchcase(name, p)), None)
        if (
            name == MARKER_FILE
            or (pattern is not None and entries[pattern] is None and members == [name])
            or (atomic.is_temp(name) and members == [name])  # a killed write's temporary file
        ):
            own += members
        elif pattern is not None and entries[pattern] == "mirror":
            for m in members:
                (own if _MIRROR_FILE.match(m[len(name) + 1 :]) else foreign).append(m)
        elif pattern is not None and entries[pattern] is not None:
            inner = _inspect(fs, f"{root}/{name}", entries[pattern])
            if inner.kind == entries[pattern]:
                own += [f"{name}/{m}" if m else name for m in inner.files]
                foreign += [f"{name}/{m}" for m in inner.foreign]
            else:
                foreign += members
        else:
            foreign += members
    return Found(kind, own, foreign)


def _model_is_ours(fs, root: str) -> bool:
    import hashlib

    meta = _read_json(fs, root + ".json")
    if not isinstance(meta, dict) or meta.get("format") != "efm-model/1":
        return False
    with fs.open(root, "rb") as f:
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if meta.get("sha256") == digest.hexdigest():
        return True
    # A replacement killed between its two renames (transforms/core/atomic.py): the new
    # sidecar, still under its temporary name, describes the model in place.
    pending = [] if _is_remote(fs) else atomic.pending_temps(root + ".json")
    return any(
        isinstance(m, dict)
        and m.get("format") == "efm-model/1"
        and m.get("sha256") == digest.hexdigest()
        for m in (_read_json(fs, p) for p in pending)
    )


def _file_kind(fs, root: str, kind: str) -> str | None:
    try:
        if kind == "table":
            import pyarrow.parquet as pq

            with fs.open(root, "rb") as f:
                return "table" if TABLE_METADATA_KEY in (pq.read_schema(f).metadata or {}) else None
        if kind == "model":
            return "model" if _model_is_ours(fs, root) else None
        if kind == "model-sidecar":
            meta = _read_json(fs, root)
            return kind if isinstance(meta, dict) and meta.get("format") == "efm-model/1" else None
        if kind == "geotiff":
            import rasterio

            with fs.open(root, "rb") as f, rasterio.open(f) as src:
                return "geotiff" if src.tags().get(GEOTIFF_TAG) == "export" else None
        if kind == "points":
            meta = _read_json(fs, root)
            return (
                "points" if isinstance(meta, dict) and meta.get(PRODUCT_ATTR) == "points" else None
            )
        if kind == "png":
            from PIL import Image

            with fs.open(root, "rb") as f, Image.open(f) as image:
                return "png" if getattr(image, "text", {}).get(PNG_KEY) == "quicklook" else None
    except Exception:  # unreadable as that format: not ours
        return None
    return None


def _inspect_store_shallow(fs, root: str) -> Found | None:
    """For --resume, which deletes nothing: the store's kind from its metadata, without listing every chunk."""
    fs.invalidate_cache()
    if fs.exists(
        f"{root}/zarr.json"
    ):  # Zarr 3: the group's document holds the consolidated metadata
        group = _read_json(fs, f"{root}/zarr.json")
        children = ((group or {}).get("consolidated_metadata") or {}).get("metadata") or {}
        found = _inspect_store(fs, root, ["zarr.json", *(f"{k}/zarr.json" for k in children)])
        return dataclasses.replace(found, files=[], foreign=[])
    if not fs.exists(f"{root}/.zgroup") and not fs.exists(f"{root}/.zattrs"):
        return None
    consolidated = _read_json(fs, f"{root}/.zmetadata")
    keys = consolidated.get("metadata", {}) if isinstance(consolidated, dict) else {}
    found = _inspect_store(
        fs, root, [".zgroup", ".zattrs", *(k for k in keys if k.endswith("/.zarray"))]
    )
    return dataclasses.replace(found, files=[], foreign=[])


def inspect(path: str, kind: str, *, shallow: bool = False) -> Found:
    """What `path` holds, judged as a place to write a product of `kind` (Found(None) = nothing there).

    shallow: stores are judged by their metadata only (enough to resume into; not to delete).
    """
    fs, root = _location(path)
    if not _is_remote(fs):
        root = os.path.realpath(os.path.expanduser(root))  # judged where it really is
    found = _inspect(fs, root, kind, shallow=shallow)
    found.path = root if not _is_remote(fs) else path
    return found


def _inspect(fs, root: str, kind: str, *, shallow: bool = False) -> Found:
    """`inspect` at a resolved root (also a folder product's entries: links in it are never followed)."""
    if shallow and kind in STORE_VARIABLE:
        found = _inspect_store_shallow(fs, root)
        if found is not None:
            return found
    if _is_remote(fs):
        fs.invalidate_cache()
        files, links = _listing(fs, root), []
    else:
        files, links = _local_listing(root)
    if files is None:
        return Found(None)
    found = _judge(fs, root, kind, files)
    if links:  # never ours: efm writes no links, and never deletes through one
        found.links = links
        found.foreign = sorted(found.foreign + links)
    return found


def _judge(fs, root: str, kind: str, files: list[str]) -> Found:
    if files == [""]:  # a file
        found_kind = (
            _file_kind(fs, root, kind)
            if kind in ("table", "model", "model-sidecar", "geotiff", "png", "points")
            else None
        )
        return Found(found_kind, [""] if found_kind else [], is_file=True)
    if (
        ".zgroup" in files or ".zattrs" in files or "zarr.json" in files
    ):  # (a store part-removed keeps its group's attributes last)
        return _inspect_store(fs, root, files)
    marker = _read_json(fs, f"{root}/{MARKER_FILE}") if MARKER_FILE in files else None
    found_kind = marker.get(PRODUCT_ATTR) if isinstance(marker, dict) else None
    if (
        found_kind is None and kind == "sample-data" and "sample_data.json" in files
    ):  # made before the marker
        manifest = _read_json(fs, f"{root}/sample_data.json")
        found_kind = "sample-data" if isinstance(manifest, dict) and "spec" in manifest else None
    if found_kind is None and kind == "demo" and "demo.log" in files:  # made before the marker
        found_kind = "demo"
    if found_kind is None and COLLECTION_INDEX in files:
        index = _read_json(fs, f"{root}/{COLLECTION_INDEX}")
        if isinstance(index, dict) and index.get(PRODUCT_ATTR) == "collection":
            found_kind = f"{index.get('kind')}-collection"
            if found_kind not in KINDS:
                found_kind = None
    if found_kind in ("sample-data", "demo") or (found_kind or "").endswith("-collection"):
        return _inspect_folder(fs, root, files, found_kind)
    return Found(None, [], files)


def _names(files: list[str], n: int = 3) -> str:
    shown = ", ".join(f or "a file" for f in files[:n])
    return shown + (f" and {len(files) - n} more" if len(files) > n else "")


# ---------------------------------------------------------------- the check and the removal


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


def check_output(
    path: str,
    kind: str,
    *,
    inputs: dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
    flag: str = "--output",
) -> Found:
    """Before anything is written: may a command that writes `kind` write at `path`? Raises InputError if not.

    Returns what is there (Found(None) for a new path). `inputs`: {flag: path or paths} the command reads.
    """
    if resume and overwrite:
        raise InputError("--resume", "--resume and --overwrite contradict each other; pass one")
    if resume and kind not in RESUMABLE:
        raise InputError("--resume", f"only stores can be resumed, not {KINDS[kind][3:]}")
    shown = _check_link(path, flag)  # a dangling link or a loop: refused; else where it really is
    real = resolve(path)
    check_place(path, inputs=inputs, flag=flag)
    check_local_writable(real, flag)
    fs, root = _location(path)
    _check_bucket(fs, path, root, flag)
    found = inspect(real, kind, shallow=resume)
    found.path = real
    if found.empty:
        return _sidecar_check(real, kind, inputs, overwrite, flag) or found
    what = KINDS[kind]
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
        raise InputError(flag, f"{shown} is {KINDS[found.kind]}, not {what}; choose another path")
    if found.foreign:
        raise InputError(
            flag,
            f"{shown} is {what} but also holds files efm did not write ({_names(found.foreign)}); move them out or choose another path",
        )
    if found.status == REMOVING and not overwrite:
        raise InputError(
            "--resume" if resume else flag,
            f"{shown} is what is left of {what} that an --overwrite was removing; nothing to resume: "
            "pass --overwrite to finish replacing it",
        )
    if resume:
        return found
    if not overwrite:
        if kind in RESUMABLE and not found.complete:
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


def _sidecar_check(path: str, kind: str, inputs, overwrite: bool, flag: str) -> Found | None:
    """A model file's sidecar is written too: it must be new, or ours and replaceable."""
    if kind != "model":
        return None
    sidecar = path + ".json"
    check_place(sidecar, inputs=inputs, flag=flag)
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


def _group_attrs(fs, root: str, files: list[str]) -> dict:
    """A store's group attributes: Zarr 2's `.zattrs`, Zarr 3's `zarr.json` `attributes`."""
    if "zarr.json" in files:
        document = _read_json(fs, f"{root}/zarr.json")
        attrs = document.get("attributes") if isinstance(document, dict) else None
    else:
        attrs = _read_json(fs, f"{root}/.zattrs")
    return attrs if isinstance(attrs, dict) else {}


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
    if name in (MARKER_FILE, COLLECTION_INDEX):
        return 5
    return 1


def _mark_removing(fs, root: str, files: list[str], array_dirs: set[str]) -> None:
    """Every group of the product (a store, a demo's stores) says "removing" before a file goes."""
    for f in files:
        folder, _, base = f.rpartition("/")
        if base not in (".zattrs", "zarr.json") or folder in array_dirs:
            continue
        document = _read_json(fs, f"{root}/{f}")
        attrs = (
            document.get("attributes")
            if base == "zarr.json" and isinstance(document, dict)
            else document
        )
        if isinstance(attrs, dict) and STATUS_ATTR in attrs:
            attrs[STATUS_ATTR] = REMOVING
            if base == "zarr.json":  # the consolidated copy of the attributes too, if any
                document.pop("consolidated_metadata", None)
            data = json.dumps(document, indent=4, sort_keys=True).encode()
            if _is_remote(fs):
                fs.pipe_file(f"{root}/{f}", data)
            else:  # atomic: a crash leaves the old attrs or the new ones
                tmp = f"{root}/{f}.efm-tmp-{os.getpid()}"
                with open(tmp, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, f"{root}/{f}")


def remove(path: str, kind: str, flag: str = "--output", found: Found | None = None) -> None:
    """Delete the product at `path` (where it really is: links resolved): only its own files, after
    checking that it is ours and alone (`found`: what a check_output without --resume just saw,
    to spare a second listing). Local files are unlinked by name: a link is never followed.

    Raises RemovalError, saying what is left, when a deletion fails part-way.
    """
    shown = _check_link(path, flag)
    real = resolve(path)
    fs, root = _location(real)
    if not (found is not None and found.path == real and (found.files or found.is_file)):
        found = inspect(real, kind)
    if found.empty:
        return
    if found.kind != kind or found.foreign:
        raise InputError(
            flag,
            f"{shown} is not {KINDS[kind]} alone ({_names(found.foreign) or 'a file'}); nothing was deleted: choose another path",
        )
    array_dirs = _array_dirs(found.files)
    ordered = sorted(found.files, key=lambda f: (_removal_rank(f, array_dirs), f))
    done = 0
    try:
        _mark_removing(fs, root, found.files, array_dirs)
        if _is_remote(fs):
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
            f"{shown}: removing the old {KINDS[kind][3:]} failed ({type(exc).__name__}: "
            f"{exc.strerror or first_line(exc)}{f' on {exc.filename}' if getattr(exc, 'filename', None) else ''}); "
            f"{left} of its {len(found.files)} files are left, still recognised as efm's "
            f"(status {REMOVING!r}, never complete), and nothing else was touched: fix the cause and re-run with "
            "--overwrite to finish replacing it"
        ) from exc
    fs.invalidate_cache()
    _removed.append(real)


def mark_folder(path: str, kind: str) -> None:
    """Make `path` (a local folder) recognisable as efm's before filling it."""
    from transforms.storage.store import tool_version

    os.makedirs(path, exist_ok=True)
    atomic.write_bytes(  # whole: a truncated marker would make the folder look foreign
        os.path.join(path, MARKER_FILE),
        json.dumps({PRODUCT_ATTR: kind, "efm_version": tool_version()}),
    )


# ---------------------------------------------------------------- efm sample's parts folder


def start_parts(parts_dir: str, flag: str = "--output") -> None:
    """Clear a parts folder left by an interrupted `efm sample` (only one it marked), then mark a fresh one."""
    fs, root = _location(parts_dir)
    files = _listing(fs, root)
    if files:
        if PARTS_MARKER not in files or any(
            not (_PART.match(f) or f == PARTS_MARKER) for f in files
        ):
            raise InputError(
                flag,
                f"{parts_dir} (where `efm sample` keeps its parts) exists and was not written by efm sample; move it away or choose another {flag}",
            )
        fs.rm([f"{root}/{f}" for f in files])
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(f"{root}/{PARTS_MARKER}", b"efm sample parts\n")


def check_parts(parts_dir: str, flag: str = "--output") -> None:
    """Before anything is written: refuse a parts folder efm did not write."""
    fs, root = _location(parts_dir)
    files = _listing(fs, root)
    if files and (
        PARTS_MARKER not in files or any(not (_PART.match(f) or f == PARTS_MARKER) for f in files)
    ):
        raise InputError(
            flag,
            f"{parts_dir} (where `efm sample` keeps its parts) exists and was not written by efm sample; move it away or choose another {flag}",
        )
