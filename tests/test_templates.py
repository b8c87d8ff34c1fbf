"""Dataflow flex templates (templates/): metadata, launcher, Dockerfile, and launches against the emulators.

* metadata.json files parse as Dataflow's TemplateMetadata (the real google-cloud-dataflow-client
  message), every parameter is a flag of the pipeline, every flag (required ones above all) is a
  parameter, and the regexes accept the documented examples and reject bad values;
* the entry files run exactly as the flex template launcher runs them — `python <main.py>
  --<param>=<value> ... <Beam options>` in a process of its own, with FLEX_TEMPLATE_* set as in the
  image — once on DirectRunner (extract -> sample -> classify, Earth Engine emulator -> GCS emulator),
  and once on DataflowRunner writing the job to --template_location (what the launcher does: no
  Google Cloud needed), which also stages setup.py as --setup_file with Beam's own stager;
* bad input (a parameter failing its regex, a missing bucket, credentials that cannot reach
  Earth Engine) fails in the launcher with one clear line, before any job exists;
* the Dockerfile installs with constraints.txt (the tested versions, inside setup.py's ranges) and
  points the launcher at files that exist.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.ee_scene import CRS, SEED, area_bbox, labelled_points_csv, map_accuracy
from tests.helpers.local_servers import FAKE_TOKEN

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
sys.path.insert(0, str(TEMPLATES))
import flex_launcher  # noqa: E402

PIPELINES = ("extract", "classify", "sample", "predict", "similarity", "change")
MAP_PIPELINES = (
    "predict",
    "similarity",
    "change",
)  # launched on a two-year store_factory store (change needs two years)
SDK_IMAGE = "europe-west1-docker.pkg.dev/my-project/efm/efm-extract:test"
# Flags deliberately left out: --verbose is for a terminal; on Dataflow the traces are in the job's logs.
NOT_IN_TEMPLATE: dict[str, set[str]] = {p: {"--verbose"} for p in PIPELINES}
# A dry run submits no job (the launch would fail for want of one): plan with `efm extract --dry-run` before launching.
NOT_IN_TEMPLATE["extract"] |= {"--dry-run", "--dry_run"}
# one option, three spellings: the template names the root per source (cog_root: gs:// only;
# zarr_root: gs://, s3://, https://), each a spelling of --source-root with its own check
NOT_IN_TEMPLATE["extract"] |= {"--source-root"}
for _p in ("classify", "predict", "similarity", "change"):  # their plan (pipelines/fanout.py)
    NOT_IN_TEMPLATE[_p] |= {"--dry-run"}


def parser_of(pipeline: str) -> argparse.ArgumentParser:
    import importlib

    return importlib.import_module(f"pipelines.{pipeline}").build_parser()


def example_of(param: dict) -> str:
    assert "Example: " in param["helpText"], (
        f"{param['name']}: helpText must end with 'Example: <value>'"
    )
    return param["helpText"].rpartition("Example: ")[2]


# ---------------------------------------------------------------------------------------------
# metadata.json <-> the pipelines' flags


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_metadata_is_dataflow_template_metadata(pipeline):
    from google.cloud.dataflow_v1beta3.types import ParameterType, TemplateMetadata

    text = (TEMPLATES / pipeline / "metadata.json").read_text()
    parsed = TemplateMetadata.from_json(text)  # raises on any field Dataflow's schema doesn't have
    raw = json.loads(text)
    assert parsed.name and parsed.description and parsed.parameters
    names = [p["name"] for p in raw["parameters"]]
    assert len(names) == len(set(names))
    for param in raw["parameters"]:
        assert set(param) >= {"name", "label", "helpText", "isOptional", "regexes", "paramType"}, (
            param["name"]
        )
        assert re.fullmatch(r"[a-z][a-z0-9_]*", param["name"]), (
            f"{param['name']}: Dataflow-style parameter names (underscores)"
        )
        assert param["paramType"] in ParameterType.__members__ and param["regexes"]
        for pattern in param["regexes"]:
            assert pattern.startswith("^") and pattern.endswith("$")
            re.compile(pattern)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_parameter_is_a_flag_and_every_flag_a_parameter(pipeline):
    parser = parser_of(pipeline)
    actions = flex_launcher.flag_actions(parser)
    params = flex_launcher.parameters(pipeline)
    for name, param in params.items():
        flag = flex_launcher.flag_for(name, actions)
        assert flag is not None, (
            f"templates/{pipeline}/metadata.json: {name} is not a flag of efm {pipeline}"
        )
        action = actions[flag]
        # a required option with several spellings (--bbox = --aoi) may have a parameter per
        # spelling, each optional: the launcher passes the one given, argparse requires one
        spellings = [s for s in action.option_strings if s.startswith("--")]
        required = action.required and len(spellings) == 1
        assert param["isOptional"] == (not required), (
            f"{name}: isOptional must be {not required} (the flag's required)"
        )
        if isinstance(action, argparse._StoreTrueAction):
            assert param["regexes"] == ["^(true|false)$"], (
                f"{name} is a switch: its values are true/false"
            )
    covered = {flex_launcher.flag_for(name, actions) for name in params}
    for flag, action in actions.items():
        if flag in NOT_IN_TEMPLATE[pipeline] or (set(action.option_strings) & covered):
            continue
        assert flag in covered, (
            f"efm {pipeline} {flag} has no parameter in templates/{pipeline}/metadata.json: add one "
            f"(name {flag[2:].replace('-', '_')!r}) or list it in NOT_IN_TEMPLATE"
        )
    for group in parser._mutually_exclusive_groups:  # e.g. --bbox | --aoi, one of them required
        if group.required:
            assert all(a.option_strings[0] in covered for a in group._group_actions)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_regexes_accept_the_documented_examples_and_every_choice(pipeline):
    actions = flex_launcher.flag_actions(parser_of(pipeline))
    for name, param in flex_launcher.parameters(pipeline).items():
        example = example_of(param)
        flex_launcher.check_value(param, example)
        action = actions[flex_launcher.flag_for(name, actions)]
        if action.type is not None:
            action.type(example)  # the example is also valid for the flag itself
        for choice in action.choices or []:
            flex_launcher.check_value(param, choice)
        if action.choices:
            assert example in action.choices


GCS_BAD = [
    "/local/path/store.zarr",
    "gs://",
    "gs://bucket",
    "gs://Bucket/upper.zarr",
    "s3://bucket/x.zarr",
    "gs://b/x",
    "gs://bucket/a\nb",
]
BAD_VALUES = {
    "bbox": ["5.9,45.8,6.2", "a,b,c,d", "5.9;45.8;6.2;46.0", "5.9, 45.8, 6.2, 46.0 ", ""],
    "aoi": GCS_BAD,
    "polygons": GCS_BAD,
    "id_column": ["1abc", "a;b", "", "x" * 65],
    "all_touched": ["yes", "True", "1", ""],
    "skip_invalid": ["yes", "True", "1", ""],
    "cog_root": GCS_BAD,
    "zarr_root": ["/local/store.zarr", "s3://", "gs://bucket", "http://host/x.zarr", "s3://b/a b"],
    "output": GCS_BAD,
    "embeddings": GCS_BAD,
    "points": GCS_BAD,
    "years": ["21", "2021;2022", "2021-", "last year", "2021,,2022"],
    "add_years": ["21", "2025;2026", "2025-", "next year", "2025,,2026"],
    "source": ["gee", "EE", ""],
    "dtype": ["int16", "float"],
    "crs": ["32631", "EPSG:", "+proj=utm +zone=31", "EPSG:32631 "],
    "tuning": ["max_retries", "max_retries=", "=3", "max_retries=3,", "max retries=3", "@t.toml"],
    "resume": ["yes", "True", "1", ""],
    "repair": ["yes", "True", "1", ""],
    "overwrite": ["no", "FALSE"],
    "yes": ["yes", "y", "TRUE"],
    "trust_pickle": ["yes"],
    "confidence": ["on"],
    "model": GCS_BAD + ["gs://bucket/model.txt", "/local/model.skops"],
    "model_sha256": [
        "abc",
        "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
        "sha256:9f86",
    ],
    "label_column": ["", "a\nb"],
    "points_crs": ["4326", "WGS84"],
    "keep_columns": ["", "agbd,,height", ",agbd", "agbd,", "a\nb"],
    "label": ["", "forest\n", "forest", "=forest", "kind="],
    "reference_year": ["22", "2022,2023", "2022-2023", "twenty"],
    "threshold": ["1.5", "-2", "0.8.1", "high", "", "1e-1", "0,8"],
}
BAD_BY_PIPELINE = {
    "sample": {"output": GCS_BAD + ["gs://bucket/samples.csv", "gs://bucket/samples.parquet.tmp"]},
    # exactly two years FROM,TO (efm change --years)
    "change": {"years": ["2022", "22,2023", "2021-2022", "2021,2022,2023", "2021;2022", ""]},
}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_regexes_reject_bad_values(pipeline):
    for name, param in flex_launcher.parameters(pipeline).items():
        bad = BAD_BY_PIPELINE.get(pipeline, {}).get(name, BAD_VALUES.get(name))
        assert bad, f"{pipeline}.{name}: add bad values for it to BAD_VALUES"
        for value in bad:
            with pytest.raises(flex_launcher.TemplateParameterError, match=rf"^{name}: "):
                flex_launcher.check_value(param, value)


def test_launcher_translates_template_parameters_to_efm_flags():
    argv = [
        "--bbox=5.9,45.8,6.2,46.0",
        "--years=2021",
        "--output=gs://my-bucket/a.zarr",
        "--tuning=chunk_size=512,ee_project=my-ee-project",
        "--cog_root",
        "gs://my-bucket/aef",
        "--overwrite=true",
        "--resume=false",
        "--crs=",
        "--runner=DataflowRunner",
        "--temp_location=gs://my-bucket/tmp",
        "--sdk_container_image=" + SDK_IMAGE,
    ]
    assert flex_launcher.to_pipeline_args("extract", argv) == [
        "--bbox=5.9,45.8,6.2,46.0",
        "--years=2021",
        "--output=gs://my-bucket/a.zarr",
        "--tuning=chunk_size=512,ee_project=my-ee-project",
        "--cog-root=gs://my-bucket/aef",
        "--overwrite",  # resume=false and the blank crs are dropped
        "--runner=DataflowRunner",
        "--temp_location=gs://my-bucket/tmp",
        "--sdk_container_image=" + SDK_IMAGE,
    ]
    assert flex_launcher.to_pipeline_args(
        "classify", ["--model_sha256=" + "a" * 64, "--trust_pickle=false", "--confidence=true"]
    ) == ["--model-sha256=" + "a" * 64, "--confidence"]
    with pytest.raises(
        flex_launcher.TemplateParameterError,
        match=r"^crs: '32631' is not a valid target crs \(must match",
    ):
        flex_launcher.to_pipeline_args("extract", ["--crs=32631"])
    # a knob that was a parameter of its own: where it went
    for name, value in [("chunk_size", "512"), ("ee_project", "my-ee-project")]:
        with pytest.raises(
            flex_launcher.TemplateParameterError,
            match=rf"^{name}: moved into the tuning parameter: pass --tuning={name}={value} ",
        ):
            flex_launcher.to_pipeline_args("extract", [f"--{name}={value}"])
    with pytest.raises(flex_launcher.TemplateParameterError, match="^output: a value is required"):
        flex_launcher.to_pipeline_args("extract", ["--output="])


def test_switches_take_the_bare_form_and_true_false_in_any_case():
    base = ["--bbox=5.9,45.8,6.2,46.0", "--years=2021", "--output=gs://my-bucket/a.zarr"]
    for given, expected in [
        (["--overwrite"], ["--overwrite"]),
        (["--overwrite=TRUE"], ["--overwrite"]),
        (["--overwrite=True"], ["--overwrite"]),
        (["--overwrite=false"], []),
        (["--overwrite=FALSE"], []),
        (["--overwrite", "true"], ["--overwrite"]),
        (["--overwrite", "False"], []),
    ]:
        assert flex_launcher.to_pipeline_args(
            "extract", base + given + ["--runner=DataflowRunner"]
        ) == base + expected + ["--runner=DataflowRunner"], given
    # bare, then another parameter or Beam option: the switch is on and the next token keeps its meaning
    assert flex_launcher.to_pipeline_args(
        "classify", ["--confidence", "--overwrite", "--temp_location", "gs://b/tmp"]
    ) == ["--confidence", "--overwrite", "--temp_location", "gs://b/tmp"]
    with pytest.raises(
        flex_launcher.TemplateParameterError, match=r"^overwrite: 'yes' is not a valid"
    ):
        flex_launcher.to_pipeline_args("extract", ["--overwrite=yes"])


def test_unknown_template_parameters_are_refused_naming_them():
    with pytest.raises(
        flex_launcher.TemplateParameterError,
        match=r"^dtyp: not a parameter of the efm-extract template; did you mean dtype\? its parameters are bbox, ",
    ):
        flex_launcher.to_pipeline_args(
            "extract", ["--years=2021", "--dtyp=int8", "--runner=DataflowRunner"]
        )
    with pytest.raises(
        flex_launcher.TemplateParameterError,
        match=r"^colour: not a parameter of the efm-classify template; its parameters",
    ):
        flex_launcher.to_pipeline_args("classify", ["--colour=red"])
    with pytest.raises(
        flex_launcher.TemplateParameterError, match=r"^2022: not a --parameter=value"
    ):
        flex_launcher.to_pipeline_args("extract", ["--years=2021", "2022"])


# Beam options of the job's environment (Dataflow's FlexTemplateRuntimeEnvironment, set with gcloud's
# --temp-location, --staging-location, --service-account-email, --max-workers, --disable-public-ips,
# --additional-pipeline-options ...), as Beam Python spells them, and Beam's own --template_location.
DATAFLOW_BEAM_OPTIONS = (
    "runner",
    "project",
    "region",
    "job_name",
    "template_location",
    "temp_location",
    "staging_location",
    "labels",
    "sdk_container_image",
    "service_account_email",
    "max_num_workers",
    "num_workers",
    "machine_type",
    "worker_machine_type",
    "network",
    "subnetwork",
    "no_use_public_ips",
    "use_public_ips",
    "worker_region",
    "worker_zone",
    "zone",
    "dataflow_kms_key",
    "experiments",
    "dataflow_service_options",
    "enable_streaming_engine",
    "flexrs_goal",
    "autoscaling_algorithm",
    "disk_size_gb",
    "setup_file",
    "requirements_file",
    "extra_packages",
    "impersonate_service_account",
    "update",
    "transform_name_mapping",
)


def test_beam_options_pass_as_they_are():
    """Every flag Beam's PipelineOptions define passes the launcher untouched, and efm's own check
    (pipelines.common.split_args) takes the Dataflow ones too (aliases such as --no_use_public_ips)."""
    beam = flex_launcher.beam_option_names()
    assert set(DATAFLOW_BEAM_OPTIONS) <= beam, set(DATAFLOW_BEAM_OPTIONS) - beam
    options = [f"--{name}=x" for name in sorted(beam)]
    assert flex_launcher.to_pipeline_args("sample", options) == options
    from pipelines import common

    required = [
        "--embeddings=e.zarr",
        "--points=p.csv",
        "--label-column=label",
        "--output=s.parquet",
    ]
    bare = {"no_use_public_ips", "use_public_ips", "enable_streaming_engine", "update"}
    values = {
        "flexrs_goal": "COST_OPTIMIZED",
        "autoscaling_algorithm": "NONE",
        "labels": "a=b",
        "runner": "DataflowRunner",
    }
    flags = [
        f"--{name}" if name in bare else f"--{name}={values.get(name, '1')}"
        for name in DATAFLOW_BEAM_OPTIONS
    ]
    args, _ = common.split_args(parser_of("sample"), required + flags)
    assert args.output == "s.parquet"


def runtime_environment_fields_without_a_beam_option() -> dict[str, str]:
    """Google's schema (google-cloud-dataflow-client): the launch request's runtime-environment fields
    and launchOptions whose name Beam Python has no flag for, snake_case -> the REST (JSON) name."""
    from google.cloud.dataflow_v1beta3.types import (
        FlexTemplateRuntimeEnvironment,
        LaunchFlexTemplateParameter,
    )

    fields = {f.name: f.json_name for f in FlexTemplateRuntimeEnvironment.pb().DESCRIPTOR.fields}
    launch = LaunchFlexTemplateParameter.pb().DESCRIPTOR.fields_by_name["launch_options"]
    fields[launch.name] = launch.json_name
    from apache_beam.options.pipeline_options import PipelineOptions

    beam: set[str] = set()
    PipelineOptions([]).get_all_options(
        add_extra_args_fn=lambda p: beam.update(s[2:] for a in p._actions for s in a.option_strings)
    )
    return {snake: camel for snake, camel in fields.items() if snake not in beam}


def test_runtime_environment_fields_are_dropped_with_a_note():
    """launcherMachineType, streamingMode, dumpHeapOnOom, ... are fields of the launch request with no
    Beam option: in either spelling, with or without a value, the launcher drops them (Beam and efm
    would refuse them), names them in one note, and still refuses a misspelt template parameter."""
    expected = runtime_environment_fields_without_a_beam_option()
    for issue_field in (
        "launcherMachineType",
        "streamingMode",
        "dumpHeapOnOom",
        "saveHeapDumpsToGcsPath",
        "enableLauncherVmSerialPortLogging",
        "launchOptions",
    ):
        assert issue_field in expected.values(), issue_field
    assert set(flex_launcher.RUNTIME_ENVIRONMENT_ONLY) == set(expected.values())
    assert flex_launcher.RUNTIME_ENVIRONMENT_NAMES == set(expected) | set(expected.values())
    base = ["--embeddings=gs://my-bucket/e.zarr", "--runner=DataflowRunner"]
    for snake, camel in expected.items():
        for given in (
            [f"--{camel}=x"],
            [f"--{snake}=x"],
            [f"--{camel}"],  # a boolean given bare
            [f"--{snake}", "some value"],  # the value as the next word
        ):
            dropped: list[str] = []
            args = flex_launcher.to_pipeline_args(
                "sample", base[:1] + given + base[1:] + ["--temp_location", "gs://b/t"], dropped
            )
            assert args == base + ["--temp_location", "gs://b/t"], given
            assert dropped == [given[0][2:].partition("=")[0]], given
    note = flex_launcher.environment_note(["launcherMachineType", "dump_heap_on_oom"])
    assert "\n" not in note and note.startswith("launcherMachineType, dump_heap_on_oom: ")
    # a misspelt template parameter beside them is still refused, with the closest parameter
    with pytest.raises(
        flex_launcher.TemplateParameterError,
        match=r"^overwirte: not a parameter of the efm-sample template; did you mean overwrite\?",
    ):
        flex_launcher.to_pipeline_args(
            "sample", ["--launcherMachineType=n1-standard-2", "--overwirte=true"]
        )
    # and so is a near miss of a field (only the exact names are the launcher's)
    with pytest.raises(flex_launcher.TemplateParameterError, match=r"^launcherMachineTyp: not a"):
        flex_launcher.to_pipeline_args("sample", ["--launcherMachineTyp=n1-standard-2"])
    # a field name that is also a near miss of a template parameter is refused as the typo it may
    # be; everywhere else it is dropped
    import difflib

    for pipeline in PIPELINES:
        names = list(flex_launcher.parameters(pipeline))
        for field in flex_launcher.RUNTIME_ENVIRONMENT_NAMES:
            close = difflib.get_close_matches(field, names, n=1)
            if close:
                with pytest.raises(
                    flex_launcher.TemplateParameterError,
                    match=rf"^{field}: not a parameter of the efm-{pipeline} template; did you mean {close[0]}\?",
                ):
                    flex_launcher.to_pipeline_args(pipeline, [f"--{field}=4"])
            else:
                assert flex_launcher.to_pipeline_args(pipeline, [f"--{field}=4"]) == []
    # extract's max_retries (max_workers' near miss) moved into `tuning`: max_workers is dropped,
    # and the old parameter is refused saying where it went
    assert flex_launcher.to_pipeline_args("extract", ["--max_workers=4"]) == []
    with pytest.raises(
        flex_launcher.TemplateParameterError,
        match=r"^max_retries: moved into the tuning parameter: pass --tuning=max_retries=3 ",
    ):
        flex_launcher.to_pipeline_args("extract", ["--max_retries=3"])


def test_workers_without_the_image_get_the_package_and_the_pins():
    staged = [
        f"--setup_file={REPO / 'setup.py'}",
        f"--requirements_file={REPO / 'constraints.txt'}",
        "--requirements_cache=skip",
    ]
    assert (
        flex_launcher.worker_dependencies(["--output=gs://b/x.zarr", "--runner", "DataflowRunner"])
        == staged
    )
    assert (
        flex_launcher.worker_dependencies(
            ["--runner=DataflowRunner", f"--sdk_container_image={SDK_IMAGE}"]
        )
        == []
    )  # nothing to install
    assert (
        flex_launcher.worker_dependencies(["--runner=DirectRunner"])
        == flex_launcher.worker_dependencies([])
        == []
    )


def test_unknown_parameter_fails_the_launch_with_one_line(tmp_path):
    """Run as the launcher runs the entry file: exit 2, one line naming the parameter, nothing written."""
    proc = launch(
        "sample",
        {
            "embeddings": "gs://my-bucket/e.zarr",
            "points": "gs://my-bucket/p.csv",
            "label_column": "label",
            "output": "gs://my-bucket/s.parquet",
            "overwirte": "true",
        },
        ["--runner=DataflowRunner", f"--template_location={tmp_path}/job"],
        child_env(),
        expect=2,
        timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if not line.startswith(("WARNING", "INFO"))]
    assert lines == [
        "efm sample (flex template): error: overwirte: not a parameter of the efm-sample template; did you mean overwrite? "
        "its parameters are embeddings, points, label_column, output, years, tuning, overwrite"
    ] or (
        len(lines) == 1
        and lines[0].startswith("efm sample (flex template): error: overwirte: not a parameter")
    ), proc.stderr
    assert not (tmp_path / "job").exists()


# ---------------------------------------------------------------------------------------------
# The image


def dockerfile() -> str:
    return (TEMPLATES / "Dockerfile").read_text()


def setup_ranges() -> dict[str, str]:
    """setup.py's install_requires: name -> its version range (ranges, not pins: issue 20)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    install = next(
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "INSTALL_REQUIRES"
    )
    from packaging.requirements import Requirement

    return {
        Requirement(spec).name.lower(): Requirement(spec).specifier
        for spec in ast.literal_eval(install)
    }


