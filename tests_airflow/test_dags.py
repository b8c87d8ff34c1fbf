"""The example DAGs under real Airflow 3: the folder imports cleanly; DAG (a) runs end to end with
dag.test() on DirectRunner, offline, producing a class map; DAG (b) sends Dataflow exactly the
parameters the flex templates declare.

End to end on the offline sample data (efm make-sample-data: a local copy of the int8 COG
mirror) with `source=cog`, rather than on the Earth Engine emulator: no extra server process to
keep alive across Airflow's task runner, and the same data and code path as `make demo`. The
Earth Engine path of the same entry points is covered under tests/ (test_templates.py,
test_gcs_end_to_end.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.airflow_dags import DAG_IDS, DAGS, REPO, dag_bag


def run_efm(efm_python: str, *argv: str) -> str:
    proc = subprocess.run(
        [efm_python, "-m", *argv], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert proc.returncode == 0, (
        f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    )
    return proc.stdout


def test_dag_folder_imports_without_errors():
    bag = dag_bag()
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == DAG_IDS
    beam, flex = bag.get_dag("efm_extract_classify_beam"), bag.get_dag("efm_extract_classify_flex")
    for dag in (beam, flex):
        assert [t.task_id for t in dag.topological_sort()] == ["extract", "classify"]
        assert dag.params["overwrite"] is False
    for dag_id in ("efm_regression_maps_beam", "efm_regression_maps_flex"):
        dag = bag.get_dag(dag_id)
        upstream = {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}
        assert upstream == {
            "extract": [],
            "sample": ["extract"],
            "train": ["sample"],
            "predict": ["train"],
            "similarity": ["extract"],
            "change": ["extract"],
        }, dag_id  # similarity and change beside the regression branch
        assert (
            dag.params["overwrite"] is False
            and type(dag.get_task("train")).__name__ == "BashOperator"
        )
    maps_beam, maps_flex = (
        bag.get_dag("efm_regression_maps_beam"),
        bag.get_dag("efm_regression_maps_flex"),
    )
    assert {type(t).__name__ for t in maps_beam.tasks if t.task_id != "train"} == {
        "BeamRunPythonPipelineOperator"
    }
    from airflow.providers.google.cloud.operators.dataflow import (
        DataflowStartFlexTemplateOperator,
    )

    # EfmFlexTemplateOperator: the provider's operator, its deferral bounded by the task's timeout
    assert {type(t).__name__ for t in maps_flex.tasks if t.task_id != "train"} == {
        "EfmFlexTemplateOperator"
    }
    assert {type(t).__name__ for t in beam.tasks} == {"BeamRunPythonPipelineOperator"}
    assert {type(t).__name__ for t in flex.tasks} == {"EfmFlexTemplateOperator"}
    assert all(
        isinstance(t, DataflowStartFlexTemplateOperator)
        for dag in (flex, maps_flex)
        for t in dag.tasks
        if t.task_id != "train"
    )
    assert beam.params.get_param("runner").schema["enum"] == ["DirectRunner", "DataflowRunner"]


def metadata(pipeline: str) -> dict[str, dict]:
    return {
        p["name"]: p
        for p in json.loads((REPO / "templates" / pipeline / "metadata.json").read_text())[
            "parameters"
        ]
    }


def test_flex_dags_send_the_parameters_the_templates_declare():
    for dag_id in ("efm_extract_classify_flex", "efm_regression_maps_flex"):
        sent = check_flex_dag(dag_id)
    assert "model_sha256" not in sent and sent["overwrite"] == "true"


def check_flex_dag(dag_id: str) -> dict:
    """Every flex task's launch request, rendered from the DAG's params, against Dataflow's schema and the template's metadata."""
    from google.cloud.dataflow_v1beta3.types import LaunchFlexTemplateParameter

    dag = dag_bag().get_dag(dag_id)
    params = {
        **{k: dag.params[k] for k in dag.params.keys()},
        "gcp_project": "my-project",
        "tuning": "ee_project=my-ee-project,chunk_size=512",
        "crs": "EPSG:32631",
        "overwrite": True,
        "confidence": True,
        "model_sha256": None,
        "temp_location": "gs://my-bucket/tmp",
        "sdk_container_image": "europe-west1-docker.pkg.dev/my-project/efm/efm-extract:1",
        "reference_year": 2022,
        "similarity_threshold": 0.7,
        "change_threshold": -0.25,
        "reference_label": "kind=forest",
    }
    env = dag.get_template_env()
    for task in dag.tasks:
        if (
            task.task_id == "train"
        ):  # not a template: a BashOperator (see test_map_dags_train_command)
            continue
        body = task.render_template(task.body, {"params": params}, jinja_env=env)
        assert isinstance(body, dict)
        LaunchFlexTemplateParameter.from_json(
            json.dumps(body["launchParameter"])
        )  # Dataflow's schema, strictly
        launch = body["launchParameter"]
        assert launch["containerSpecGcsPath"] == params[f"{task.task_id}_template"]
        assert launch["environment"]["sdkContainerImage"] == params["sdk_container_image"]
        assert (
            launch["environment"]["stagingLocation"] == params["temp_location"]
        )  # not a bucket Dataflow picks
        declared = metadata(task.task_id)
        sent = launch["parameters"]
        assert set(sent) <= set(declared), (
            f"{task.task_id}: not in metadata.json: {set(sent) - set(declared)}"
        )
        assert {n for n, p in declared.items() if not p["isOptional"]} <= set(sent)
        for name, value in sent.items():
            assert isinstance(value, str)
            for pattern in declared[name]["regexes"]:
                assert re.fullmatch(pattern, value), (
                    f"{task.task_id}.{name}={value!r} fails {pattern}"
                )
        if task.task_id == "classify":
            assert sent["confidence"] == "true"
        if task.task_id == "change":
            assert sent["threshold"] == "-0.25" and sent["years"] == "2022,2023"
        if task.task_id == "similarity":
            assert (
                sent["reference_year"] == "2022"
                and sent["label"] == "kind=forest"
                and sent["points"] == params["reference_points"]
            )
    return sent


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory, efm_python):
    """Offline sample data (efm make-sample-data --size small): the COG mirror, labelled, GEDI-like and reference points."""
    root = tmp_path_factory.mktemp("efm")
    data = root / "sample-data"
    run_efm(efm_python, "pipelines.make_sample_data", "--output", str(data), "--size", "small")
    manifest = json.loads((data / "sample_data.json").read_text())
    return {
        "root": root,
        "mirror": str(data / "mirror"),
        "points": str(data / "labels.geojson"),
        "gedi": str(data / "gedi.geojson"),
        "refs": str(data / "refs.geojson"),
        "bbox": ",".join(repr(v) for v in manifest["bbox"]),
        "crs": manifest["crs"],
        "years": ",".join(str(y) for y in manifest["spec"]["years"]),
    }


@pytest.fixture(scope="module")
def sample_world(sample_data, efm_python):
    """The sample data, and a model trained on it beforehand (what a user brings to the DAG)."""
    world = dict(sample_data)
    root = world["root"]
    training = root / "training.zarr"
    run_efm(
        efm_python,
        "pipelines.extract",
        "--source",
        "cog",
        "--cog-root",
        world["mirror"],
        f"--bbox={world['bbox']}",
        "--crs",
        world["crs"],
        "--years",
        world["years"],
        "--output",
        str(training),
        "--tuning",
        "chunk_size=128",
        "--dtype",
        "int8",
        "--runner=FnApiRunner",
    )
    run_efm(
        efm_python,
        "pipelines.sample",
        "--embeddings",
        str(training),
        "--points",
        world["points"],
        "--label-column",
        "label",
        "--output",
        str(root / "samples.parquet"),
        "--runner=FnApiRunner",
    )
    run_efm(
        efm_python,
        "pipelines.train",
        "--samples",
        str(root / "samples.parquet"),
        "--classifier",
        "knn",
        "--output",
        str(root / "model.skops"),
    )
    world.update(root=root, model=str(root / "model.skops"))
    return world


def test_beam_dag_runs_extract_then_classify_on_direct_runner(sample_world, efm_python):
    from airflow.utils.state import DagRunState

    world = sample_world
    embeddings, classes = world["root"] / "dag-embeddings.zarr", world["root"] / "dag-classes.zarr"
    dag = dag_bag().get_dag("efm_extract_classify_beam")
    run = dag.test(
        run_conf={
            "runner": "DirectRunner",
            "source": "cog",
            "cog_root": world["mirror"],
            "bbox": world["bbox"],
            "crs": world["crs"],
            "years": world["years"],
            "tuning": "chunk_size=128",
            "dtype": "int8",
            "embeddings": str(embeddings),
            "model": world["model"],
            "classes": str(classes),
            "confidence": True,
        }
    )
    assert run.state == DagRunState.SUCCESS, f"DAG run {run.state}"
    assert embeddings.is_dir() and classes.is_dir()
    # The class map, read by the project's own stack (the Airflow environment has no xarray).
    summary = json.loads(
        subprocess.run(
            [
                efm_python,
                "-c",
                (
                    "import json, sys, numpy as np, xarray as xr\n"
                    f"ds = xr.open_zarr({str(classes)!r}, consolidated=True, mask_and_scale=False)\n"
                    f"model = json.load(open({world['model'] + '.json'!r}))\n"
                    "values = np.asarray(ds['class'].values); fill = int(ds['class'].attrs.get('fill_value', 255))\n"
                    "print(json.dumps({'status': ds.attrs['efm_status'], 'labels': [str(v) for v in ds['class'].attrs['class_labels']],\n"
                    "  'model_classes': [str(v) for v in model['classes']], 'classified': float((values != fill).mean()),\n"
                    "  'distinct': int(len(np.unique(values[values != fill]))), 'confidence': 'confidence' in ds, 'years': ds.sizes['time']}))\n"
                ),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout
    )
    assert summary["status"] == "complete" and summary["confidence"]
    assert summary["labels"] == summary["model_classes"] and summary["distinct"] >= 3
    assert summary["classified"] > 0.5 and summary["years"] == len(world["years"].split(","))


def test_beam_dag_fails_the_task_on_bad_input(sample_world):
    """Bad input fails at launch: efm's one-line error is in the task log and the run fails (no retry storm)."""
    from airflow.utils.state import DagRunState

    world = sample_world
    dag = dag_bag().get_dag("efm_extract_classify_beam")
    run = dag.test(
        run_conf={
            "runner": "DirectRunner",
            "source": "cog",
            "cog_root": world["mirror"],
            "bbox": world["bbox"],
            "crs": world["crs"],
            "years": "2016",
            "embeddings": str(world["root"] / "bad.zarr"),
            "model": world["model"],
            "classes": str(world["root"] / "bad-classes.zarr"),
        }
    )
    assert run.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["extract"] == "failed" and states["classify"] in ("upstream_failed", None)
    assert not Path(world["root"] / "bad.zarr").exists()


