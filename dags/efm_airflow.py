"""Shared by the example DAGs: the DAG parameters, and the flex template launch body built from them.

Only Airflow and the standard library are imported here: the DAGs parse in an Airflow environment
that has neither efm nor Beam's pipeline dependencies. The pipelines run in a Python of their
own, EFM_PYTHON (an interpreter with efm-pipelines installed; default `python3`).
"""

from __future__ import annotations

import os
import shlex
from datetime import timedelta

from airflow.sdk import Param

# The interpreter the Beam operator runs `python -m pipelines.<step>` with.
EFM_PYTHON = os.environ.get("EFM_PYTHON", "python3")

# Every task's execution_timeout, in hours, unless the run's `task_timeout_hours` param says otherwise.
# A Dataflow task lasts as long as its job (a country-sized extraction under Earth Engine's quotas
# takes hours): raise it for big runs. Without any timeout a task whose job never ends as the
# operator expects (a flex template job CANCELLED while the task is deferred) waits forever.
TASK_TIMEOUT_HOURS = 24


def apply_task_timeout(context) -> None:
    """pre_execute hook of every task (DEFAULT_ARGS): the run's `task_timeout_hours` param becomes the
    task's execution_timeout. Airflow reads execution_timeout after pre_execute, so the param counts."""
    hours = context["params"].get("task_timeout_hours", TASK_TIMEOUT_HOURS)
    context["task"].execution_timeout = timedelta(hours=float(hours))


# The default_args of every example DAG: the timeout at parse time (what the UI shows) and the hook
# that replaces it with the run's param.
DEFAULT_ARGS = {
    "execution_timeout": timedelta(hours=TASK_TIMEOUT_HOURS),
    "pre_execute": apply_task_timeout,
}

# The params both DAGs take (each DAG adds its own). Paths may be local (DirectRunner) or gs://.
COMMON_PARAMS = {
    # area and years (efm extract)
    "bbox": Param(
        "5.9,45.8,6.2,46.0",
        type="string",
        description="Area as W,S,E,N in degrees (efm extract --bbox)",
    ),
    "years": Param(
        "2022",
        type="string",
        description="Years, e.g. 2021,2022 or 2019-2024 (efm extract --years)",
    ),
    "crs": Param(
        None,
        type=["null", "string"],
        description="Target CRS, e.g. EPSG:32631 (default: the UTM zone of the area)",
    ),
    "dtype": Param("float32", enum=["float32", "int8"], description="Store dtype"),
    "source": Param(
        "ee",
        enum=["ee", "cog"],
        description="ee = Earth Engine; cog = the int8 COG mirror at cog_root",
    ),
    "cog_root": Param(
        None,
        type=["null", "string"],
        description="With source=cog: the mirror's root folder or gs:// path",
    ),
    "tuning": Param(
        None,
        type=["null", "string"],
        pattern=r"^[a-z_]+=[^,=\s]+(,[a-z_]+=[^,=\s]+)*$",
        description="Extraction knobs a run rarely needs, KEY=VALUE,... (efm extract --tuning; "
        "keys and defaults in docs/tuning.md: ee_project, chunk_size, scale, ...), "
        "e.g. ee_project=my-ee-project,chunk_size=512,max_retries=4",
    ),
    # the stores and the model
    "embeddings": Param(
        "gs://my-bucket/efm/embeddings.zarr",
        type="string",
        description="Embedding store extract writes and classify reads",
    ),
    "model": Param(
        "gs://my-bucket/efm/model.skops",
        type="string",
        description="Model from efm train / efm cluster (.skops, or a pickle with model_sha256)",
    ),
    "model_sha256": Param(
        None, type=["null", "string"], description="sha256 of a pickled model (efm train prints it)"
    ),
    "classes": Param(
        "gs://my-bucket/efm/classes.zarr",
        type="string",
        description="Class-map store classify writes",
    ),
    "confidence": Param(
        False, type="boolean", description="Also write the maximum class probability"
    ),
    "overwrite": Param(
        False,
        type="boolean",
        description="Replace existing outputs (else an existing output fails the task)",
    ),
    "yes": Param(
        False,
        type="boolean",
        description="Run an extraction past the size threshold (10^9 pixel-years, 1 TB or 100,000 chunks); "
        "without it such a run prints its plan in the task log and fails: read it, then trigger again with yes",
    ),
    # Google Cloud (Dataflow)
    "gcp_project": Param(
        None, type=["null", "string"], description="Project the Dataflow jobs run in"
    ),
    "region": Param("europe-west1", type="string", description="Dataflow region"),
    "temp_location": Param(
        None, type=["null", "string"], description="gs:// folder for Dataflow's temporary files"
    ),
    "staging_location": Param(
        None,
        type=["null", "string"],
        description="gs:// folder for Dataflow's staged files (default: temp_location)",
    ),
    "sdk_container_image": Param(
        None,
        type=["null", "string"],
        description="Worker image: the image built from templates/Dockerfile (holds efm and its pinned dependencies)",
    ),
    "service_account": Param(
        None,
        type=["null", "string"],
        description="Worker service account email (needs Earth Engine, Storage and Dataflow worker roles)",
    ),
    "max_workers": Param(
        None, type=["null", "integer"], minimum=1, description="Upper bound of Dataflow workers"
    ),
    "task_timeout_hours": Param(
        TASK_TIMEOUT_HOURS,
        type="number",
        exclusiveMinimum=0,
        description="Fail any task still running (or waiting on its Dataflow job) after this many hours "
        "(its execution_timeout; a deferred flex template task: counted from the launch)",
    ),
}