def constraint_pins() -> dict[str, str]:
    lines = [
        line.split("#")[0].strip() for line in (REPO / "constraints.txt").read_text().splitlines()
    ]
    return {line.split("==")[0].lower(): line.split("==")[1] for line in lines if "==" in line}


def test_dockerfile_pins_the_tested_versions():
    text = dockerfile()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    images = {stage: image for image, stage in froms}
    beam = re.fullmatch(r"apache/beam_python(3\.\d+)_sdk:(\S+)", images["base"])
    assert beam, (
        "the workers' base must be Google's pattern: apache/beam_python<3.x>_sdk:<beam version>"
    )
    python, beam_version = beam.groups()
    # the image's Beam is the tested one (constraints.txt), inside setup.py's range
    assert beam_version == constraint_pins()["apache-beam"]
    assert setup_ranges()["apache-beam"].contains(beam_version)
    requires = re.search(r'python_requires="([^"]+)"', (REPO / "setup.py").read_text()).group(1)
    assert requires == f">={python}", "the image's Python is the oldest setup.py allows (CI's 3.11)"
    launcher = re.fullmatch(
        r"gcr\.io/dataflow-templates-base/python(\d+)-template-launcher-base:\$\{LAUNCHER_TAG\}",
        images["launcher"],
    )
    assert launcher and launcher.group(1) == python.replace(".", ""), (
        "launcher base image for the same Python"
    )
    assert re.search(r"^ARG LAUNCHER_TAG=\S+$", text, re.M)
    assert (
        "COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher"
        in text
    )
    # Everything installed comes at constraints.txt's versions (setup.py gives only ranges):
    # one pip install, with -c constraints.txt, and no loose pins of its own.
    installs = re.findall(r"pip install ([^\n\\&]+)", text)
    assert installs == ["--no-cache-dir -c constraints.txt '.[s3,distributed]' "], (
        installs
    )  # s3fs: --cog-root s3:// on workers; distributed: the image serves Dask workers too
    for name, version in re.findall(r"([A-Za-z0-9_.\-\[\]]+)==([0-9][^\s'\"]*)", text):
        assert constraint_pins().get(re.sub(r"\[.*\]", "", name).lower()) == version, name
    assert re.search(r'ENTRYPOINT \["/opt/apache/beam/boot"\]', text)