def test_both_dags_feed_every_step_the_flags_the_templates_declare():
    """DAG (a) passes `--<name with dashes>` and DAG (b) template parameter `<name>` for the same
    STEP_PARAMETERS, whose names tests/test_templates.py ties to the pipelines' flags."""
    import efm_airflow

    for pipeline, mapping in efm_airflow.STEP_PARAMETERS.items():
        declared = metadata(pipeline)
        assert set(mapping) <= set(declared)
        assert {n for n, p in declared.items() if not p["isOptional"]} <= set(mapping)
    options = efm_airflow.beam_pipeline_options(
        "extract",
        {
            "runner": "DataflowRunner",
            "bbox": "5.9,45.8,6.2,46.0",
            "years": "2021,2022",
            "embeddings": "gs://b/e.zarr",
            "tuning": "chunk_size=512",
            "overwrite": True,
            "crs": None,
            "temp_location": "gs://b/tmp",
            "sdk_container_image": "img:1",
            "max_workers": None,
        },
    )
    assert options == {
        "bbox": "5.9,45.8,6.2,46.0",
        "years": "2021,2022",
        "output": "gs://b/e.zarr",
        "tuning": "chunk_size=512",
        "overwrite": True,
        "temp_location": "gs://b/tmp",
        "staging_location": "gs://b/tmp",
        "sdk_container_image": "img:1",
    }
    assert "temp_location" not in efm_airflow.beam_pipeline_options(
        "classify", {"runner": "DirectRunner", "temp_location": "gs://b/tmp"}
    )


