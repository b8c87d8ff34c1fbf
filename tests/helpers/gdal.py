"""GDAL's two views of a Zarr store (classic 2-D rasters, multidimensional), and rioxarray's.

Reading a Zarr v3 array written with the sharding codec needs GDAL >= 3.13 (read support for
`sharding_indexed` arrived in 3.13.0). Measured on this machine (Debian 12, Python 3.11):
- Debian 12's gdal-bin is 3.6.2; bookworm-backports carries no gdal; trixie has 3.10.3;
- rasterio 1.4.4's bundled GDAL 3.10.3 opens no zarr-python 3 array ("Unsupported codec: bytes"),
  sharded or not; rasterio 1.5.x (bundled GDAL 3.12.2) needs Python >= 3.12;
- pyogrio 0.13.0's bundled GDAL 3.12.4 has the Zarr driver but no sharding, blosc or zstd;
- the `gdal` distribution on PyPI has no wheel here;
- Debian sid's gdal-bin 3.13.3 reads the whole layout (sharding + Blosc-Zstd, plain Zstd, bytes).
  scripts/gdal_root.sh installs it into a private Debian root with debootstrap (Debian's own
  packages, ~780 MB, a few minutes); its programs run from there through that root's own dynamic
  loader, on the host's paths, without chroot. Point `EFM_GDAL_ROOT` at the root.
`gdal_command` uses EFM_GDAL_ROOT, else a `gdalinfo` on PATH if it is >= 3.13; the tests that need
it skip, saying so, when neither exists, and fail under CI=true (`make test` sets the root up).

What GDAL 3.13.3 needs to show the store right (tried one attribute set at a time):
- y x rasters: the array's `dimension_names` end in (y, x): `ZARR:"store":/embedding:T:B` is one
  y x raster per (time, band) index;
- geotransform: 1-D `x`/`y` coordinate arrays (regular) beside the array, or proj:/spatial: on the
  ARRAY itself with `zarr_conventions` registering both there (GDAL ignores them on the group);
- CRS: the array's `grid_mapping` attr naming a variable whose attrs hold `crs_wkt`, or (same as
  above) proj: on the array; a CF `GeoTransform` attr alone is not used;
- nodata: the array's `fill_value` (-128).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

MIN_VERSION = (3, 13)
SKIP_REASON = (
    "no GDAL >= 3.13 here (Zarr v3 sharding): Debian 12 has 3.6, rasterio's bundled GDAL is "
    "3.10 and pyogrio's 3.12; run scripts/gdal_root.sh and set EFM_GDAL_ROOT"
)


def _root_command(root: Path, tool: str) -> tuple[list[str], dict]:
    loader = root / "lib64" / "ld-linux-x86-64.so.2"
    dirs = [root / "usr/lib/x86_64-linux-gnu", root / "lib/x86_64-linux-gnu", root / "usr/lib"]
    for conf in sorted(glob.glob(str(root / "etc/ld.so.conf.d/*.conf"))):
        for line in Path(conf).read_text().splitlines():
            line = line.strip()
            if line.startswith("/"):
                dirs.append(root / line.lstrip("/"))
    dirs += [Path(p) for p in sorted(glob.glob(str(root / "usr/lib/x86_64-linux-gnu/*/")))]
    library_path = ":".join(str(d) for d in dirs if d.is_dir())
    env = {"GDAL_DATA": str(root / "usr/share/gdal"), "PROJ_DATA": str(root / "usr/share/proj")}
    return [str(loader), "--library-path", library_path, str(root / "usr/bin" / tool)], env


def _version(command: list[str], env: dict) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [*command, "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"GDAL (\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else None


def gdal_command(tool: str = "gdalinfo") -> tuple[list[str], dict] | None:
    """(argv prefix, extra env) running `tool` of a GDAL >= 3.13, or None."""
    root = os.environ.get("EFM_GDAL_ROOT")
    if root:
        command, env = _root_command(Path(root), tool)
        if Path(command[-1]).exists() and (_version(command, env) or (0,)) >= MIN_VERSION:
            return command, env
    found = shutil.which(tool)
    if found and (_version([found], {}) or (0,)) >= MIN_VERSION:
        return [found], {}
    return None


def required() -> bool:
    """In CI (`CI=true`, which .ci/run sets and CI services set) the GDAL tests must run: `make
    test` sets GDAL up (scripts/gdal_root.sh) and exports EFM_GDAL_ROOT."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_gdal() -> None:
    """Skip (saying why) when no GDAL >= 3.13 is here; FAIL instead under CI=true."""
    import pytest

    if gdal_command() is None:
        if required():
            pytest.fail(f"CI=true: the GDAL tests must run, not skip: {SKIP_REASON}")
        pytest.skip(SKIP_REASON)


def run(tool: str, *args: str) -> str:
    found = gdal_command(tool)
    if found is None:
        raise RuntimeError(SKIP_REASON)
    command, env = found
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )
    if done.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


def version() -> str:
    return run("gdalinfo", "--version").strip()


def subdataset(path, array: str, *index: int) -> str:
    return f'ZARR:"{path}":/{array}' + "".join(f":{i}" for i in index)


def mdiminfo(path) -> dict:
    """`gdalmdiminfo` of the store, as JSON (arrays, dimensions, srs, block sizes, nodata)."""
    return json.loads(run("gdalmdiminfo", str(path)))


@dataclasses.dataclass(frozen=True)
class ClassicView:
    width: int
    height: int
    count: int
    crs: object  # pyproj.CRS or None
    transform: object  # affine.Affine or None
    nodata: float | None


def classic_view(path, array: str, *index: int) -> ClassicView:
    """GDAL's classic raster view of `array` at the leading `index` (e.g. time, band)."""
    import affine
    import pyproj

    info = json.loads(run("gdalinfo", "-json", subdataset(path, array, *index)))
    width, height = info["size"]
    wkt = (info.get("coordinateSystem") or {}).get("wkt")
    gt = info.get("geoTransform")
    return ClassicView(
        width=width,
        height=height,
        count=len(info.get("bands", [])),
        crs=pyproj.CRS.from_wkt(wkt) if wkt else None,
        transform=affine.Affine.from_gdal(*gt) if gt else None,
        nodata=(info.get("bands") or [{}])[0].get("noDataValue"),
    )


def read_classic(path, array: str, *index: int) -> np.ndarray:
    """Band 1 of the classic view as GDAL decodes it, as float64 (gdal_translate -ot Float64 to a
    raw ENVI file: ENVI holds no Int8, and a float64 holds every int8 or float32 value exactly)."""
    view = classic_view(path, array, *index)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "band.img"
        run(
            "gdal_translate",
            "-q",
            "-ot",
            "Float64",
            "-of",
            "ENVI",
            subdataset(path, array, *index),
            str(out),
        )
        header = (Path(tmp) / "band.hdr").read_text()
        assert re.search(r"data type\s*=\s*5\b", header), header  # 5 = float64
        assert re.search(r"byte order\s*=\s*0\b", header), header  # little-endian
        raw = np.fromfile(out, dtype="<f8")
    return raw.reshape(view.height, view.width)


def rio_view(path, var: str, **isel) -> tuple[int, int, object, object]:
    """(width, height, crs, transform) as rioxarray sees `var` (xarray.open_zarr, CF coords)."""
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    ds = xr.open_zarr(str(path), decode_coords="all", consolidated=False)
    da = ds[var].isel(**isel) if isel else ds[var]
    return da.rio.width, da.rio.height, da.rio.crs, da.rio.transform()