def test_dockerfile_points_the_launcher_at_files_that_exist():
    text = dockerfile()
    copies = re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
    copied = [src for line in copies for src in line.split()[:-1]]
    for src in copied:
        assert (REPO / src).exists(), f"COPY {src}: no such file in the repository"
    setup = (REPO / "setup.py").read_text()
    for package in re.findall(r'"(\w+)", "\1\.\*"', setup):
        assert package in copied, f"setup.py's package {package} is not copied into the image"
    assert not {"emulators", "tests", "tests_airflow"} & {src.rstrip("/") for src in copied}, (
        "test infrastructure copied into the image"
    )
    workdir = re.search(r"^WORKDIR (\S+)$", text, re.M).group(1)
    stages = dict(
        re.findall(r"^FROM base AS (\w+)\nENV FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)$", text, re.M)
    )
    assert set(stages) == set(PIPELINES)
    for pipeline, path in stages.items():
        assert path == f"{workdir}/templates/{pipeline}/main.py"
        assert (REPO / path.removeprefix(workdir + "/")).is_file()
    build = (TEMPLATES / "cloudbuild.yaml").read_text()
    for pipeline in PIPELINES:
        assert re.search(rf"--target, {pipeline},", build), (
            f"cloudbuild.yaml builds no {pipeline} target"
        )
    # the Cloud Build upload (--ignore-file=templates/.gcloudignore) holds everything the Dockerfile copies
    ignore = (TEMPLATES / ".gcloudignore").read_text().splitlines()
    assert "/*" in ignore
    uploaded = {line[2:].rstrip("/") for line in ignore if line.startswith("!/")}
    assert set(copied) <= uploaded, f"templates/.gcloudignore leaves out {set(copied) - uploaded}"


