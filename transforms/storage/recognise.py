"""What is at a path, judged as a place to write a product of a kind (transforms/storage/kinds.py):
the efm product it is (None: not one), its own files, and the files that are not its own.

Replacing deletes only the product's own files (for a store: its Zarr keys and `.efm/`), and a
product holding anything else is refused, not cleaned (transforms/storage/outputs.py); a product
holding a symbolic link is refused too.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re

from transforms.core import atomic
from transforms.storage import kinds, places

_BEFORE_PRODUCT_ATTR = (
    "embeddings",
    "classes",
)  # kinds that existed before `efm_product`: recognised by their variable
_MIRROR_FILE = re.compile(r"^(aef_index\.(parquet|gpkg|csv)|\d{4}/[^/]+/[^/]+\.tiff?)$")
_ZARR_META = {".zgroup", ".zattrs", ".zmetadata", "zarr.json"}  # Zarr 2's, Zarr 3's
_CHUNK_KEY = re.compile(r"^(\d+([./]\d+)*|c/\d+(/\d+)*)$")  # Zarr 2 `0.1.1.0`, Zarr 3 `c/0/0/1/1`
_ARRAY_META = (".zarray", ".zattrs", "zarr.json")
_EFM_DIR = ".efm/"  # a store's own bookkeeping (chunk markers, ...): part of the store


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
    path: str = ""  # where it really is (links resolved: `outputs.resolve`): what a command writes to and removes

    @property
    def empty(self) -> bool:
        """Nothing there (or an empty folder): nothing to lose."""
        return self.kind is None and not self.files and not self.foreign and not self.is_file


def read_json(fs, path: str):
    try:
        with fs.open(path, "r") as f:
            return json.load(f)
    except Exception:  # unreadable or not JSON: not ours
        return None


def _group_attrs(fs, root: str, files: list[str]) -> dict:
    """A store's group attributes: Zarr 2's `.zattrs`, Zarr 3's `zarr.json` `attributes`."""
    if "zarr.json" in files:
        document = read_json(fs, f"{root}/zarr.json")
        attrs = document.get("attributes") if isinstance(document, dict) else None
    else:
        attrs = read_json(fs, f"{root}/.zattrs")
    return attrs if isinstance(attrs, dict) else {}


def _inspect_store(fs, root: str, files: list[str]) -> Found:
    attrs = _group_attrs(fs, root, files)
    arrays = {
        f.split("/", 1)[0]
        for f in files
        if f.endswith(("/.zarray", "/zarr.json")) and f.count("/") == 1
    }
    kind = attrs.get(kinds.PRODUCT_ATTR) if isinstance(attrs, dict) else None
    if kind not in kinds.STORE_VARIABLE:
        kind = None
        if isinstance(attrs, dict) and (
            "efm_version" in attrs or "efm_status" in attrs
        ):  # stores from before efm_product
            kind = next(
                (k for k in _BEFORE_PRODUCT_ATTR if kinds.STORE_VARIABLE[k] in arrays), None
            )
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
        return kinds.COG_COLLECTION_ENTRIES
    if kind.endswith("-collection"):
        return {
            kinds.COLLECTION_INDEX: None,
            "utm-[0-9]*[ns].zarr": kind.removesuffix("-collection"),
        }
    return kinds.SAMPLE_DATA_ENTRIES if kind == "sample-data" else kinds.DEMO_ENTRIES


def _inspect_folder(fs, root: str, files: list[str], kind: str) -> Found:
    entries = _folder_entries(kind)
    own, foreign = [], []
    by_entry: dict[str, list[str]] = {}
    for f in files:
        by_entry.setdefault(f.split("/", 1)[0], []).append(f)
    for name, members in by_entry.items():
        pattern = next((p for p in entries if fnmatch.fnmatchcase(name, p)), None)
        if (
            name == kinds.MARKER_FILE
            or (pattern is not None and entries[pattern] is None and members == [name])
            or (atomic.is_temp(name) and members == [name])  # a killed write's temporary file
        ):
            own += members
        elif pattern is not None and entries[pattern] == "mirror":
            for m in members:
                (own if _MIRROR_FILE.match(m[len(name) + 1 :]) else foreign).append(m)
        elif pattern is not None and entries[pattern] is not None:
            inner = inspect_at(fs, f"{root}/{name}", entries[pattern])
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

    meta = read_json(fs, root + ".json")
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
    pending = [] if places.fs_is_remote(fs) else atomic.pending_temps(root + ".json")
    return any(
        isinstance(m, dict)
        and m.get("format") == "efm-model/1"
        and m.get("sha256") == digest.hexdigest()
        for m in (read_json(fs, p) for p in pending)
    )


