"""Example DAGs under Airflow (tests_airflow/): the DAG folder and its DAG ids, parsed as Airflow's
dag processor parses the dags-folder bundle."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


DAG_IDS = {
    "efm_extract_classify_beam",
    "efm_extract_classify_flex",
    "efm_regression_maps_beam",
    "efm_regression_maps_flex",
}


def dag_bag():
    """The DAG folder parsed as Airflow 3's dag processor parses the dags-folder bundle (on sys.path:
    the DAGs import their helper module, efm_airflow, from it)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)