def test_dockerfile_makes_the_launcher_stage_nothing_for_workers_that_run_the_image():
    """Google's pattern for one image serving launcher and workers with the package pre-installed: no
    FLEX_TEMPLATE_PYTHON_SETUP_FILE / _REQUIREMENTS_FILE / _EXTRA_PACKAGES (with any of them the
    launcher passes --setup_file & co., and every worker pip-installs the staged package again)."""
    flex_env = re.findall(r"^ENV (FLEX_TEMPLATE_\w+)=", dockerfile(), re.M)
    assert set(flex_env) == {"FLEX_TEMPLATE_PYTHON_PY_FILE"}, flex_env


def test_entry_modules_import_without_test_only_packages():
    """The launcher image has no test extras (pytest, emulators' deps, airflow): importing must not need them."""
    blocked = ["gcp_storage_emulator", "pytest", "hypothesis", "airflow"]
    code = (
        "import sys\n"
        "class Block:\n"
        f"    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}: raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(TEMPLATES)!r})\n"
        "import flex_launcher, pipelines.extract, pipelines.classify, pipelines.sample, pipelines.predict, pipelines.similarity, pipelines.change\n"
        "for p in flex_launcher.PIPELINES: flex_launcher.to_pipeline_args(p, [])\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=child_env())


# ---------------------------------------------------------------------------------------------
# Launches, as the flex template launcher does them, against the emulators


def fake_adc(path: Path) -> str:
    """Application-default credentials as a worker service account has them: a token that needs no refresh."""
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "efm-test",
                "client_secret": "efm-test",
                "refresh_token": "efm-test",
                "token": FAKE_TOKEN,
                "expiry": "2099-01-01T00:00:00Z",
            }
        )
    )
    return str(path)