def test_dag_folder_imports_with_deferrable_operators_by_default():
    """Deployments (Cloud Composer among them) may set [operators] default_deferrable = True: then
    DataflowStartFlexTemplateOperator(wait_until_finished=True) raises at import. Read at import, so
    the DAG folder is parsed in a process of its own with that setting."""
    code = (
        "import json, sys\n"
        f"sys.path.append({str(DAGS)!r})\n"
        "from airflow.dag_processing.dagbag import BundleDagBag\n"
        f"bag = BundleDagBag(dag_folder={str(DAGS)!r}, bundle_path={str(DAGS)!r})\n"
        "print(json.dumps({'errors': {k: str(v)[-300:] for k, v in bag.import_errors.items()}, 'dags': sorted(bag.dag_ids),\n"
        "  'deferrable': sorted({t.task_id + ':' + str(getattr(t, 'deferrable', None)) for d in bag.dags.values() for t in d.tasks})}))\n"
    )
    env = dict(os.environ, AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE="True")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {} and set(result["dags"]) == DAG_IDS
    assert "extract:True" in result["deferrable"]  # the setting took effect


def test_beam_dag_passes_the_service_account_as_beam_python_reads_it():
    """--service_account_email (what Beam Python reads), not dataflow_config["service_account"]: the Beam
    provider before 6.3.0 turns that into --serviceAccount, which efm refuses (apache/airflow#73236)."""
    import efm_airflow

    dag = dag_bag().get_dag("efm_extract_classify_beam")
    for task in dag.tasks:
        assert "service_account" not in task.dataflow_config
    options = efm_airflow.beam_pipeline_options(
        "classify",
        {
            "runner": "DataflowRunner",
            "embeddings": "gs://b/e.zarr",
            "model": "gs://b/m.skops",
            "classes": "gs://b/c.zarr",
            "service_account": "sa@p.iam.gserviceaccount.com",
        },
    )
    assert options["service_account_email"] == "sa@p.iam.gserviceaccount.com"


