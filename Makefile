# Two commands do all the set-up themselves: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Airflow runs in its own virtualenv (Airflow and Beam pin conflicting dependencies); the example
# DAGs start the pipelines with the project's interpreter, EFM_PYTHON.
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

# tests/ on every core (pytest-xdist), a test file per worker so a file's fixtures are built
# once; at most 4 workers (each builds its own session fixtures); the 15 slowest tests listed.
# make test PYTEST_ARGS= runs them in one process.
PYTEST_ARGS ?= -n auto --maxprocesses=4 --dist loadfile --durations=15

.PHONY: vendor-label-page demo test test-airflow install airflow-env gdal-bin gdal-root benchmark clean lint compat-smoke

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,s3]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/efm demo --output demo-output --overwrite  # the folder is the demo's own: re-running replaces it

$(AIRFLOW_STAMP): tests_airflow/requirements.txt tests_airflow/constraints.txt scripts/airflow_env.sh
	PYTHON=$(PYTHON) bash scripts/airflow_env.sh $(AIRFLOW_VENV)

airflow-env: $(AIRFLOW_STAMP)

# Debian 12's GDAL (3.6) command-line tools: tests/test_geozarr.py opens the stores efm wrote
# before issue 17 (Zarr 2) with them (apt-get, as root).
gdal-bin:
	bash scripts/gdal_bin.sh

# GDAL >= 3.13 (reads Zarr 3 sharding): Debian sid's gdal-bin in a private Debian root
# (scripts/gdal_root.sh: debootstrap, as root, ~560 MB, ~1.5 min the first time, then kept at
# GDAL_ROOT). tests/test_geozarr.py and tests/test_gdal_helper.py open every store efm writes
# with it; under CI=true they fail, never skip, without it (tests/helpers/gdal.py).
GDAL_ROOT ?= /opt/efm-gdal-root
gdal-root:
	sh scripts/gdal_root.sh $(GDAL_ROOT)

test: $(STAMP) $(AIRFLOW_STAMP) gdal-bin gdal-root
	bash scripts/browser_env.sh  # chromium + chromium-driver for tests/test_label_browser.py (apt-get as root)
	$(VENV)/bin/ruff check .  # one style (pyproject.toml): lint, then layout
	$(VENV)/bin/ruff format --check .
	$(MAKE) --no-print-directory compat-smoke  # the ranges without constraints.txt (below)
	EFM_GDAL_ROOT=$(GDAL_ROOT) $(PY) -m pytest -q $(PYTEST_ARGS)
	EFM_PYTHON=$(abspath $(PY)) $(AIRFLOW_VENV)/bin/python -m pytest -q tests_airflow

# setup.py's ranges WITHOUT constraints.txt: a fresh virtualenv in a temp folder, efm next to the
# newest jupyterlab, geopandas and pandas pip resolves, then the API smoke test (scripts/smoke_api.py).
compat-smoke:
	PYTHON=$(PYTHON) bash scripts/compat_smoke.sh

test-airflow: $(STAMP) $(AIRFLOW_STAMP)
	EFM_PYTHON=$(abspath $(PY)) $(AIRFLOW_VENV)/bin/python -m pytest -q tests_airflow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

benchmark: $(STAMP)
	$(PY) benchmarks/extract_vs_xee.py
	$(PY) benchmarks/similarity_change_vs_numpy.py

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) demo-output .pytest_cache

# The labelling page's map library (label_page/static/vendor/: Leaflet and Leaflet-Geoman, with
# their licences), rebuilt from the npm registry at the versions pinned in
# scripts/label_vendor/package-lock.json. The built files are committed: tests need no npm.
vendor-label-page:
	bash scripts/vendor_label_page.sh
