"""`efm extract --add-years`: a store grows by years at the end of its time axis.

Only a Zarr 3 store (what efm writes) grows, and only at the end: a shard's key holds its time
index (embedding/c/<t>/...), so a year inserted before another would move every later year's
files. The store this run would have made over its own years is checked first (`check_add`),
then `add_years` resizes its time axis without reading or writing a shard already there.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from transforms.core.errors import InputError
from transforms.storage import store, zarr_direct


def check_add(path: str, template: xr.Dataset) -> None:
    """`--add-years`: refuse (InputError, one line) a store this run would not have made over its
    own years (`template`'s: grid, bands, dtype, chunks, source; transforms/storage/resume.py)."""
    from transforms.storage import resume as resume_check

    with zarr_direct.quiet():
        try:  # the consolidated metadata: the store as it was before an add that stopped, if one did
            existing = xr.open_zarr(path, consolidated=True, mask_and_scale=False)
        except (KeyError, ValueError):  # an add that stopped after it had rewritten the group
            existing = xr.open_zarr(path, consolidated=False, mask_and_scale=False)
    resume_check.check_add(path, existing, template)


def years_to_add(path: str, added: list[int], *, resume: bool) -> tuple[list[int], list[int]]:
    """(the store's years, its years after the add) for `--add-years`; InputError (one line) when
    the years cannot be added without touching what is there.

    Only a Zarr 3 store (what efm writes) grows, and only at the end of its time axis: a shard's
    key holds its time index (embedding/c/<t>/...), so a year inserted before another would move
    every later year's files. A store that is not complete is refused unless --resume (which then
    finishes it as well): `--add-years Y --resume` also finishes an add that stopped."""
    import zarr

    flag = "--add-years"
    with zarr_direct.quiet():
        try:
            group = zarr.open_group(path, mode="r")  # as check_add reads it
        except Exception as exc:  # noqa: BLE001 (any unreadable store: one line)
            raise InputError(flag, f"cannot open {path} as an efm store: {exc}") from None
    if group.metadata.zarr_format != 3:
        raise InputError(
            flag,
            f"{path} is a Zarr 2 store (written before efm wrote Zarr 3); only Zarr 3 stores take "
            "years: extract the new years into a store of their own, or all years into a new one",
        )
    attrs = dict(group.attrs)
    if attrs.get("efm_product") != "embeddings" or "time" not in group:
        raise InputError(flag, f"{path} is not an efm embedding store; --add-years grows one")
    have = [int(y) for y in np.asarray(group["time"][:])]
    if attrs.get(store.STATUS_ATTR) != "complete" and not resume:
        raise InputError(
            flag,
            f"{path} is incomplete ({store.STATUS_ATTR}={attrs.get(store.STATUS_ATTR)!r}); add --resume to finish "
            "it and add the years in one run",
        )
    present = [y for y in added if y in have]
    if present and not resume:
        raise InputError(
            flag,
            f"{present[0]} is already in {path} (its years: {', '.join(map(str, have))}); "
            "--add-years adds only years the store does not hold",
        )
    new = [y for y in added if y not in have]
    if have and new and new[0] <= have[-1]:
        raise InputError(
            flag,
            f"{new[0]} is not after {path}'s last year {have[-1]}: years are added only at the end, "
            "as inserting one would rewrite every later year's files (embedding/c/<t>/...); "
            "extract all the years into a new store",
        )
    return have, sorted(have + new)


def add_years(path: str, template: xr.Dataset) -> None:
    """Grow the store at `path` to `template`'s years (the same years first, then new ones).

    The store is marked incomplete first (its consolidated metadata, what readers open, then
    still says the old years); then the time axis of every variable that has one is resized
    (Zarr writes only the new `zarr.json`: no shard of the years already there is read or
    written), the new years' values of the `time` coordinate are written, the group's
    attributes become this run's (years, the source's record over all of them) and the
    metadata is consolidated again. Each step can be run again: an add that stopped is
    finished by the same command with --resume."""
    import zarr

    store.set_status(path, "incomplete")
    years = [int(y) for y in template["time"].values]
    with zarr_direct.quiet():
        group = zarr.open_group(path, mode="r+", use_consolidated=False)
        for name in template.data_vars:
            array = group[name]
            dims = zarr_direct.dims_of(array)
            shape = tuple(len(years) if d == "time" else n for d, n in zip(dims, array.shape))
            if shape != array.shape:  # growing: zarr deletes nothing, writes the array's zarr.json
                array.resize(shape)
        time = group["time"]
        start = time.shape[0]
        if start != len(years):
            time.resize((len(years),))
        if start < len(years):
            time[start:] = np.asarray(years[start:], dtype=time.dtype)
        group.attrs.update(
            zarr_direct._attrs({k: v for k, v in template.attrs.items() if k != store.STATUS_ATTR})
        )
    zarr_direct.consolidate(path)
