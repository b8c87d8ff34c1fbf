"""The emulator's asset catalog: collections of source images, asset JSON, on-disk format.

On disk a catalog is a directory with ``manifest.json`` (one entry per image: the
``add_image`` keyword arguments without ``data``, plus ``file``) and one ``.npy``
per image, so a subprocess can memory-map the arrays instead of unpickling them.
"""

from __future__ import annotations

import json
import operator
import os
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from emulators.earthengine.images import PixelType, SourceImage, millis_to_iso, to_millis

PUBLIC_PREFIX = "projects/earthengine-public/assets/"
_UPDATE_TIME = "2024-01-01T00:00:00Z"
_PRECISIONS = {"float": "FLOAT", "double": "DOUBLE", "int": "INT"}
_TIME_CLAUSE = re.compile(r'(startTime|endTime)\s*(>=|<=|>|<|=)\s*"([^"]+)"')
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "=": operator.eq}


def canonical_id(asset_id: str) -> str:
    """'projects/earthengine-public/assets/X' and 'X' name the same public asset."""
    asset_id = asset_id.strip("/")
    return asset_id[len(PUBLIC_PREFIX) :] if asset_id.startswith(PUBLIC_PREFIX) else asset_id


def asset_name(asset_id: str) -> str:
    asset_id = canonical_id(asset_id)
    return asset_id if asset_id.startswith("projects/") else PUBLIC_PREFIX + asset_id


