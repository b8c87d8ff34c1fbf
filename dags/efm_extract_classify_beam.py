"""Example DAG (a): extract -> classify with BeamRunPythonPipelineOperator; the runner is a DAG param.

    runner=DirectRunner    the pipelines run on the Airflow worker (small areas, tests)
    runner=DataflowRunner  the operator submits Dataflow jobs (project/region from dataflow_config),
                           links and waits on them; workers run the image given in sdk_container_image

Each task runs `$EFM_PYTHON -m pipelines.<step> --flag=value ...`: EFM_PYTHON is an interpreter with
efm-pipelines installed (its own virtualenv: Airflow and Beam pin conflicting dependencies).
Bad input (area, years, credentials, a missing bucket, a model that doesn't load) fails the task
at once with efm's one-line error in the task log, before any Dataflow job exists.

Trigger it with a config, e.g.
    airflow dags trigger efm_extract_classify_beam --conf '{"runner": "DataflowRunner", "gcp_project": "my-project",
        "bbox": "5.9,45.8,6.2,46.0", "years": "2022", "tuning": "ee_project=my-ee-project",
        "embeddings": "gs://my-bucket/efm/geneva.zarr", "model": "gs://my-bucket/efm/model.skops",
        "classes": "gs://my-bucket/efm/geneva-classes.zarr", "temp_location": "gs://my-bucket/tmp",
        "sdk_container_image": "europe-west1-docker.pkg.dev/my-project/efm/efm-extract:1.0"}'
"""

from __future__ import annotations

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.sdk import DAG, Param
from efm_airflow import COMMON_PARAMS, DEFAULT_ARGS, EFM_PYTHON, beam_pipeline_options


def dataflow_config(job_name: str) -> dict:
    return {
        "job_name": job_name,
        "project_id": "{{ params.gcp_project }}",
        "location": "{{ params.region }}",
        # the service account is a pipeline option (efm_airflow.beam_pipeline_options): see there why
        "wait_until_finished": True,
    }


with DAG(
    dag_id="efm_extract_classify_beam",
    description="Satellite embeddings: extract (Earth Engine or COG mirror) -> classify, on DirectRunner or Dataflow",
    schedule=None,
    default_args=DEFAULT_ARGS,  # execution_timeout from the task_timeout_hours param (efm_airflow)
    catchup=False,
    tags=["efm", "beam", "dataflow"],
    render_template_as_native_obj=True,  # the options macro returns a dict; numbers stay numbers
    user_defined_macros={"efm_beam_options": beam_pipeline_options},
    params={
        "runner": Param(
            "DirectRunner",
            enum=["DirectRunner", "DataflowRunner"],
            description="Where the pipelines run",
        ),
        **COMMON_PARAMS,
    },
    doc_md=__doc__,
) as dag:
    extract = BeamRunPythonPipelineOperator(
        task_id="extract",
        py_interpreter=EFM_PYTHON,
        py_options=["-m"],
        py_file="pipelines.extract",
        runner="{{ params.runner }}",
        # --bbox, --years, --output (the embeddings param), --source, ... from the DAG params (efm_airflow.STEP_PARAMETERS)
        pipeline_options="{{ efm_beam_options('extract', params) }}",
        dataflow_config=dataflow_config("efm-extract"),
    )

    classify = BeamRunPythonPipelineOperator(
        task_id="classify",
        py_interpreter=EFM_PYTHON,
        py_options=["-m"],
        py_file="pipelines.classify",
        runner="{{ params.runner }}",
        pipeline_options="{{ efm_beam_options('classify', params) }}",
        dataflow_config=dataflow_config("efm-classify"),
    )

    extract >> classify
