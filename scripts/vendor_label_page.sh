#!/usr/bin/env bash
# Rebuild label_page/static/vendor/ (the map library the labelling page ships, so that it loads
# nothing from a CDN) from the npm registry, at the exact versions of scripts/label_vendor/
# package-lock.json: `npm ci` in a temporary folder, then the built files and every licence of
# what they bundle are copied. Only needed to change versions: the files are committed, so
# installing or testing efm needs no npm. `make vendor-label-page` runs it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../label_page/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/label_vendor/package.json" "$here/label_vendor/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --silent)
nm="$work/node_modules"
rm -rf "$out"
mkdir -p "$out/images" "$out/licenses"
cp "$nm/leaflet/dist/leaflet.js" "$nm/leaflet/dist/leaflet.css" "$out/"
cp "$nm/leaflet/dist/images/layers.png" "$nm/leaflet/dist/images/layers-2x.png" "$out/images/"
cp "$nm/@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.min.js" \
   "$nm/@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.css" "$out/"
# leaflet-geoman.min.js bundles its dependencies: every package's licence goes with it
for pkg in $(cd "$nm" && ls -d */ @*/*/ | sed 's#/$##' | grep -v '^@[^/]*$' | grep -v '^@types'); do
  lic="$(ls "$nm/$pkg" | grep -i -m1 -E '^(licen[cs]e|copying)' || true)"
  if [ -z "$lic" ]; then echo "vendor_label_page.sh: $pkg has no licence file" >&2; exit 1; fi
  version="$(node -p "require('$nm/$pkg/package.json').version")"
  license="$(node -p "require('$nm/$pkg/package.json').license")"
  cp "$nm/$pkg/$lic" "$out/licenses/$(echo "$pkg" | tr '/' '_')-$version.txt"
  echo "$pkg $version $license" >> "$out/licenses/INDEX.txt"
done
sort -o "$out/licenses/INDEX.txt" "$out/licenses/INDEX.txt"
echo "label_page/static/vendor: $(ls "$out" | tr '\n' ' ')"
