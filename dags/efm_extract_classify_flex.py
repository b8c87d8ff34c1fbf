"""Example DAG (b): extract -> classify through the Dataflow flex templates (templates/), no Beam on Airflow.

Each task asks Dataflow to launch a flex template (DataflowStartFlexTemplateOperator) and waits for
the job. The template parameters are built from the DAG params by efm_airflow.flex_launch_body
(names as in templates/<pipeline>/metadata.json; tests check they agree), and Dataflow checks them
against the templates' regexes before anything starts. Build the templates first (templates/README.md)
and give their spec files as extract_template / classify_template.

    airflow dags trigger efm_extract_classify_flex --conf '{"gcp_project": "my-project", "region": "europe-west1",
        "extract_template": "gs://my-bucket/templates/efm-extract.json",
        "classify_template": "gs://my-bucket/templates/efm-classify.json",
        "bbox": "5.9,45.8,6.2,46.0", "years": "2022", "tuning": "ee_project=my-ee-project",
        "embeddings": "gs://my-bucket/efm/geneva.zarr", "model": "gs://my-bucket/efm/model.skops",
        "classes": "gs://my-bucket/efm/geneva-classes.zarr", "temp_location": "gs://my-bucket/tmp",
        "sdk_container_image": "europe-west1-docker.pkg.dev/my-project/efm/efm-extract:1.0"}'
"""

from __future__ import annotations

from airflow.sdk import DAG, Param
from efm_airflow import COMMON_PARAMS, DEFAULT_ARGS, flex_launch_body
from efm_flex_operator import EfmFlexTemplateOperator

with DAG(
    dag_id="efm_extract_classify_flex",
    description="Satellite embeddings: extract -> classify as Dataflow flex template jobs",
    schedule=None,
    default_args=DEFAULT_ARGS,  # execution_timeout from the task_timeout_hours param (efm_airflow)
    catchup=False,
    tags=["efm", "dataflow", "flex-template"],
    render_template_as_native_obj=True,  # the body macro returns a dict
    user_defined_macros={"efm_flex_body": flex_launch_body},
    params={
        "extract_template": Param(
            "gs://my-bucket/templates/efm-extract.json",
            type="string",
            description="Spec file of the extract flex template (gcloud dataflow flex-template build)",
        ),
        "classify_template": Param(
            "gs://my-bucket/templates/efm-classify.json",
            type="string",
            description="Spec file of the classify flex template",
        ),
        **COMMON_PARAMS,
    },
    doc_md=__doc__,
) as dag:
    extract = EfmFlexTemplateOperator(
        task_id="extract",
        project_id="{{ params.gcp_project }}",
        location="{{ params.region }}",
        body="{{ efm_flex_body('extract', params) }}",
        # no wait_until_finished: left unset, the task waits for the batch job either way (polling, or
        # deferred to the triggerer); set to True it fails at import where default_deferrable=True.
    )

    classify = EfmFlexTemplateOperator(
        task_id="classify",
        project_id="{{ params.gcp_project }}",
        location="{{ params.region }}",
        body="{{ efm_flex_body('classify', params) }}",
        # no wait_until_finished: left unset, the task waits for the batch job either way (polling, or
        # deferred to the triggerer); set to True it fails at import where default_deferrable=True.
    )

    extract >> classify