def _file_kind(fs, root: str, kind: str) -> str | None:
    try:
        if kind == "table":
            import pyarrow.parquet as pq

            with fs.open(root, "rb") as f:
                return (
                    "table"
                    if kinds.TABLE_METADATA_KEY in (pq.read_schema(f).metadata or {})
                    else None
                )
        if kind == "model":
            return "model" if _model_is_ours(fs, root) else None
        if kind == "model-sidecar":
            meta = read_json(fs, root)
            return kind if isinstance(meta, dict) and meta.get("format") == "efm-model/1" else None
        if kind == "geotiff":
            import rasterio

            with fs.open(root, "rb") as f, rasterio.open(f) as src:
                return "geotiff" if src.tags().get(kinds.GEOTIFF_TAG) == "export" else None
        if kind == "points":
            meta = read_json(fs, root)
            return (
                "points"
                if isinstance(meta, dict) and meta.get(kinds.PRODUCT_ATTR) == "points"
                else None
            )
        if kind == "png":
            from PIL import Image

            with fs.open(root, "rb") as f, Image.open(f) as image:
                return (
                    "png" if getattr(image, "text", {}).get(kinds.PNG_KEY) == "quicklook" else None
                )
    except Exception:  # unreadable as that format: not ours
        return None
    return None


def _inspect_store_shallow(fs, root: str) -> Found | None:
    """For --resume, which deletes nothing: the store's kind from its metadata, without listing every chunk."""
    fs.invalidate_cache()
    if fs.exists(
        f"{root}/zarr.json"
    ):  # Zarr 3: the group's document holds the consolidated metadata
        group = read_json(fs, f"{root}/zarr.json")
        children = ((group or {}).get("consolidated_metadata") or {}).get("metadata") or {}
        found = _inspect_store(fs, root, ["zarr.json", *(f"{k}/zarr.json" for k in children)])
        return dataclasses.replace(found, files=[], foreign=[])
    if not fs.exists(f"{root}/.zgroup") and not fs.exists(f"{root}/.zattrs"):
        return None
    consolidated = read_json(fs, f"{root}/.zmetadata")
    keys = consolidated.get("metadata", {}) if isinstance(consolidated, dict) else {}
    found = _inspect_store(
        fs, root, [".zgroup", ".zattrs", *(k for k in keys if k.endswith("/.zarray"))]
    )
    return dataclasses.replace(found, files=[], foreign=[])


def inspect_at(fs, root: str, kind: str, *, shallow: bool = False) -> Found:
    """`outputs.inspect` at a resolved root (also a folder product's entries: links in it are never followed)."""
    if shallow and kind in kinds.STORE_VARIABLE:
        found = _inspect_store_shallow(fs, root)
        if found is not None:
            return found
    if places.fs_is_remote(fs):
        fs.invalidate_cache()
        files, links = places.listing(fs, root), []
    else:
        files, links = places.local_listing(root)
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
    marker = read_json(fs, f"{root}/{kinds.MARKER_FILE}") if kinds.MARKER_FILE in files else None
    found_kind = marker.get(kinds.PRODUCT_ATTR) if isinstance(marker, dict) else None
    if (
        found_kind is None and kind == "sample-data" and "sample_data.json" in files
    ):  # made before the marker
        manifest = read_json(fs, f"{root}/sample_data.json")
        found_kind = "sample-data" if isinstance(manifest, dict) and "spec" in manifest else None
    if found_kind is None and kind == "demo" and "demo.log" in files:  # made before the marker
        found_kind = "demo"
    if found_kind is None and kinds.COLLECTION_INDEX in files:
        index = read_json(fs, f"{root}/{kinds.COLLECTION_INDEX}")
        if isinstance(index, dict) and index.get(kinds.PRODUCT_ATTR) == "collection":
            found_kind = f"{index.get('kind')}-collection"
            if found_kind not in kinds.KINDS:
                found_kind = None
    if found_kind in ("sample-data", "demo") or (found_kind or "").endswith("-collection"):
        return _inspect_folder(fs, root, files, found_kind)
    return Found(None, [], files)
