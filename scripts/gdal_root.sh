#!/bin/sh
# A GDAL >= 3.13 command line for tests/helpers/gdal.py: Debian 12 ships GDAL 3.6 and no pip wheel
# for Python 3.11 bundles a GDAL that reads Zarr v3 sharding. This installs Debian unstable's
# gdal-bin (3.13.x) into a private root with debootstrap, using only Debian's own packages; the
# host's apt sources are not touched and nothing outside ROOT is written. Needs root (chroot),
# about 780 MB and a few minutes. Then: export EFM_GDAL_ROOT=ROOT (the tests run GDAL's programs
# through ROOT's own dynamic loader, on the host's paths).
# Usage: scripts/gdal_root.sh [ROOT]   (default /opt/efm-gdal-root)
set -eu
ROOT=${1:-/opt/efm-gdal-root}
if [ -x "$ROOT/usr/bin/gdalmdiminfo" ]; then
    echo "export EFM_GDAL_ROOT=$ROOT"
    exit 0
fi
if [ -e "$ROOT" ] && [ -n "$(ls -A "$ROOT")" ]; then
    echo "gdal_root.sh: $ROOT exists and is not a GDAL root made by this script; choose another" >&2
    exit 2
fi
command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
debootstrap --variant=minbase sid "$ROOT" >/dev/null
chroot "$ROOT" apt-get install -y -q --no-install-recommends gdal-bin >/dev/null
chroot "$ROOT" apt-get clean
echo "export EFM_GDAL_ROOT=$ROOT"