def child_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("EFM_EE_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def launch(
    pipeline: str,
    params: dict[str, str],
    options: list[str],
    env: dict[str, str],
    expect: int = 0,
    timeout: float = 300,
):
    """`python templates/<pipeline>/main.py --name=value ... <options>`, FLEX_TEMPLATE_* set as in the image
    (so the launcher adds no --setup_file / --requirements_file: see the Dockerfile test)."""
    main = TEMPLATES / pipeline / "main.py"
    argv = [sys.executable, str(main), *(f"--{k}={v}" for k, v in params.items()), *options]
    env = dict(
        env, FLEX_TEMPLATE_PYTHON_PY_FILE=str(main)
    )  # the only FLEX_TEMPLATE_* the image sets
    proc = subprocess.run(argv, cwd="/", env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == expect, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return proc


def launcher_options(bucket: str, job: str, runner: str, image: bool = True) -> list[str]:
    """The Beam options the flex template launcher adds: the job's environment, sdk_container_image among
    them when the launch passes it the documented way (--additional-pipeline-options / environment.sdkContainerImage)."""
    return [
        f"--runner={runner}",
        "--project=my-project",
        "--region=europe-west1",
        f"--job_name={job}",
        f"--temp_location={bucket}/tmp",
        f"--staging_location={bucket}/staging",
        *([f"--sdk_container_image={SDK_IMAGE}"] if image else []),
        "--labels=goog-dataflow-provided-template-type=flex",
    ]


@pytest.fixture(scope="module")
def ee_emulator():
    from emulators.earthengine import EarthEngineEmulator
    from emulators.earthengine.synthetic import make_embedding_collection

    emu = EarthEngineEmulator()
    emu.add_images(make_embedding_collection(years=(2021,), seed=SEED))
    with emu:
        yield emu


@pytest.fixture(scope="module")
def adc(tmp_path_factory) -> str:
    return fake_adc(tmp_path_factory.mktemp("adc") / "application_default_credentials.json")


@pytest.fixture(scope="module")
def launched(gcs, ee_emulator, adc, tmp_path_factory):
    """extract -> sample -> classify through the entry files on DirectRunner (train in between: not a template)."""
    from pipelines import train

    bucket = f"gs://{gcs.make_bucket()}"
    env = child_env(GOOGLE_APPLICATION_CREDENTIALS=adc)
    paths = {
        "embeddings": f"{bucket}/emb.zarr",
        "points": f"{bucket}/points.csv",
        "samples": f"{bucket}/samples.parquet",
        "model": f"{bucket}/model.skops",
        "classes": f"{bucket}/classes.zarr",
        "bucket": bucket,
    }
    with gcs.fs.open(paths["points"].removeprefix("gs://"), "wb") as f:
        f.write(labelled_points_csv())
    direct = lambda job: launcher_options(bucket, job, "DirectRunner")  # noqa: E731
    outs = {}
    outs["extract"] = launch(
        "extract",
        {
            "bbox": area_bbox(),
            "years": "2021",
            "crs": CRS,
            "output": paths["embeddings"],
            "tuning": f"ee_api_url={ee_emulator.url},ee_project=test-project,chunk_size=256",
        },
        direct("efm-extract"),
        env,
    )
    outs["sample"] = launch(
        "sample",
        {
            "embeddings": paths["embeddings"],
            "points": paths["points"],
            "label_column": "label",
            "output": paths["samples"],
        },
        direct("efm-sample"),
        env,
    )
    assert (
        train.run(
            [
                "--samples",
                paths["samples"],
                "--classifier",
                "logistic-regression",
                "--output",
                paths["model"],
                "--tuning",
                "folds=3",
            ]
        )
        == 0
    )
    outs["classify"] = launch(
        "classify",
        {
            "embeddings": paths["embeddings"],
            "model": paths["model"],
            "output": paths["classes"],
            "confidence": "true",
            "resume": "false",
        },
        direct("efm-classify"),
        env,
    )
    return paths, outs, env


def test_entry_files_run_the_pipelines_as_the_launcher_does(launched, ee_emulator):
    import xarray as xr

    paths, outs, _ = launched
    assert "efm extract: " in outs["extract"].stdout and "complete" in outs["extract"].stdout
    assert (
        ee_emulator.count("computePixels") > 0
    )  # through application-default credentials, as on Dataflow workers
    assert "efm sample: " in outs["sample"].stdout and "efm classify: " in outs["classify"].stdout
    with xr.open_zarr(paths["classes"], consolidated=True) as ds:
        assert ds.attrs["efm_status"] == "complete" and "confidence" in ds
    accuracy, _ = map_accuracy(paths["classes"])
    assert accuracy > 0.8


def test_sample_table_is_written_by_the_job_when_the_launcher_does_not_wait(
    monkeypatch, tmp_path, capsys
):
    """The flex launcher returns as soon as the job is submitted (common.run_pipeline raises JobSubmitted):
    the table must be written by the pipeline itself. Here the same early return on FnApiRunner, which
    has run the whole pipeline by then: the table is there, with the values the store holds, and its metadata."""
    import pandas as pd

    from pipelines import common, sample
    from tests.helpers.store_factory import BANDS, make_store
    from transforms.learning import sample_table

    s = make_store(str(tmp_path / "emb.zarr"), height=200, width=180, years=(2021,), seed=3)
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, s.grid.height, 60), rng.integers(0, s.grid.width, 60)
    x, y = s.grid.x0 + (cols + 0.5) * s.grid.scale, s.grid.y0 - (rows + 0.5) * s.grid.scale
    pd.DataFrame({"x": x, "y": y, "label": np.where(rows % 2, "odd", "even")}).to_csv(
        tmp_path / "p.csv", index=False
    )
    monkeypatch.setattr(
        common, "detached", lambda options: True
    )  # what the flex launcher makes run_pipeline do
    out = tmp_path / "samples.parquet"
    assert (
        sample.run(
            [
                "--embeddings",
                s.path,
                "--points",
                str(tmp_path / "p.csv"),
                "--tuning",
                f"points_crs={s.grid.crs}",
                "--label-column",
                "label",
                "--output",
                str(out),
                "--runner=FnApiRunner",
            ]
        )
        == 0
    )
    assert "this process does not wait" in capsys.readouterr().out
    table = pd.read_parquet(out)
    valid = s.valid[0, rows, cols]
    assert len(table) == int(valid.sum()) > 0
    np.testing.assert_array_equal(
        table[list(BANDS)].to_numpy(), s.values[0, rows[table["point_id"]], cols[table["point_id"]]]
    )
    assert sample_table.read_table_metadata(str(out))["bands"] == list(BANDS)
    assert not (tmp_path / "samples.parquet.parts").exists()


