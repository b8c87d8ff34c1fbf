"""Example DAG (d): DAG (c) through the Dataflow flex templates (templates/).

    extract -> sample -> train (a regressor) -> predict
            -> similarity
            -> change

extract, sample, predict, similarity and change are flex template jobs (DataflowStartFlexTemplateOperator,
parameters from efm_airflow.flex_launch_body, checked by Dataflow against templates/<step>/metadata.json).
train is no Dataflow job (scikit-learn on the sample table, one process): a BashOperator runs
`$EFM_PYTHON -m pipelines.train` on the Airflow worker with gs:// paths, so unlike DAG (b) this DAG
needs efm in a virtualenv on the workers (EFM_PYTHON) for that one task. Build the templates first
(templates/README.md) and give their spec files as <step>_template.

    airflow dags trigger efm_regression_maps_flex --conf '{"gcp_project": "my-project", "region": "europe-west1",
        "extract_template": "gs://my-bucket/templates/efm-extract.json", "sample_template": "gs://my-bucket/templates/efm-sample.json",
        "predict_template": "gs://my-bucket/templates/efm-predict.json", "similarity_template": "gs://my-bucket/templates/efm-similarity.json",
        "change_template": "gs://my-bucket/templates/efm-change.json",
        "bbox": "5.9,45.8,6.2,46.0", "years": "2022,2023", "tuning": "ee_project=my-ee-project", "embeddings": "gs://my-bucket/efm/geneva.zarr",
        "points": "gs://my-bucket/efm/gedi.geojson", "samples": "gs://my-bucket/efm/gedi.parquet", "model": "gs://my-bucket/efm/agbd.skops",
        "prediction": "gs://my-bucket/efm/agbd.zarr", "reference_points": "gs://my-bucket/efm/refs.geojson",
        "similarity": "gs://my-bucket/efm/similarity.zarr", "change": "gs://my-bucket/efm/change.zarr",
        "temp_location": "gs://my-bucket/tmp", "sdk_container_image": "europe-west1-docker.pkg.dev/my-project/efm/efm-extract:1.0"}'
"""

from __future__ import annotations

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param
from efm_airflow import COMMON_PARAMS, DEFAULT_ARGS, MAP_PARAMS, flex_launch_body, train_command
from efm_flex_operator import EfmFlexTemplateOperator

TEMPLATE_STEPS = ("extract", "sample", "predict", "similarity", "change")


def flex_step(step: str) -> EfmFlexTemplateOperator:
    return EfmFlexTemplateOperator(
        task_id=step,
        project_id="{{ params.gcp_project }}",
        location="{{ params.region }}",
        body=f"{{{{ efm_flex_body('{step}', params) }}}}",
        # no wait_until_finished: left unset, the task waits for the batch job either way (polling, or
        # deferred to the triggerer); set to True it fails at import where default_deferrable=True.
    )


with DAG(
    dag_id="efm_regression_maps_flex",
    description="Satellite embeddings: extract -> sample -> train a regressor -> predict, and similarity and change, as Dataflow flex template jobs",
    schedule=None,
    default_args=DEFAULT_ARGS,  # execution_timeout from the task_timeout_hours param (efm_airflow)
    catchup=False,
    tags=["efm", "dataflow", "flex-template", "regression"],
    render_template_as_native_obj=True,  # the body macro returns a dict
    user_defined_macros={"efm_flex_body": flex_launch_body, "efm_train_command": train_command},
    params={
        **{
            f"{step}_template": Param(
                f"gs://my-bucket/templates/efm-{step}.json",
                type="string",
                description=f"Spec file of the {step} flex template (gcloud dataflow flex-template build)",
            )
            for step in TEMPLATE_STEPS
        },
        **COMMON_PARAMS,
        **MAP_PARAMS,
    },
    doc_md=__doc__,
) as dag:
    extract, sample, predict, similarity, change = (flex_step(step) for step in TEMPLATE_STEPS)
    train = BashOperator(task_id="train", bash_command="{{ efm_train_command(params) }}")

    extract >> sample >> train >> predict
    extract >> [similarity, change]
