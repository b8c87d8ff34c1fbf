"""`--resume` checks the place: a store is continued only where this run would write the same thing.

Chunk markers say *which* chunks are done, not *where* they are: a run over an area of the
same size shifted east has the same chunk numbers. So before resuming, the existing store
is compared with this run's template on what makes its values: variables, CRS, the
GeoTransform (origin, pixel size) and the x/y coordinates themselves, shape, chunking,
years, bands, dtype and source (collection or COG root; for class maps the embedding store,
the model's sha256 and --confidence, which shows as a variable).

The source is compared as what it is, not how it was spelled. An embedding store records
where its source is (the COG root's real path or canonical URL; the collection id) and a
fingerprint of what was read (the index file's size and sha256 and a hash of the files the
area selects; for Earth Engine a hash of the image ids and versions over the area and years).
When the grid agrees, `check_source` refuses, with one line naming both, a source at another
place or with another fingerprint: one mirror spelled relative, absolute, with a trailing slash
or through a symlink resumes; another mirror behind the same relative spelling does not.
A store copied from a Zarr store (`--source zarr`) records `zarr_root` (canonical, as the COG
root) and a hash of the source's metadata (`zarr_metadata_sha256`), compared the same way.
Stores written before the fingerprint (no `cog_index_sha256` / `ee_images_sha256`) keep the
old rule: their recorded spelling of the source is compared as a string.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

# Attributes naming where the values come from (compared when the run's template has them).
SOURCE_ATTRS = {
    "source": "source",
    "collection": "collection",
    "cog_root": "COG root",
    "model_sha256": "model sha256",
    "embeddings_source": "embeddings source",
}
# What fingerprints a source (transforms/sources/cog_index.source_record, earthengine.images_record).
COG_FINGERPRINT = ("cog_root", "cog_index_bytes", "cog_index_sha256", "cog_files_sha256")
EE_FINGERPRINT = ("ee_collection", "ee_images_sha256")
# A Zarr store copied from (transforms/storage/zarr_source.store_attrs): where, and its metadata.
ZARR_FINGERPRINT = ("zarr_root", "zarr_metadata_sha256")
_PLACE_ATTRS = {
    "source",
    "cog_root",
    "collection",
}  # compared by the fingerprint rule when it applies
_TRANSFORM_TERMS = (
    (0, "x origin"),
    (3, "y origin"),
    (1, "pixel width"),
    (5, "pixel height"),
    (2, "x rotation"),
    (4, "y rotation"),
)


def _number(value: float) -> str:
    return f"{value:.10g}" if abs(value) < 1e15 else repr(value)


def _geotransform(ds: xr.Dataset) -> list[float] | None:
    """The GeoTransform the store's `spatial_ref` carries; else one derived from its x/y coords."""
    if "spatial_ref" in ds.variables and ds["spatial_ref"].attrs.get("GeoTransform"):
        return [float(v) for v in str(ds["spatial_ref"].attrs["GeoTransform"]).split()]
    if ds.sizes.get("x", 0) > 1 and ds.sizes.get("y", 0) > 1:
        x, y = ds["x"].values, ds["y"].values
        dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
        return [float(x[0]) - dx / 2, dx, 0.0, float(y[0]) - dy / 2, 0.0, dy]
    return None