def staged_job(gcs, template_location: str) -> dict:
    return json.loads(gcs.fs.cat(template_location.removeprefix("gs://")))


def staged_files(gcs, job: dict) -> dict[str, str]:
    """name -> gcs path of what Beam staged for the workers (packages, requirements, ...)."""
    return {
        p["name"]: p["location"].split("storage.googleapis.com/", 1)[1]
        for p in job["environment"]["workerPools"][0]["packages"]
    }


# What a worker's boot pip-installs when staged. (Beam also stages submission_environment_dependencies.txt,
# a `pip freeze` of the launcher the workers only compare against, and pickled_main_session: no installs.)
def job_transforms(gcs, job: dict) -> set[str]:
    """The names of the transforms in the Beam pipeline the job runs (Runner v2 stages it as a proto)."""
    from apache_beam.portability.api import beam_runner_api_pb2

    url = job["environment"]["sdkPipelineOptions"]["options"]["pipelineUrl"]
    pipeline = beam_runner_api_pb2.Pipeline.FromString(
        gcs.fs.cat(url.split("storage.googleapis.com/", 1)[-1].removeprefix("gs://"))
    )
    return {t.unique_name for t in pipeline.components.transforms.values()}


WORKER_INSTALLS = ("workflow.tar.gz", "requirements.txt", "extra_packages.txt")


def test_dataflow_launch_with_the_image_stages_no_package_and_does_not_wait(
    launched, gcs, ee_emulator
):
    """DataflowRunner with --template_location, as the flex launcher runs it: checks pass against the
    emulators, the job graph is written, the process returns at once (no waiting on a job). With the
    image as sdk_container_image nothing is staged for workers to pip-install; sample's graph ends with
    the step that writes its table (the launcher does not wait, so the job must)."""
    paths, _, env = launched
    bucket = paths["bucket"]
    for pipeline, params in [
        (
            "extract",
            {
                "bbox": area_bbox(),
                "years": "2021",
                "crs": CRS,
                "output": f"{bucket}/df-emb.zarr",
                "tuning": f"ee_api_url={ee_emulator.url},ee_project=test-project,chunk_size=256",
            },
        ),
        (
            "classify",
            {
                "embeddings": paths["embeddings"],
                "model": paths["model"],
                "output": f"{bucket}/df-classes.zarr",
            },
        ),
        (
            "sample",
            {
                "embeddings": paths["embeddings"],
                "points": paths["points"],
                "label_column": "label",
                "output": f"{bucket}/df-samples.parquet",
            },
        ),
    ]:
        template_location = f"{bucket}/launches/{pipeline}/job_object"
        # classify also gets runtime-environment fields with no Beam option, as a launcher may pass them
        environment = (
            ["--launcherMachineType=n1-highmem-4", "--dump_heap_on_oom"]
            if pipeline == "classify"
            else []
        )
        proc = launch(
            pipeline,
            params,
            launcher_options(bucket, f"efm-{pipeline}", "DataflowRunner")
            + environment
            + [f"--template_location={template_location}"],
            env,
            timeout=180,
        )
        assert f"efm {pipeline}: job graph written to {template_location}" in proc.stdout
        notes = [line for line in proc.stderr.splitlines() if "(flex template): note: " in line]
        assert notes == (
            [
                "efm classify (flex template): note: "
                + flex_launcher.environment_note(["launcherMachineType", "dump_heap_on_oom"])
            ]
            if environment
            else []
        ), proc.stderr
        job = staged_job(gcs, template_location)
        environment = job["environment"]
        assert any(
            c.get("containerImage") == SDK_IMAGE
            for c in environment["workerPools"][0]["sdkHarnessContainerImages"]
        )
        staged = staged_files(gcs, job)
        assert not set(staged) & set(WORKER_INSTALLS), (
            f"{pipeline}: staged for workers to install: {sorted(staged)}"
        )
        if pipeline == "sample":
            transforms = job_transforms(gcs, job)
            assert "AssembleTable/Assemble" in transforms and "Sample/SampleChunk" in transforms, (
                "the table is written by a step of the job"
            )
            assert not gcs.fs.exists(params["output"].removeprefix("gs://")), (
                "nothing written at launch"
            )


def test_dataflow_launch_without_the_image_stages_the_package_and_the_pins(launched, gcs):
    """No sdk_container_image: workers run the stock Beam image, so the launcher stages setup.py (the efm
    package, direct dependencies as ranges) and constraints.txt as the requirements file (every transitive
    version pinned): workers install exactly what CI tested, nothing resolved fresh."""
    paths, _, env = launched
    bucket = paths["bucket"]
    template_location = f"{bucket}/launches/no-image/job_object"
    launch(
        "classify",
        {
            "embeddings": paths["embeddings"],
            "model": paths["model"],
            "output": f"{bucket}/df-noimage.zarr",
        },
        launcher_options(bucket, "efm-classify", "DataflowRunner", image=False)
        + [f"--template_location={template_location}"],
        env,
        timeout=180,
    )
    staged = staged_files(gcs, staged_job(gcs, template_location))
    assert gcs.fs.cat(staged["requirements.txt"]) == (REPO / "constraints.txt").read_bytes()
    sdist = tarfile.open(fileobj=io.BytesIO(gcs.fs.cat(staged["workflow.tar.gz"])))
    names = sdist.getnames()
    for module in (
        "pipelines/extract.py",
        "pipelines/classify.py",
        "transforms/sources/earthengine.py",
        "transforms/storage/store.py",
    ):
        assert any(n.endswith(module) for n in names), module
    requires = (
        sdist.extractfile(next(n for n in names if n.endswith(".egg-info/requires.txt")))
        .read()
        .decode()
    )
    from packaging.requirements import Requirement

    staged_requires = {  # install_requires: the lines before the first [extra] section
        Requirement(line).name.lower(): Requirement(line).specifier
        for line in requires.split("\n[")[0].splitlines()
        if line.strip()
    }
    assert staged_requires == setup_ranges()  # and the workers install them -c constraints.txt


