"""Example DAG (c): after extract, the regression and map products, with BeamRunPythonPipelineOperator.

    extract -> sample (--keep-columns) -> train (a regressor) -> predict
            -> similarity
            -> change

sample, predict, similarity and change are Beam pipelines (`$EFM_PYTHON -m pipelines.<step>`); the DAG
param `runner` picks DirectRunner (on the Airflow worker) or DataflowRunner, as in DAG (a).
train is one process (scikit-learn on the sample table in memory), not a Beam pipeline: a
BashOperator runs `$EFM_PYTHON -m pipelines.train` on the Airflow worker, reading and writing local
or gs:// paths. similarity and change need only the embeddings: they run beside the regression branch.

Trigger it with a config, e.g.
    airflow dags trigger efm_regression_maps_beam --conf '{"runner": "DataflowRunner", "gcp_project": "my-project",
        "bbox": "5.9,45.8,6.2,46.0", "years": "2022,2023", "tuning": "ee_project=my-ee-project",
        "embeddings": "gs://my-bucket/efm/geneva.zarr", "points": "gs://my-bucket/efm/gedi.geojson", "keep_columns": "agbd",
        "samples": "gs://my-bucket/efm/gedi.parquet", "target_column": "agbd", "regressor": "knn", "target_units": "Mg/ha",
        "model": "gs://my-bucket/efm/agbd.skops", "prediction": "gs://my-bucket/efm/agbd.zarr",
        "reference_points": "gs://my-bucket/efm/refs.geojson", "similarity": "gs://my-bucket/efm/similarity.zarr",
        "change_years": "2022,2023", "change_threshold": 0.8, "change": "gs://my-bucket/efm/change.zarr",
        "temp_location": "gs://my-bucket/tmp", "sdk_container_image": "europe-west1-docker.pkg.dev/my-project/efm/efm-extract:1.0"}'

The model is a .skops file (the default): predict loads it without a hash. A pickle (.pkl) would need
model_sha256, which train prints only when it has run.
"""

from __future__ import annotations

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param
from efm_airflow import (
    COMMON_PARAMS,
    DEFAULT_ARGS,
    EFM_PYTHON,
    MAP_PARAMS,
    beam_pipeline_options,
    train_command,
)


def dataflow_config(job_name: str) -> dict:
    return {
        "job_name": job_name,
        "project_id": "{{ params.gcp_project }}",
        "location": "{{ params.region }}",
        # the service account is a pipeline option (efm_airflow.beam_pipeline_options): see there why
        "wait_until_finished": True,
    }


def beam_step(step: str) -> BeamRunPythonPipelineOperator:
    return BeamRunPythonPipelineOperator(
        task_id=step,
        py_interpreter=EFM_PYTHON,
        py_options=["-m"],
        py_file=f"pipelines.{step}",
        runner="{{ params.runner }}",
        # the step's flags from the DAG params (efm_airflow.STEP_PARAMETERS)
        pipeline_options=f"{{{{ efm_beam_options('{step}', params) }}}}",
        dataflow_config=dataflow_config(f"efm-{step}"),
    )


with DAG(
    dag_id="efm_regression_maps_beam",
    description="Satellite embeddings: extract -> sample -> train a regressor -> predict, and similarity and change, on DirectRunner or Dataflow",
    schedule=None,
    default_args=DEFAULT_ARGS,  # execution_timeout from the task_timeout_hours param (efm_airflow)
    catchup=False,
    tags=["efm", "beam", "dataflow", "regression"],
    render_template_as_native_obj=True,  # the options macro returns a dict; numbers stay numbers
    user_defined_macros={
        "efm_beam_options": beam_pipeline_options,
        "efm_train_command": train_command,
    },
    params={
        "runner": Param(
            "DirectRunner",
            enum=["DirectRunner", "DataflowRunner"],
            description="Where the Beam pipelines run",
        ),
        **COMMON_PARAMS,
        **MAP_PARAMS,
    },
    doc_md=__doc__,
) as dag:
    extract = beam_step("extract")
    sample = beam_step("sample")
    train = BashOperator(task_id="train", bash_command="{{ efm_train_command(params) }}")
    predict = beam_step("predict")
    similarity = beam_step("similarity")
    change = beam_step("change")

    extract >> sample >> train >> predict
    extract >> [similarity, change]
