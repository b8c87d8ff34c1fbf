"""Airflow for the tests: a throw-away AIRFLOW_HOME with a SQLite metadata DB, the repo's dags/ folder.

Run with the Airflow environment's Python (make test does: .venv-airflow/bin/python -m pytest tests_airflow).
EFM_PYTHON is the project's interpreter (efm-pipelines installed): the DAGs run the pipelines with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"

# Before anything imports airflow: its configuration is read once, at import.
_HOME = Path(tempfile.mkdtemp(prefix="efm-airflow-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # never reach for the GCE metadata server (a non-loopback address) from tests
        "NO_GCE_CHECK": "True",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
    }
)
_default_efm_python = REPO / ".venv" / "bin" / "python"
os.environ.setdefault("EFM_PYTHON", str(_default_efm_python))
# the pipelines' interpreter finds this checkout's code even where efm is not pip-installed
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
)

sys.path.append(
    str(DAGS)
)  # as Airflow's dags-folder bundle does: the DAGs import efm_airflow from it

import pytest  # noqa: E402


def pytest_configure(config):
    efm_python = os.environ["EFM_PYTHON"]
    if not Path(efm_python).exists() and not shutil.which(efm_python):
        raise pytest.UsageError(
            f"EFM_PYTHON={efm_python}: no such interpreter; set EFM_PYTHON to a Python with efm-pipelines installed (make install)"
        )
    # the metadata DB dag.test() needs
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )


def pytest_unconfigure(config):
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def efm_python() -> str:
    return os.environ["EFM_PYTHON"]