class RefusingEmulator:
    """The Earth Engine emulator answering 403 to the algorithm list, as Earth Engine does for an account
    (say a worker service account) that may not use it in the project."""

    def __new__(cls):
        from emulators.earthengine import EarthEngineEmulator
        from emulators.earthengine.server import error_reply

        class Refusing(EarthEngineEmulator):
            def handle(self, method, target, raw_body):
                reply, kind, body = super().handle(method, target, raw_body)
                if kind == "algorithms":
                    return (
                        error_reply(
                            403,
                            "Caller does not have required permission to use project test-project.",
                        ),
                        kind,
                        body,
                    )
                return reply, kind, body

        return Refusing()


@pytest.mark.parametrize(
    "case", ["regex", "bucket", "no-credentials", "refused-credentials", "model"]
)
def test_bad_input_fails_at_launch_with_one_line(case, launched, gcs, ee_emulator, tmp_path):
    paths, _, env = launched
    bucket = paths["bucket"]
    template_location = f"{bucket}/launches/bad-{case}/job_object"
    options = launcher_options(bucket, "efm-bad", "DataflowRunner") + [
        f"--template_location={template_location}"
    ]
    extract = {
        "bbox": area_bbox(),
        "years": "2021",
        "output": f"{bucket}/bad-{case}.zarr",
        "tuning": f"ee_api_url={ee_emulator.url},ee_project=test-project",
    }
    pipeline, expected = "extract", None
    if case == "regex":
        extract["crs"] = "32631"
        expected = r"^efm extract \(flex template\): error: crs: '32631' is not a valid target crs \(must match "
    elif case == "bucket":
        extract["output"] = "gs://efm-no-such-bucket/emb.zarr"
        expected = r"^efm extract: error: --output: bucket 'efm-no-such-bucket' of gs://efm-no-such-bucket/emb.zarr does not exist"
    elif case == "no-credentials":
        env = child_env(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path))
        expected = r"^efm extract: error: credentials: no Earth Engine credentials found; run `gcloud auth application-default login"
    elif case == "refused-credentials":
        refusing = RefusingEmulator().start()
        extract["tuning"] = f"ee_api_url={refusing.url},ee_project=test-project"
        expected = r"^efm extract: error: --tuning: ee_project: these credentials may not use Earth Engine in project test-project: Caller does not have"
    else:
        pipeline = "classify"
        extract = {
            "embeddings": paths["embeddings"],
            "model": f"{bucket}/no-such-model.skops",
            "output": f"{bucket}/bad.zarr",
        }
        expected = r"^efm classify: error: --model: "
    try:
        proc = launch(pipeline, extract, options, env, expect=2, timeout=120)
    finally:
        if case == "refused-credentials":
            refusing.stop()
    lines = [line for line in proc.stderr.splitlines() if not line.startswith(("WARNING", "INFO"))]
    assert len(lines) == 1 and re.search(expected, lines[0]), proc.stderr[-2000:]
    assert not gcs.fs.exists(template_location.removeprefix("gs://")), (
        "no job may exist after a failed launch"
    )


def test_unreachable_earth_engine_is_one_line(monkeypatch, ee_token):
    """No Earth Engine at the URL (closed port): a clear --tuning ee_api_url error, not a traceback.
    (ee retries the connection 5 times with backoff first, about 50 s: made 0 here.)"""
    import ee

    from tests.helpers.local_servers import free_port
    from transforms.core.errors import InputError
    from transforms.sources import earthengine

    monkeypatch.setattr(ee.data._get_state(), "max_retries", 0)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(
        InputError,
        match=rf"^--tuning: ee_api_url: cannot initialise Earth Engine at {url}: cannot connect",
    ):
        earthengine.initialize(earthengine.EarthEngineSettings(project="test-project", api_url=url))


def test_every_template_folder_is_a_listed_pipeline():
    """A template added under templates/ is checked by every test above (they run over PIPELINES) and launched."""
    folders = {p.parent.name for p in TEMPLATES.glob("*/metadata.json")}
    assert folders == set(PIPELINES) == set(flex_launcher.PIPELINES)
    for pipeline in PIPELINES:
        assert (
            (TEMPLATES / pipeline / "main.py")
            .read_text()
            .rstrip()
            .endswith(f'sys.exit(launch("{pipeline}"))')
        )
        assert f"efm-{pipeline}" in (TEMPLATES / "README.md").read_text(), (
            f"templates/README.md does not name efm-{pipeline}"
        )


def test_map_templates_translate_their_parameters():
    assert flex_launcher.to_pipeline_args(
        "change",
        [
            "--embeddings=gs://my-bucket/e.zarr",
            "--years=2021,2022",
            "--output=gs://my-bucket/c.zarr",
            "--threshold=0.8",
            "--resume=false",
            "--runner=DataflowRunner",
        ],
    ) == [
        "--embeddings=gs://my-bucket/e.zarr",
        "--years=2021,2022",
        "--output=gs://my-bucket/c.zarr",
        "--threshold=0.8",
        "--runner=DataflowRunner",
    ]
    assert flex_launcher.to_pipeline_args(
        "similarity",
        [
            "--points=gs://my-bucket/r.geojson",
            "--label=kind=forest",
            "--reference_year=2022",
            "--threshold=-0.5",
            "--overwrite",
        ],
    ) == [
        "--points=gs://my-bucket/r.geojson",
        "--label=kind=forest",
        "--reference-year=2022",
        "--threshold=-0.5",
        "--overwrite",
    ]
    assert flex_launcher.to_pipeline_args(
        "predict", ["--model=gs://my-bucket/m.skops", "--confidence=false", "--years=2021"]
    ) == ["--model=gs://my-bucket/m.skops", "--years=2021"]
    with pytest.raises(
        flex_launcher.TemplateParameterError, match=r"^threshold: '1\.5' is not a valid threshold"
    ):
        flex_launcher.to_pipeline_args("change", ["--threshold=1.5"])
    with pytest.raises(
        flex_launcher.TemplateParameterError,
        match=r"^yaers: not a parameter of the efm-change template; did you mean years\?",
    ):
        flex_launcher.to_pipeline_args("change", ["--yaers=2021,2022"])
    with pytest.raises(
        flex_launcher.TemplateParameterError,
        match=r"^reference: not a parameter of the efm-similarity template; did you mean",
    ):
        flex_launcher.to_pipeline_args("similarity", ["--reference=2022"])