def test_the_dags_pass_yes_to_extract():
    """A large extraction runs only with yes=true (efm extract --yes / template parameter yes); default false."""
    import efm_airflow

    assert efm_airflow.COMMON_PARAMS["yes"].value is False and metadata("extract")["yes"][
        "regexes"
    ] == ["^(true|false)$"]
    params = {
        "bbox": "5.9,45.8,6.2,46.0",
        "years": "2021",
        "embeddings": "gs://b/e.zarr",
        "extract_template": "gs://b/t.json",
        "yes": True,
    }
    assert efm_airflow.beam_pipeline_options("extract", params)["yes"] is True  # a bare --yes
    assert (
        efm_airflow.flex_launch_body("extract", params)["launchParameter"]["parameters"]["yes"]
        == "true"
    )
    assert "yes" not in efm_airflow.beam_pipeline_options("extract", {**params, "yes": False})
    assert (
        "yes" not in efm_airflow.STEP_PARAMETERS["classify"]
    )  # classify has no size gate (README, "Plan and size")


def test_map_dags_train_command_quotes_every_value():
    """train runs as one shell command built from the params: values are quoted (they are user input), switches bare."""
    import shlex

    import efm_airflow

    params = {
        "samples": "gs://b/s.parquet",
        "target_column": "agbd; rm -rf /",
        "regressor": "knn",
        "model": "/data/my model.skops",
        "target_units": "Mg/ha",
        "overwrite": True,
    }
    argv = shlex.split(efm_airflow.train_command(params))
    assert argv == [
        efm_airflow.EFM_PYTHON,
        "-m",
        "pipelines.train",
        "--samples",
        "gs://b/s.parquet",
        "--regressor",
        "knn",
        "--label-column",
        "agbd; rm -rf /",
        "--output",
        "/data/my model.skops",
        "--tuning",
        "target_units=Mg/ha",
        "--overwrite",
    ]
    assert "--overwrite" not in efm_airflow.train_command({**params, "overwrite": False})
    dag = dag_bag().get_dag("efm_regression_maps_beam")
    task = dag.get_task("train")
    rendered = task.render_template(
        task.bash_command,
        {"params": {**{k: dag.params[k] for k in dag.params.keys()}}},
        jinja_env=dag.get_template_env(),
    )
    assert shlex.split(rendered)[2:] == [
        "pipelines.train",
        "--samples",
        dag.params["samples"],
        "--regressor",
        "knn",
        "--label-column",
        "agbd",
        "--output",
        dag.params["model"],
    ]