class Catalog:
    """Thread-safe registry of collections (ordered lists of images) and images."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._images: dict[str, SourceImage] = {}
        self._collections: dict[str, list[str]] = {}
        self._collection_props: dict[str, dict[str, Any]] = {}
        self._aliases: dict[str, str] = {}

    def add_collection(self, collection_id: str, properties: dict[str, Any] | None = None) -> None:
        cid = canonical_id(collection_id)
        with self._lock:
            self._collections.setdefault(cid, [])
            self._collection_props.setdefault(cid, {}).update(properties or {})

    def add_collection_alias(self, alias: str, collection_id: str) -> None:
        with self._lock:
            self._aliases[canonical_id(alias)] = canonical_id(collection_id)

    def add_image(
        self,
        *,
        collection: str | None,
        image_id: str,
        data: np.ndarray,
        band_names: Sequence[str],
        crs: str,
        transform: Sequence[float],
        start: Any = None,
        end: Any = None,
        properties: dict[str, Any] | None = None,
        data_type: str | None = None,
        nodata: float | None = None,
    ) -> SourceImage:
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3 or data.shape[0] != len(band_names):
            raise ValueError(
                f"data must be (bands, H, W) with {len(band_names)} bands, got {data.shape}"
            )
        if len(transform) != 6:
            raise ValueError("transform must be the 6 affine terms (a, b, c, d, e, f)")
        # data_type lets float32 storage be declared EE 'double', like the real embedding collection
        ptype = _named_type(data_type) if data_type else PixelType.for_dtype(data.dtype)
        image = SourceImage(
            image_id=canonical_id(image_id),
            collection=canonical_id(collection) if collection else None,
            data=data,
            band_names=list(band_names),
            crs=crs,
            transform=tuple(float(v) for v in transform),
            start_ms=None if start is None else to_millis(start),
            end_ms=None if end is None else to_millis(end),
            properties=dict(properties or {}),
            pixel_type=ptype,
            nodata=nodata,
        )
        with self._lock:
            self._images[image.image_id] = image
            if image.collection:
                members = self._collections.setdefault(image.collection, [])
                self._collection_props.setdefault(image.collection, {})
                if image.image_id not in members:
                    members.append(image.image_id)
        return image

    def _resolve(self, asset_id: str) -> str:
        cid = canonical_id(asset_id)
        return self._aliases.get(cid, cid)

    def canonical_id(self, asset_id: str) -> str:
        return self._resolve(asset_id)

    def collection(self, collection_id: str) -> tuple[list[SourceImage], dict[str, Any]]:
        with self._lock:
            cid = self._resolve(collection_id)
            members = self._collections[cid]
            return [self._images[i] for i in members], dict(self._collection_props[cid])

    def image(self, image_id: str) -> SourceImage:
        with self._lock:
            return self._images[self._resolve(image_id)]

    def all_images(self) -> list[SourceImage]:
        with self._lock:
            return list(self._images.values())

    # ---- Cloud API asset JSON (EarthEngineAsset) ----

    def asset(self, asset_id: str) -> dict[str, Any] | None:
        try:
            images, props = self.collection(asset_id)
        except KeyError:
            try:
                return image_asset(self.image(asset_id))
            except KeyError:
                return None
        cid = self._resolve(asset_id)
        out: dict[str, Any] = {
            "type": "IMAGE_COLLECTION",
            "name": asset_name(cid),
            "id": cid,
            "updateTime": _UPDATE_TIME,
            "properties": props,
        }
        starts = [i.start_ms for i in images if i.start_ms is not None]
        ends = [i.end_ms for i in images if i.end_ms is not None]
        if starts:
            out["startTime"] = millis_to_iso(min(starts))
        if ends:
            out["endTime"] = millis_to_iso(max(ends))
        return out

    def list_images(self, parent: str, filter_text: str = "") -> list[dict]:
        """Image assets of a collection; ``filter_text`` is 'startTime >= "..." AND endTime < "..."'."""
        images, _ = self.collection(parent)
        for clause in filter(None, (c.strip() for c in filter_text.split(" AND "))):
            match = _TIME_CLAUSE.fullmatch(clause)
            if not match:
                raise ValueError(
                    f"The emulator cannot apply the listAssets filter {clause!r} "
                    '(only startTime/endTime comparisons such as startTime >= "2021-01-01").'
                )
            field, op, value = match.group(1), match.group(2), to_millis(match.group(3))
            attr = "start_ms" if field == "startTime" else "end_ms"
            images = [
                i
                for i in images
                if getattr(i, attr) is not None and _OPS[op](getattr(i, attr), value)
            ]
        return [image_asset(i) for i in images]


def _named_type(data_type: str) -> PixelType:
    if data_type in ("float", "double"):
        return PixelType(data_type)
    return PixelType.of_int(np.dtype(data_type))


def image_asset(image: SourceImage) -> dict[str, Any]:
    a, b, c, d, e, f = image.transform
    grid = {
        "crsCode": image.crs,
        "dimensions": {"width": image.width, "height": image.height},
        "affineTransform": {
            "scaleX": a,
            "shearX": b,
            "translateX": c,
            "shearY": d,
            "scaleY": e,
            "translateY": f,
        },
    }
    dtype: dict[str, Any] = {"precision": _PRECISIONS[image.pixel_type.precision]}
    if image.pixel_type.precision == "int":
        dtype["range"] = {"min": image.pixel_type.min, "max": image.pixel_type.max}
    out: dict[str, Any] = {
        "type": "IMAGE",
        "name": asset_name(image.image_id),
        "id": image.image_id,
        "updateTime": _UPDATE_TIME,
        "properties": dict(image.properties),
        "geometry": {"type": "Polygon", "coordinates": [image.footprint_lonlat]},
        "bands": [
            {"id": n, "dataType": dtype, "grid": grid, "pyramidingPolicy": "MEAN"}
            for n in image.band_names
        ],
        "sizeBytes": str(image.data.nbytes),
    }
    if image.start_ms is not None:
        out["startTime"] = millis_to_iso(image.start_ms)
    if image.end_ms is not None:
        out["endTime"] = millis_to_iso(image.end_ms)
    return out


# ---- on-disk format ----


def save_images(images: Sequence[dict[str, Any]], directory: str) -> str:
    """Writes add_image keyword dicts as ``manifest.json`` + one ``.npy`` each; returns the directory."""
    os.makedirs(directory, exist_ok=True)
    manifest = []
    for k, kwargs in enumerate(images):
        entry = {key: value for key, value in kwargs.items() if key != "data"}
        entry["transform"] = [float(v) for v in entry["transform"]]
        entry["band_names"] = list(entry["band_names"])
        for key in ("start", "end"):
            if (
                key in entry
                and entry[key] is not None
                and not isinstance(entry[key], (str, int, float))
            ):
                entry[key] = to_millis(entry[key])
        entry["file"] = f"image_{k:05d}.npy"
        np.save(os.path.join(directory, entry["file"]), np.ascontiguousarray(kwargs["data"]))
        manifest.append(entry)
    with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump({"images": manifest}, fh, indent=1)
    return directory


def load_images(directory: str, mmap: bool = True) -> list[dict[str, Any]]:
    """Reads a directory written by :func:`save_images` back into add_image keyword dicts."""
    with open(os.path.join(directory, "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)["images"]
    out = []
    for entry in manifest:
        kwargs = {key: value for key, value in entry.items() if key != "file"}
        kwargs["data"] = np.load(
            os.path.join(directory, entry["file"]), mmap_mode="r" if mmap else None
        )
        out.append(kwargs)
    return out