@pytest.fixture(scope="module")
def map_launched(launched, gcs, tmp_path_factory):
    """predict (a regressor), similarity and change through their entry files on DirectRunner, on a two-year
    store in the bucket (tests/helpers/store_factory.py, uploaded) with the model and the reference points on gs://."""
    import pandas as pd

    from tests.helpers.store_factory import BANDS, make_store
    from transforms.learning import models

    paths, _, env = launched
    bucket = paths["bucket"]
    local = make_store(
        str(tmp_path_factory.mktemp("maps") / "emb.zarr"), years=(2021, 2022), seed=21
    )
    embeddings = f"{bucket}/maps/emb.zarr"
    gcs.fs.put(local.path, embeddings.removeprefix("gs://"), recursive=True)
    rng = np.random.default_rng(2)
    t, r, c = np.nonzero(local.valid[:1])
    pick = rng.choice(len(r), 200, replace=False)
    rows, cols = r[pick], c[pick]
    from sklearn.linear_model import Ridge

    X = local.values[0, rows, cols]
    regressor = Ridge(alpha=0.1).fit(
        X, X @ rng.normal(size=X.shape[1]) * 10 + local.labels[0, rows, cols] * 20 + 50
    )
    model = f"{bucket}/maps/agbd.skops"
    models.save_model(
        regressor,
        model,
        {"kind": "regressor", "bands": list(BANDS), "target": "agbd", "units": "Mg/ha"},
    )
    refs = f"{bucket}/maps/refs.csv"
    x, y = (
        local.grid.x0 + (cols[:20] + 0.5) * local.grid.scale,
        local.grid.y0 - (rows[:20] + 0.5) * local.grid.scale,
    )
    with gcs.fs.open(refs.removeprefix("gs://"), "wb") as f:
        f.write(pd.DataFrame({"x": x, "y": y}).to_csv(index=False).encode())
    out = {name: f"{bucket}/maps/{name}.zarr" for name in MAP_PIPELINES}
    params = {
        "predict": {
            "embeddings": embeddings,
            "model": model,
            "output": out["predict"],
            "years": "2021,2022",
        },
        "similarity": {
            "embeddings": embeddings,
            "points": refs,
            "tuning": f"points_crs={CRS}",
            "output": out["similarity"],
            "reference_year": "2021",
        },
        "change": {
            "embeddings": embeddings,
            "years": "2021,2022",
            "output": out["change"],
            "threshold": "0.5",
        },
    }
    procs = {
        name: launch(
            name, params[name], launcher_options(bucket, f"efm-{name}", "DirectRunner"), env
        )
        for name in MAP_PIPELINES
    }
    return {
        "embeddings": embeddings,
        "model": model,
        "params": params,
        "out": out,
        "procs": procs,
        "regressor": regressor,
        "rows": rows[:20],
        "cols": cols[:20],
        "env": env,
        "bucket": bucket,
    }


def test_map_entry_files_run_their_pipelines_as_the_launcher_does(map_launched):
    """Each new template's entry file, run as the launcher runs it, writes the map its pipeline writes:
    equal to scikit-learn / numpy on the whole store read back from gs:// (tests/helpers/map_references.py)."""
    from tests.helpers.map_references import (
        REF_ATOL,
        assert_map_equals,
        gcs_embeddings,
        reference_change,
        reference_prediction,
        reference_similarity,
    )

    m = map_launched
    for name in MAP_PIPELINES:
        assert (
            f"efm {name}: " in m["procs"][name].stdout and "complete" in m["procs"][name].stdout
        ), name
    values = gcs_embeddings(m["embeddings"])
    assert_map_equals(
        m["out"]["predict"],
        "prediction",
        reference_prediction(m["regressor"], values),
        rtol=1e-6,
        atol=1e-4,
    )
    similarity = reference_similarity(values[:1], m["rows"], m["cols"])[
        0
    ]  # reference_year=2021: the 2021 reference for both years
    expected = np.stack(
        [similarity, reference_similarity_with(values[1], values[0], m["rows"], m["cols"])]
    )
    assert_map_equals(m["out"]["similarity"], "similarity", expected, rtol=0, atol=REF_ATOL)
    ds = assert_map_equals(
        m["out"]["change"], "similarity", reference_change(values, 0, 1), rtol=0, atol=REF_ATOL
    )
    assert "changed" in ds and ds.attrs["threshold"] == 0.5


def reference_similarity_with(
    year_values: np.ndarray, reference_year_values: np.ndarray, rows, cols
) -> np.ndarray:
    """One year's pixels dotted with the mean of another year's embeddings at the points (--reference-year)."""
    at_points = reference_year_values[rows, cols]
    reference = at_points[~np.isnan(at_points).any(axis=1)].mean(axis=0)
    out = np.einsum("yxb,b->yx", np.nan_to_num(year_values), reference)
    out[np.isnan(year_values).any(axis=-1)] = np.nan
    return out


def test_map_templates_launch_on_dataflow_staging_nothing(map_launched, gcs):
    """DataflowRunner with --template_location, as the flex launcher runs it: the checks pass, the job graph is
    written, nothing staged for workers running the image, and nothing written at launch."""
    m = map_launched
    for name in MAP_PIPELINES:
        params = dict(m["params"][name], output=f"{m['bucket']}/maps/df-{name}.zarr")
        template_location = f"{m['bucket']}/launches/{name}/job_object"
        proc = launch(
            name,
            params,
            launcher_options(m["bucket"], f"efm-{name}", "DataflowRunner")
            + [f"--template_location={template_location}"],
            m["env"],
            timeout=180,
        )
        assert f"efm {name}: job graph written to {template_location}" in proc.stdout, proc.stdout[
            -2000:
        ]
        job = staged_job(gcs, template_location)
        assert any(
            c.get("containerImage") == SDK_IMAGE
            for c in job["environment"]["workerPools"][0]["sdkHarnessContainerImages"]
        )
        assert not set(staged_files(gcs, job)) & set(WORKER_INSTALLS), name
        steps = job_transforms(gcs, job)
        assert any(t.startswith("Compute/") for t in steps) and "MarkComplete" in steps, (
            "the map is computed and marked by steps of the job"
        )
        assert not gcs.fs.exists(params["output"].removeprefix("gs://") + "/.efm/done"), (
            "no chunk written at launch"
        )


@pytest.mark.parametrize("case", ["same-years", "regressor-confidence", "no-such-year"])
def test_map_templates_refuse_bad_input_at_launch_with_one_line(case, map_launched, gcs):
    m = map_launched
    template_location = f"{m['bucket']}/launches/bad-{case}/job_object"
    options = launcher_options(m["bucket"], "efm-bad", "DataflowRunner") + [
        f"--template_location={template_location}"
    ]
    if case == "same-years":
        pipeline, params, expected = (
            "change",
            dict(m["params"]["change"], years="2021,2021"),
            r"^efm change: error: --years: both years are 2021; give two different years",
        )
    elif case == "regressor-confidence":
        pipeline, params, expected = (
            "predict",
            dict(m["params"]["predict"], confidence="true"),
            r"^efm predict: error: --confidence: a regressor \(Ridge\)",
        )
    else:
        pipeline, params, expected = (
            "similarity",
            dict(m["params"]["similarity"], reference_year="2019"),
            r"^efm similarity: error: --reference-year: ",
        )
    params["output"] = f"{m['bucket']}/maps/bad-{case}.zarr"
    proc = launch(pipeline, params, options, m["env"], expect=2, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith(("WARNING", "INFO"))]
    assert len(lines) == 1 and re.search(expected, lines[0]), proc.stderr[-2000:]
    assert not gcs.fs.exists(template_location.removeprefix("gs://")) and not gcs.fs.exists(
        params["output"].removeprefix("gs://")
    )