def test_regression_maps_dag_runs_end_to_end_on_direct_runner(sample_data, efm_python):
    """DAG (c) with dag.test() on DirectRunner on the offline sample data: extract -> sample (--keep-columns agbd) ->
    train (knn regressor) -> predict, and similarity and change. Each store equals a reference computed on the
    whole embedding array by tests_airflow/map_reference.py (skops + numpy, in EFM_PYTHON, not efm's code)."""
    from airflow.utils.state import DagRunState

    world, root = sample_data, sample_data["root"] / "maps"
    paths = {
        name: str(root / name)
        for name in (
            "embeddings.zarr",
            "gedi.parquet",
            "agbd.skops",
            "agbd.zarr",
            "similarity.zarr",
            "change.zarr",
        )
    }
    first, last = (int(y) for y in world["years"].split(","))
    threshold = 0.8
    dag = dag_bag().get_dag("efm_regression_maps_beam")
    run = dag.test(
        run_conf={
            "runner": "DirectRunner",
            "source": "cog",
            "cog_root": world["mirror"],
            "bbox": world["bbox"],
            "crs": world["crs"],
            "years": world["years"],
            "tuning": "chunk_size=128",
            "embeddings": paths["embeddings.zarr"],
            "points": world["gedi"],
            "keep_columns": "agbd",
            "samples": paths["gedi.parquet"],
            "target_column": "agbd",
            "regressor": "knn",
            "target_units": "Mg/ha",
            "model": paths["agbd.skops"],
            "prediction": paths["agbd.zarr"],
            "reference_points": world["refs"],
            "similarity": paths["similarity.zarr"],
            "change_years": f"{first},{last}",
            "change_threshold": threshold,
            "change": paths["change.zarr"],
        }
    )
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.SUCCESS, f"DAG run {run.state}: {states}"
    assert set(states.values()) == {"success"} and len(states) == 6
    spec = {
        "embeddings": paths["embeddings.zarr"],
        "model": paths["agbd.skops"],
        "prediction": paths["agbd.zarr"],
        "similarity": paths["similarity.zarr"],
        "change": paths["change.zarr"],
        "refs": world["refs"],
        "threshold": threshold,
    }
    proc = subprocess.run(
        [efm_python, str(REPO / "tests_airflow" / "map_reference.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == ["complete"] * 3 and result["pixels"] > 0
    # float32 maps of float64 computations: predictions of ~10-400 Mg/ha within float32 rounding, dot products within 1e-5
    assert result["prediction"] <= 1e-6 * result["prediction_range"][1] + 1e-4, result
    assert result["prediction_attrs"] == {"target": "agbd", "units": "Mg/ha"}
    assert result["similarity"] <= 1e-5 and min(result["reference_pixels"]) > 0, result
    assert result["change"] <= 1e-5 and result["mask_equal"] and 0 < result["changed_share"] < 1, (
        result
    )
