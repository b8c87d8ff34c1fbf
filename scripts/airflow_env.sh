#!/usr/bin/env bash
# Builds the Airflow test environment (.venv-airflow): Airflow 3 + the Beam and Google providers,
# pinned by tests_airflow/requirements.txt and tests_airflow/constraints.txt. Separate from the
# project's .venv because Airflow and Beam pin conflicting dependencies; the DAGs start the
# pipelines with the project's interpreter (EFM_PYTHON), so Beam/efm never load inside Airflow.
#
#   scripts/airflow_env.sh [VENV]             build (or bring up to date) VENV, default .venv-airflow
#   scripts/airflow_env.sh --refreeze [VENV]  rebuild from requirements.txt alone, rewrite constraints.txt
set -euo pipefail
cd "$(dirname "$0")/.."
refreeze=0
if [[ "${1:-}" == "--refreeze" ]]; then refreeze=1; shift; fi
venv="${1:-.venv-airflow}"
python="${PYTHON:-python3}"
requirements=tests_airflow/requirements.txt
constraints=tests_airflow/constraints.txt
stamp="$venv/.installed"

if [[ $refreeze == 0 && -f "$stamp" && "$stamp" -nt "$requirements" && "$stamp" -nt "$constraints" ]]; then
    exit 0  # up to date
fi
pip() {  # pip, without the "Location ... is ignored" lines some pip configurations print per package
    "$venv/bin/python" -m pip "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2)
}
start=$(date +%s)
[[ $refreeze == 1 ]] && rm -rf "$venv"
"$python" -m venv "$venv"
printf '*\n' > "$venv/.gitignore"  # never committed, whatever `git add` is run
pip install --quiet --upgrade pip
if [[ $refreeze == 1 ]]; then
    pip install --quiet -r "$requirements"
    {
        sed -n '1,/^# Regenerate/p' "$constraints"
        pip freeze --all | grep -v -E '^(pip|setuptools|wheel)=='
    } > "$constraints.new"
    mv "$constraints.new" "$constraints"
else
    pip install --quiet -r "$requirements" -c "$constraints"
fi
pip check
touch "$stamp"
echo "airflow_env.sh: $venv ready in $(( $(date +%s) - start )) s ($("$venv/bin/python" -c 'import airflow; print("Airflow", airflow.__version__)'))"