# The params of the regression and map DAGs (dags/efm_regression_maps_*.py), on top of COMMON_PARAMS
# (`model` is where train writes the regressor and predict reads it).
MAP_PARAMS = {
    "points": Param(
        "gs://my-bucket/efm/gedi.geojson",
        type="string",
        description="Points with the numeric target (efm sample --points), e.g. GEDI footprints",
    ),
    "keep_columns": Param(
        "agbd",
        type="string",
        description="Numeric columns of the points to keep in the table (efm sample --keep-columns)",
    ),
    "samples": Param(
        "gs://my-bucket/efm/gedi.parquet",
        type="string",
        description="Sample table sample writes and train reads (Parquet)",
    ),
    "target_column": Param(
        "agbd",
        type="string",
        description="Numeric column the regressor learns (efm train --regressor --label-column)",
    ),
    "regressor": Param(
        "knn",
        type="string",
        description="knn, random-forest, extra-trees, gradient-boosting, ridge, linear, svr or mlp (efm train --regressor)",
    ),
    "target_units": Param(
        None,
        type=["null", "string"],
        description="Units of the target, e.g. Mg/ha (efm train --tuning target_units=...)",
    ),
    "prediction": Param(
        "gs://my-bucket/efm/agbd.zarr", type="string", description="Prediction store predict writes"
    ),
    "reference_points": Param(
        "gs://my-bucket/efm/refs.geojson",
        type="string",
        description="Reference points of similarity (efm similarity --points)",
    ),
    "reference_label": Param(
        None,
        type=["null", "string"],
        description="COLUMN=VALUE: use only the reference points whose COLUMN holds VALUE, e.g. "
        "kind=forest (efm similarity --label)",
    ),
    "reference_year": Param(
        None,
        type=["null", "integer"],
        description="Take the reference from this year for every year (default: each year its own)",
    ),
    "similarity": Param(
        "gs://my-bucket/efm/similarity.zarr",
        type="string",
        description="Similarity store similarity writes",
    ),
    "similarity_threshold": Param(
        None,
        type=["null", "number"],
        minimum=-1,
        maximum=1,
        description="Also write `similar` where similarity >= this",
    ),
    "change_years": Param(
        "2022,2023",
        type="string",
        pattern=r"^[0-9]{4},[0-9]{4}$",
        description="Change: the two years FROM,TO, the earlier first (efm change --years)",
    ),
    "change": Param(
        "gs://my-bucket/efm/change.zarr", type="string", description="Change store change writes"
    ),
    "change_threshold": Param(
        None,
        type=["null", "number"],
        minimum=-1,
        maximum=1,
        description="Also write `changed` where similarity < this",
    ),
}

