#!/usr/bin/env bash
# Installs efm the way a notebook user does -- `pip install efm-pipelines jupyterlab geopandas
# pandas`, WITHOUT constraints.txt, so pip picks the newest versions the index resolves inside
# setup.py's ranges -- in a fresh virtualenv in a temp folder, prints what resolved, and runs the
# API smoke test (scripts/smoke_api.py) with it. `make compat-smoke` (part of `make test`, so CI)
# runs it; it fails when the ranges admit a set that does not install or does not work.
#
#   bash scripts/compat_smoke.sh            # PYTHON=python3.11 to pick the interpreter
#
# It builds from a copy of the sources in the temp folder (pip builds in the source tree: no
# build/ or *.egg-info left in the checkout) and removes only that temp folder.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${PYTHON:-python3}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/efm-compat.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

mkdir "$tmp/src"
# what setup.py packages, and setup.py itself (no tests, emulators, venvs or caches)
tar -C "$REPO" --exclude=__pycache__ -cf - setup.py README.md efm transforms pipelines \
    sample_data label_page | tar -C "$tmp/src" -xf -

"$PYTHON" -m venv "$tmp/venv"
VPY=$tmp/venv/bin/python
"$VPY" -m pip install --quiet --upgrade pip
# No -c constraints.txt: the point is what resolves without it.
"$VPY" -m pip install --quiet "$tmp/src" jupyterlab geopandas pandas
installed=$(date +%s)
"$VPY" -m pip check
echo "compat-smoke: resolved without constraints.txt (pip freeze):"
"$VPY" -m pip freeze --exclude-editable | sed 's/^/  /' > "$tmp/freeze.txt"
cat "$tmp/freeze.txt"
echo "compat-smoke: versions that differ from constraints.txt:"
"$VPY" - "$REPO/constraints.txt" "$tmp/freeze.txt" <<'EOF'
import re, sys
def pins(path):
    out = {}
    for line in open(path):
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return out
tested, resolved = pins(sys.argv[1]), pins(sys.argv[2])
for name in sorted(resolved):
    if name in tested and tested[name] != resolved[name]:
        print(f"  {name}: {tested[name]} (constraints.txt) -> {resolved[name]}")
EOF

# Run from the temp folder, so that `import efm` finds the installed package, not the checkout.
(cd "$tmp" && env -u PYTHONPATH "$VPY" "$REPO/scripts/smoke_api.py" --installed)
end=$(date +%s)
echo "compat-smoke: passed (install $((installed - start)) s, smoke test $((end - installed)) s)"
