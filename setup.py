"""efm-pipelines: Beam pipelines for Earth Engine satellite embedding fields."""

import setuptools

# Versions tested together (CI installs exactly these, plus constraints.txt for the
# transitive set). templates/Dockerfile pins the same; tests check they agree.
INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "xarray-beam==0.11.5",
    "xee==0.1.2",
    "earthengine-api==1.7.35",
    "zarr==3.1.6",
    "xarray==2026.9.0",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "dask==2026.8.0",
    "distributed==2026.8.0",  # the Python API (efm/) on a LocalCluster or a cluster on Kubernetes
    "scikit-learn==1.9.1",
    "gcsfs==2026.10.1",
    "fsspec==2026.9.0",
    "rioxarray==0.19.0",
    "rasterio==1.4.4",
    "pyproj==3.7.2",
    "shapely==2.2.0",
    "geopandas==1.2.0",
    "pyogrio==0.13.0",
    "pyarrow==25.0.1",
    "skops==0.16.0",
    "matplotlib==3.11.2",
]

EXTRAS = {
    "test": [
        "pytest==9.2.0",
        "pytest-timeout==2.4.0",
        "hypothesis==6.170.15",
        "ruff==0.17.6",  # make test runs ruff check + ruff format --check (pyproject.toml)
        "gcp-storage-emulator==2026.7.19",
        "selenium==4.51.0",  # drives Debian's chromium in tests/test_label_browser.py (4.52 needs a newer certifi)
        # tests/test_cog_s3.py: moto's ThreadedMotoServer needs only flask + flask-cors for S3;
        # moto[server] would pull every AWS service's dependencies (cfn-lint, sympy, docker, ...).
        "moto[s3]==5.2.5",
        "flask==3.1.3",
        "flask-cors==6.0.5",
        "nbclient==0.11.0",  # tests/test_notebook.py runs docs/notebook.ipynb headless
        "nbformat==5.11.1",
        "ipykernel==7.4.0",
    ],
    # --cog-root s3://... (e.g. the public mirror on Source Cooperative). s3fs moves in step
    # with fsspec (same version); aiobotocore/botocore are pinned in constraints.txt.
    "s3": ["s3fs==2026.9.0"],
    # benchmarks/cog_and_int8.py: the virtual-Zarr way of reading the mirror (aef-loader's
    # technique; aef-loader itself needs Python >= 3.12). Transitive pins in constraints.txt.
    "bench": ["virtual-tiff==0.5.0", "virtualizarr==2.5.1", "obstore==0.12.1"],
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
    package_data={"label_page": ["static/*"]},  # the labelling page: served by the package, no CDN
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["efm = pipelines.cli:main"]},
)