def _crs(ds: xr.Dataset):
    wkt = ds["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in ds.variables else None
    return wkt or ds.attrs.get("crs")


def _crs_name(ds: xr.Dataset) -> str:
    if ds.attrs.get("crs"):
        return str(ds.attrs["crs"])
    import pyproj

    crs = pyproj.CRS.from_user_input(_crs(ds))
    return crs.to_string()


def _same_crs(a, b) -> bool:
    if a is None or b is None:
        return a == b
    import pyproj

    try:
        return pyproj.CRS.from_user_input(a) == pyproj.CRS.from_user_input(b)
    except pyproj.exceptions.CRSError:
        return str(a) == str(b)


def _years(ds: xr.Dataset) -> list[int]:
    return (
        [int(str(t)[:4]) for t in ds["time"].values]
        if "time" in ds.coords
        else list(ds.attrs.get("years", []))
    )


def _chunks(ds: xr.Dataset, name: str) -> dict | None:
    variable = ds[name]
    # A sharded (Zarr 3) store's write unit is its shard; the inner chunks follow from it.
    chunks = (
        variable.encoding.get("shards")
        or variable.encoding.get("chunks")
        or variable.encoding.get("preferred_chunks")
    )
    if chunks is None and variable.chunks is not None:
        chunks = tuple(c[0] for c in variable.chunks)
    if isinstance(chunks, dict):
        return {d: int(chunks[d]) for d in variable.dims if d in chunks}
    return dict(zip(variable.dims, (int(c) for c in chunks))) if chunks is not None else None


def _short(values: list) -> str:
    values = [str(v) for v in values]
    return ", ".join(values) if len(values) <= 6 else f"{values[0]} .. {values[-1]} ({len(values)})"


def differences(existing: xr.Dataset, template: xr.Dataset) -> list[str]:
    """What the existing store and this run's template disagree on, each as `what X (this run: Y)`."""
    diffs = []
    have, want = set(existing.data_vars), set(template.data_vars)
    if have ^ want == {"confidence"}:  # classify --confidence
        diffs.append(
            "confidence (this run: without --confidence)"
            if "confidence" in have
            else "no confidence (this run: --confidence)"
        )
    elif have != want:
        diffs.append(f"variables {_short(sorted(have))} (this run: {_short(sorted(want))})")
    if not _same_crs(_crs(existing), _crs(template)):
        diffs.append(f"CRS {_crs_name(existing)} (this run: {_crs_name(template)})")
    gt_have, gt_want = _geotransform(existing), _geotransform(template)
    if gt_have and gt_want:
        for index, name in _TRANSFORM_TERMS:
            if not np.isclose(
                gt_have[index], gt_want[index], rtol=0, atol=1e-9 * max(1.0, abs(gt_want[index]))
            ):
                diffs.append(
                    f"{name} {_number(gt_have[index])} (this run: {_number(gt_want[index])})"
                )
    dims = [d for d in template.dims if d != "spatial_ref"]
    shape_have = {d: existing.sizes.get(d, 0) for d in dims}
    shape_want = {d: template.sizes[d] for d in dims}
    changed = [d for d in dims if shape_have[d] != shape_want[d]]
    if changed:
        fmt = lambda shape: ", ".join(f"{d}={shape[d]}" for d in changed)  # noqa: E731
        diffs.append(f"shape {fmt(shape_have)} (this run: {fmt(shape_want)})")
    elif not any(d.startswith(("x origin", "y origin", "pixel")) for d in diffs):
        for axis in ("x", "y"):  # the transform agrees: the coordinates must too
            if (
                axis in template.coords
                and axis in existing.coords
                and not np.allclose(existing[axis].values, template[axis].values, rtol=0, atol=1e-6)
            ):
                diffs.append(
                    f"{axis} coordinates from {_number(float(existing[axis].values[0]))} (this run: from {_number(float(template[axis].values[0]))})"
                )
    years_have, years_want = _years(existing), _years(template)
    if years_have != years_want:
        diffs.append(f"years {_short(years_have)} (this run: {_short(years_want)})")
    if "band" in template.coords:
        bands_have = [str(b) for b in existing["band"].values] if "band" in existing.coords else []
        bands_want = [str(b) for b in template["band"].values]
        if bands_have != bands_want:
            diffs.append(f"bands {_short(bands_have)} (this run: {_short(bands_want)})")
    for name in sorted(have & want):
        if existing[name].dtype != template[name].dtype:
            diffs.append(f"{name} dtype {existing[name].dtype} (this run: {template[name].dtype})")
        # The chunks Zarr holds decide (a small area's single chunk is the same for any --chunk-size);
        # the message names the --chunk-size each run asked for when both stores say.
        chunks_have, chunks_want = _chunks(existing, name), _chunks(template, name)
        if (
            chunks_have
            and chunks_want
            and chunks_have != chunks_want
            and not any(d.startswith("chunk size") for d in diffs)
        ):
            if (
                "chunk_size" in existing.attrs
                and "chunk_size" in template.attrs
                and existing.attrs["chunk_size"] != template.attrs["chunk_size"]
            ):
                diffs.append(
                    f"chunk size {existing.attrs['chunk_size']} (this run: {template.attrs['chunk_size']})"
                )
            elif not changed:  # (with another shape, chunks clipped to it differ anyway)
                fmt = lambda chunks: " x ".join(str(chunks[d]) for d in ("y", "x") if d in chunks)  # noqa: E731
                diffs.append(f"{name} chunks {fmt(chunks_have)} (this run: {fmt(chunks_want)})")
    rule = source_rule(existing.attrs, template.attrs)
    wanted = template.attrs if rule else legacy_attrs(template.attrs)
    for key, label in SOURCE_ATTRS.items():
        if rule and key in _PLACE_ATTRS:
            continue  # where the source is, and what it held: check_source
        if key in wanted and existing.attrs.get(key) != wanted[key]:
            diffs.append(f"{label} {existing.attrs.get(key)!r} (this run: {wanted[key]!r})")
    return diffs


def source_rule(have: dict, want: dict) -> str | None:
    """ "cog" / "ee" / "zarr" when both the store and this run fingerprint their source that way,
    else None (a store written before fingerprints, or another kind of source: compared as strings)."""
    for rule, keys in (
        ("cog", COG_FINGERPRINT),
        ("ee", EE_FINGERPRINT),
        ("zarr", ZARR_FINGERPRINT),
    ):
        if all(k in have for k in keys) and all(k in want for k in keys):
            return rule
    return None


def legacy_attrs(want: dict) -> dict:
    """This run's source attrs as a store written before fingerprints recorded them: the
    COG root as spelled (the rule such stores were resumed on, kept for them)."""
    if "cog_root_given" not in want:
        return want
    given = want["cog_root_given"]
    return {**want, "source": f"cog:{given}", "cog_root": given}


def _sha(value) -> str:
    return f"{str(value)[:12]}…"


def source_difference(path: str, have: dict, want: dict) -> tuple[str, str] | None:
    """(flag, message) when the store's source is not this run's, by place or fingerprint."""
    rule = source_rule(have, want)
    if rule is None or all(have.get(k) == want.get(k) for k in _fingerprint(rule)):
        return None
    if rule == "cog":

        def said(attrs: dict) -> str:
            text = f"index sha256 {_sha(attrs['cog_index_sha256'])}"
            if have["cog_index_sha256"] == want["cog_index_sha256"]:
                text += (
                    f", {attrs.get('cog_files', '?')} files under the area,"
                    f" listing sha256 {_sha(attrs['cog_files_sha256'])}"
                )
            return f"{attrs['cog_root']} ({text})"

        flag = "--cog-root"
    elif rule == "zarr":

        def said(attrs: dict) -> str:
            return f"{attrs['zarr_root']} (metadata sha256 {_sha(attrs['zarr_metadata_sha256'])})"

        flag = "--zarr-root"
    else:

        def said(attrs: dict) -> str:
            return (
                f"{attrs['ee_collection']} ({attrs.get('ee_images', '?')} images over the area"
                f" and years, ids sha256 {_sha(attrs['ee_images_sha256'])})"
            )

        flag = "--tuning"
    return flag, (
        ("collection: " if flag == "--tuning" else "")
        + f"{path} was extracted from {said(have)}, this run reads {said(want)}; "
        "resume from the same source or --overwrite"
    )


def _fingerprint(rule: str) -> tuple[str, ...]:
    return {"cog": COG_FINGERPRINT, "zarr": ZARR_FINGERPRINT}.get(rule, EE_FINGERPRINT)


def check(path: str, existing: xr.Dataset, template: xr.Dataset) -> None:
    """Raise InputError naming every difference; nothing is written either way."""
    from transforms.core.errors import InputError

    diffs = differences(existing, template)
    if diffs:
        raise InputError(
            "--resume",
            f"{path} has {'; '.join(diffs)}; resume with the flags that made it, or pass --overwrite to replace it",
        )
    # The grid agrees: the source must be the same one (checked after it, as the files an area
    # selects, or the images over it, change with the area).
    found = source_difference(path, dict(existing.attrs), dict(template.attrs))
    if found:
        raise InputError(*found)


# What may differ between the store and the source when years are added (`efm extract --add-years`):
# the mirror's index and a source store's metadata grow when a year is released; the files of the
# store's own years (COG) and the images over them (Earth Engine) must not have changed.
_GROWS_WITH_YEARS = ("cog_index_bytes", "cog_index_sha256", "zarr_metadata_sha256")


def check_add(path: str, existing: xr.Dataset, template: xr.Dataset) -> None:
    """`--add-years`: the place check of `check`, for `template` over the store's own years and
    its source record over them (everything else as --resume compares it)."""
    from transforms.core.errors import InputError

    diffs = differences(existing, template)
    if diffs:
        raise InputError(
            "--add-years",
            f"{path} has {'; '.join(diffs)}; add years with the flags that made it",
        )
    have = dict(existing.attrs)
    want = {**template.attrs, **{k: have[k] for k in _GROWS_WITH_YEARS if k in have}}
    found = source_difference(path, have, want)
    if found:
        flag, message = found
        raise InputError(
            flag,
            message.replace(
                "resume from the same source or --overwrite",
                "add years from the source that made it",
            ),
        )
