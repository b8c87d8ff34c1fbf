"""A collection: one store per UTM zone (transforms/core/zones.py) and a small index beside them.

    <root>/collection.json   {"efm_product": "collection", "format": "efm-collection/1",
                              "kind": "embeddings" | "classes" | ..., "years": [...],
                              "area_lonlat": [W, S, E, N],
                              "members": [{"cell": "31N", "crs": "EPSG:32631",
                                           "path": "utm-31n.zarr", "bounds_lonlat": [...]}, ...]}
    <root>/utm-31n.zarr      a store like any other (complete or not on its own)
    <root>/utm-32n.zarr

The index is written before any member store, so a run cut short leaves a folder recognised as
efm's; a collection is complete when every member store is. The index is the whole truth about
which stores belong: a reader refuses a collection whose index and stores disagree (a member
missing, in another CRS) with one line.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath

import fsspec

from transforms.core import atomic
from transforms.core.errors import InputError, first_line
from transforms.core.zones import Cell, cell_of
from transforms.sources.remote_fs import storage_options

INDEX = "collection.json"
FORMAT = "efm-collection/1"
PRODUCT = "collection"


def member_name(cell: Cell) -> str:
    """A member store's folder name: `utm-31n.zarr`."""
    return f"utm-{cell.name.lower()}.zarr"


@dataclasses.dataclass(frozen=True)
class Member:
    cell: str  # "31N"
    crs: str  # "EPSG:32631"
    path: str  # relative to the collection's root
    bounds_lonlat: tuple[float, float, float, float]  # the part of the area in the cell

    @property
    def zone(self) -> Cell:
        return Cell.from_name(self.cell)


@dataclasses.dataclass(frozen=True)
class Collection:
    root: str
    kind: str  # what each member store is ("embeddings", "classes", ... as kinds.KINDS)
    members: tuple[Member, ...]
    years: tuple[int, ...] = ()
    area_lonlat: tuple[float, float, float, float] | None = None
    attrs: dict = dataclasses.field(default_factory=dict)  # what made it (source, product flags)

    def path_of(self, member: Member) -> str:
        return join(self.root, member.path)

    def paths(self) -> list[str]:
        return [self.path_of(m) for m in self.members]

    def member_at(self, lon: float, lat: float) -> Member | None:
        """The member whose cell holds a point (None: outside the collection)."""
        name = cell_of(lon, lat).name
        return next((m for m in self.members if m.cell == name), None)

    def to_json(self) -> dict:
        return {
            "efm_product": PRODUCT,
            "format": FORMAT,
            "kind": self.kind,
            "years": list(self.years),
            "area_lonlat": list(self.area_lonlat) if self.area_lonlat else None,
            "members": [
                {
                    "cell": m.cell,
                    "crs": m.crs,
                    "path": m.path,
                    "bounds_lonlat": list(m.bounds_lonlat),
                }
                for m in self.members
            ],
            "attrs": self.attrs,
        }

    def with_root(self, root: str, kind: str | None = None, attrs: dict | None = None):
        """The same members under another root (a product's collection mirrors its input's)."""
        return dataclasses.replace(
            self,
            root=root,
            kind=kind or self.kind,
            attrs=self.attrs if attrs is None else attrs,
        )


def join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if "://" in root else posixpath.join(root, name)


def is_collection(path) -> bool:
    """Is there a collection index at `path` (a folder or prefix)? Never raises."""
    if not isinstance(path, str):
        return False
    from transforms.storage import reach

    try:
        # A remote root is looked at under reach's deadline first: fsspec's own look at a silent
        # server waits minutes; an unreachable root is not a collection, and the store reader's
        # own check then says why in one line.
        reach.check_root(path, "--embeddings")
        fs, root = fsspec.core.url_to_fs(path, **storage_options(path))
        return fs.isfile(join(root, INDEX))
    except Exception:
        return False


def write(collection: Collection) -> None:
    """Write (or replace) the index, whole (atomic.write_bytes)."""
    fs, root = fsspec.core.url_to_fs(collection.root)
    fs.makedirs(root, exist_ok=True)
    atomic.write_bytes(
        join(collection.root, INDEX), json.dumps(collection.to_json(), indent=1) + "\n"
    )


def read(path: str, *, flag: str = "--embeddings", check_stores: bool = True) -> Collection:
    """The collection at `path`, its index checked against its stores (one line if they disagree)."""
    try:
        with fsspec.open(join(path, INDEX), "rt", **storage_options(path)) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(flag, f"{path}: cannot read its {INDEX} ({first_line(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(flag, f"{path}/{INDEX} is not an efm collection index ({FORMAT})")
    try:
        members = tuple(
            Member(m["cell"], m["crs"], m["path"], tuple(m["bounds_lonlat"]))
            for m in data["members"]
        )
        for m in members:
            if m.zone.crs != m.crs or m.path.startswith("/") or ".." in m.path.split("/"):
                raise ValueError(f"member {m.cell}: CRS {m.crs}, path {m.path!r}")
        coll = Collection(
            root=path.rstrip("/") or "/",
            kind=data["kind"],
            members=members,
            years=tuple(int(y) for y in data.get("years") or ()),
            area_lonlat=tuple(data["area_lonlat"]) if data.get("area_lonlat") else None,
            attrs=data.get("attrs") or {},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(flag, f"{path}/{INDEX} is damaged ({first_line(exc)})") from None
    if not members:
        raise InputError(flag, f"{path}/{INDEX} lists no store")
    if check_stores:
        for m in members:
            check_member(coll, m, flag)
    return coll


def store_crs(path: str) -> str | None:
    """A store's CRS from its group attributes (proj:code, or efm's `crs`); None if none."""
    import zarr

    try:
        attrs = dict(
            zarr.open_group(path, mode="r", storage_options=storage_options(path) or None).attrs
        )
    except Exception:
        return None
    return attrs.get("proj:code") or attrs.get("crs")


def check_member(coll: Collection, member: Member, flag: str) -> None:
    """A member store is there and in its cell's CRS, else one line naming both."""
    path = coll.path_of(member)
    crs = store_crs(path)
    if crs is None:
        raise InputError(
            flag,
            f"the collection at {coll.root} lists {member.path} ({member.cell}) but it is not "
            "there or not a store: its index and stores disagree",
        )
    if crs != member.crs:
        raise InputError(
            flag,
            f"the collection at {coll.root}: {member.path} is in {crs}, its index says "
            f"{member.crs}: its index and stores disagree",
        )


def unfinished(path: str) -> bool:
    """Is `path` a store efm left unfinished (`efm_status: incomplete`), or a collection with a
    member missing or not complete? False for anything else (no store, not ours): nothing to
    resume there. Advice only: it never raises."""
    try:
        import zarr

        from transforms.storage import store

        if is_collection(path):
            coll = read(path, check_stores=False)
            for member in coll.members:
                try:
                    group = zarr.open_group(coll.path_of(member), mode="r")
                except Exception:  # not written yet
                    return True
                if group.attrs.get(store.STATUS_ATTR) != "complete":
                    return True
            return False
        group = zarr.open_group(path, mode="r")
        return group.attrs.get(store.STATUS_ATTR) == "incomplete"
    except Exception:  # no store, or not ours: nothing to resume
        return False
