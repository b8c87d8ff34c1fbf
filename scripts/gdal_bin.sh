#!/usr/bin/env bash
# Installs Debian's gdal-bin (gdalinfo, gdalmdiminfo, gdalmdimtranslate) when missing: tests/test_geozarr.py
# opens every store with these GDAL tools (GDAL 3.6 on Debian 12) besides rasterio's bundled GDAL.
# Needs root (CI runs as root) or sudo; does nothing when the tools are already there.
set -euo pipefail
if command -v gdalmdiminfo >/dev/null && command -v gdalmdimtranslate >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "scripts/gdal_bin.sh: no apt-get here; install GDAL's command-line tools (gdalinfo, gdalmdiminfo, gdalmdimtranslate) yourself" >&2
    exit 1
fi
as_root=()
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { echo "scripts/gdal_bin.sh: run as root to install gdal-bin (apt-get install gdal-bin)" >&2; exit 1; }
    as_root=(sudo)
fi
# Wait for another apt/dpkg run (e.g. another setup script) instead of failing on its lock.
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends gdal-bin >/dev/null
gdalinfo --version