# Each step's inputs, by the name of its flex template parameter (templates/<pipeline>/metadata.json)
# -> the DAG param that feeds it. The efm flag is the same name with dashes (cog_root -> --cog-root).
STEP_PARAMETERS = {
    "extract": {
        "bbox": "bbox",
        "years": "years",
        "crs": "crs",
        "dtype": "dtype",
        "source": "source",
        "cog_root": "cog_root",
        "tuning": "tuning",
        "output": "embeddings",
        "overwrite": "overwrite",
        "yes": "yes",
    },
    "classify": {
        "embeddings": "embeddings",
        "model": "model",
        "model_sha256": "model_sha256",
        "output": "classes",
        "confidence": "confidence",
        "overwrite": "overwrite",
    },
    # the regression and map DAGs
    "sample": {
        "embeddings": "embeddings",
        "points": "points",
        "keep_columns": "keep_columns",
        "output": "samples",
        "overwrite": "overwrite",
    },
    "predict": {
        "embeddings": "embeddings",
        "model": "model",
        "model_sha256": "model_sha256",
        "output": "prediction",
        "overwrite": "overwrite",
    },
    "similarity": {
        "embeddings": "embeddings",
        "points": "reference_points",
        "label": "reference_label",
        "reference_year": "reference_year",
        "threshold": "similarity_threshold",
        "output": "similarity",
        "overwrite": "overwrite",
    },
    "change": {
        "embeddings": "embeddings",
        "years": "change_years",
        "threshold": "change_threshold",
        "output": "change",
        "overwrite": "overwrite",
    },
}


def train_command(params: dict) -> str:
    """`efm train` of a regressor as one shell command (train is one process, not a Beam pipeline: it runs on
    the Airflow worker with EFM_PYTHON, in both DAGs). Every value is shell-quoted: params are user input."""
    argv = [
        EFM_PYTHON,
        "-m",
        "pipelines.train",
        "--samples",
        str(params["samples"]),
        "--regressor",
        str(params["regressor"]),
        "--label-column",
        str(params["target_column"]),
        "--output",
        str(params["model"]),
    ]
    if params.get("target_units"):
        argv += ["--tuning", f"target_units={params['target_units']}"]
    if params.get("overwrite") is True:
        argv.append("--overwrite")
    return shlex.join(argv)


def _text(value) -> str | None:
    """A DAG param as a template parameter value: strings only; None/False = not passed."""
    if value is None or value is False or value == "":
        return None
    if value is True:
        return "true"
    return str(value)


def beam_pipeline_options(pipeline: str, params: dict) -> dict:
    """`pipeline_options` of BeamRunPythonPipelineOperator for `python -m pipelines.<pipeline>`.

    Built in Python, not with one Jinja expression per option: with render_template_as_native_obj
    a value such as "5.9,45.8,6.2,46.0" or "2021,2022" would come back as a tuple. Here strings stay
    strings, None/False drop the flag and True makes it a bare switch (--overwrite). On Dataflow the
    worker options are added; the operator adds --project, --region and --job_name from dataflow_config.
    The service account goes in as --service_account_email here, not through dataflow_config: the
    Beam provider before 6.3.0 passes dataflow_config["service_account"] as --serviceAccount, which
    Beam Python (and efm) do not know (apache/airflow#73236).
    """
    options: dict = {}
    for name, param in STEP_PARAMETERS[pipeline].items():
        value = params.get(param)
        if value is None or value is False or value == "":
            continue
        options[name.replace("_", "-")] = True if value is True else str(value)
    if params.get("runner") == "DataflowRunner":
        dataflow = {
            "temp_location": params.get("temp_location"),
            "staging_location": params.get("staging_location") or params.get("temp_location"),
            "sdk_container_image": params.get("sdk_container_image"),
            "service_account_email": params.get("service_account"),
            "max_num_workers": params.get("max_workers"),
        }
        options.update({k: v for k, v in dataflow.items() if v is not None})
    return options


def flex_launch_body(pipeline: str, params: dict, job_name: str | None = None) -> dict:
    """The `body` of DataflowStartFlexTemplateOperator (Dataflow's LaunchFlexTemplateParameter) for one template."""
    parameters = {
        name: _text(params.get(param)) for name, param in STEP_PARAMETERS[pipeline].items()
    }
    environment = {
        "tempLocation": params.get("temp_location"),
        "stagingLocation": params.get("staging_location")
        or params.get("temp_location"),  # else Dataflow picks a default bucket
        "sdkContainerImage": params.get("sdk_container_image"),
        "serviceAccountEmail": params.get("service_account"),
        "maxWorkers": params.get("max_workers"),
    }
    return {
        "launchParameter": {
            "jobName": job_name or f"efm-{pipeline}",
            "containerSpecGcsPath": params[f"{pipeline}_template"],
            "parameters": {k: v for k, v in parameters.items() if v is not None},
            "environment": {k: v for k, v in environment.items() if v is not None},
        }
    }
