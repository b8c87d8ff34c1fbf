#!/bin/sh
# A GDAL >= 3.13 command line for tests/helpers/gdal.py: Debian 12 ships GDAL 3.6 and no pip wheel
# for Python 3.11 bundles a GDAL that reads Zarr v3 sharding. This installs Debian unstable's
# gdal-bin (3.13.x) into a private root with debootstrap, using only Debian's own packages; the
# host's apt sources are not touched and nothing outside ROOT (and a temporary ROOT.partial.*
# beside it, renamed to ROOT when whole) is written. Needs root (chroot; re-runs itself with sudo
# when it can), about 560 MB, and once ~1.5 min (Debian 12, 2 cores). Then: export
# EFM_GDAL_ROOT=ROOT (the tests run GDAL's programs through ROOT's own dynamic loader, on the
# host's paths). `make test` runs it (GDAL_ROOT, default /opt/efm-gdal-root) and exports it.
# Usage: scripts/gdal_root.sh [ROOT]   (default /opt/efm-gdal-root)
set -eu
ROOT=${1:-/opt/efm-gdal-root}
if [ -x "$ROOT/usr/bin/gdalmdiminfo" ]; then
    echo "export EFM_GDAL_ROOT=$ROOT"
    exit 0
fi
if [ -e "$ROOT" ] && { [ ! -d "$ROOT" ] || [ -n "$(ls -A "$ROOT")" ]; }; then
    echo "gdal_root.sh: $ROOT exists and is not a GDAL root made by this script; choose another" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then
        exec sudo sh "$0" "$ROOT"
    fi
    echo "gdal_root.sh: run as root (debootstrap and chroot need it), e.g. sudo sh $0 $ROOT" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null; then
    # a fresh machine may have no package lists yet; wait for another apt run instead of failing on its lock
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends debootstrap >/dev/null
fi
mkdir -p "$(dirname "$ROOT")"
# Built beside ROOT under a name of its own, renamed when whole: an interrupted run leaves no
# half-made ROOT behind (and removes its own partial copy).
PARTIAL=$(mktemp -d "$ROOT.partial.XXXXXX")
chmod 755 "$PARTIAL" # mktemp's 0700 would keep apt's _apt user out of the root's cache
cleanup() {
    # debootstrap mounts proc, sys (and in a container binds /dev) inside; never delete across them
    for m in dev/pts dev proc sys; do umount "$PARTIAL/$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$PARTIAL"
}
trap cleanup EXIT
trap "exit 130" INT TERM
debootstrap --variant=minbase sid "$PARTIAL" >/dev/null
chroot "$PARTIAL" apt-get install -y -q --no-install-recommends gdal-bin >/dev/null
chroot "$PARTIAL" apt-get clean
chroot "$PARTIAL" gdalinfo --version
if [ -d "$ROOT" ]; then
    rmdir "$ROOT" # empty (checked above)
fi
mv "$PARTIAL" "$ROOT"
trap - EXIT
echo "export EFM_GDAL_ROOT=$ROOT"
