"""What a flex template's entry file runs: template parameters -> `efm <pipeline>` flags -> the pipeline.

Dataflow's launcher runs FLEX_TEMPLATE_PYTHON_PY_FILE (templates/<pipeline>/main.py) as

    python main.py --<parameter>=<value> ... --runner=DataflowRunner --project=... --region=... (Beam options)

Template parameter names use underscores (`chunk_size`), the way Dataflow, gcloud and Beam name
options; efm's flags use dashes (`--label-column`). This module, shared by the entry files (one per template, PIPELINES):

1. checks each template parameter against its metadata.json regexes, so the same values fail
   here as in Dataflow's own launch-time check (and when the entry file is run by hand);
2. turns `--label_column=crop` into `--label-column=crop`, and a switch given bare (`--overwrite`) or as
   `--overwrite=true` (any case) into `--overwrite` (`=false` drops it); a Beam option (any flag
   Beam's PipelineOptions define: the launcher passes the job's environment as Beam options) passes
   as it is; a field of Dataflow's flex template runtime environment that Beam Python has no option
   for (`RUNTIME_ENVIRONMENT_ONLY`: `launcherMachineType`, `dumpHeapOnOom`, ..., camelCase or
   snake_case) is the launcher's own: dropped with one note line, never passed on (not a Beam
   option, so efm's own option check would refuse it) -- unless it is also a close miss of one of the template's parameters; any other
   `--name` is refused naming it (with the closest template parameter): a misspelt parameter must
   not run with the default;
3. decides what the workers install: nothing when they run the template's image
   (`sdk_container_image`, Google's pattern: the image has efm and every pin installed, so no
   package is staged); without the image, the efm package (setup.py) and `constraints.txt` as
   the requirements file, so the workers install exactly the tested versions, transitive ones too;
4. runs `pipelines.<pipeline>.run`, whose checks (area, years, credentials, Earth Engine reachable,
   output bucket exists, model loads, ...) all happen here, before any worker starts. On Dataflow
   the launcher submits the job and returns without waiting (pipelines.common.detached).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import re
import sys
from collections.abc import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)  # /template in the image: setup.py and constraints.txt are there
PIPELINES = ("extract", "classify", "sample", "predict", "similarity", "change")
TRUE, FALSE = "true", "false"

# Fields of Dataflow's flex template launch request that Beam Python has no pipeline option for:
# FlexTemplateRuntimeEnvironment's launcherMachineType, streamingMode, dumpHeapOnOom,
# saveHeapDumpsToGcsPath, enableLauncherVmSerialPortLogging, ipConfiguration, kmsKeyName, maxWorkers
# and additionalExperiments / additionalPipelineOptions / additionalUserLabels (Beam's own options for
# these are --no_use_public_ips, --dataflow_kms_key, --max_num_workers, --experiments, --labels), and
# LaunchFlexTemplateParameter's launchOptions (Dataflow REST v1b3; google-cloud-dataflow-client's
# types, which tests/test_templates.py checks this list against). Dataflow applies them to the launcher
# VM and the job itself; should the launcher also put one on the entry file's command line, in the
# API's camelCase or in snake_case, efm notes it and drops it: it is not a Beam option (passed on,
# pipelines.common.split_args would refuse it as unknown) and efm does not use it.
RUNTIME_ENVIRONMENT_ONLY = (
    "launcherMachineType",
    "streamingMode",
    "dumpHeapOnOom",
    "saveHeapDumpsToGcsPath",
    "enableLauncherVmSerialPortLogging",
    "ipConfiguration",
    "kmsKeyName",
    "maxWorkers",
    "additionalExperiments",
    "additionalPipelineOptions",
    "additionalUserLabels",
    "launchOptions",
)


def snake_case(name: str) -> str:
    """`launcherMachineType` -> `launcher_machine_type` (the REST field's proto name)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


RUNTIME_ENVIRONMENT_NAMES = frozenset(RUNTIME_ENVIRONMENT_ONLY) | {
    snake_case(n) for n in RUNTIME_ENVIRONMENT_ONLY
}


class TemplateParameterError(ValueError):
    """A template parameter Dataflow would refuse: one line naming the parameter and the fix."""


def metadata_path(pipeline: str) -> str:
    return os.path.join(HERE, pipeline, "metadata.json")


def load_metadata(pipeline: str) -> dict:
    with open(metadata_path(pipeline)) as f:
        return json.load(f)


def parameters(pipeline: str) -> dict[str, dict]:
    return {p["name"]: p for p in load_metadata(pipeline)["parameters"]}


def flag_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """`--label-column` -> its argparse action, for every long flag of an efm parser."""
    return {
        s: a
        for a in parser._actions
        for s in a.option_strings
        if s.startswith("--") and s != "--help"
    }


def flag_for(name: str, actions: dict[str, argparse.Action]) -> str | None:
    """The efm flag a template parameter stands for: `label_column` -> `--label-column` (None: not efm's)."""
    for candidate in (f"--{name.replace('_', '-')}", f"--{name}"):
        if candidate in actions:
            return candidate
    return None


def check_value(param: dict, value: str) -> None:
    """Dataflow's launch-time check: the value must match every regex of the parameter (whole value)."""
    for pattern in param.get("regexes", []):
        if not re.fullmatch(pattern, value):
            example = param.get("helpText", "").rpartition("Example: ")[2]
            raise TemplateParameterError(
                f"{param['name']}: {value!r} is not a valid {param.get('label', param['name']).lower()} "
                f"(must match {pattern}); e.g. {example}"
            )


def split_tokens(
    argv: Sequence[str], names: set[str], switches: frozenset[str] = frozenset()
) -> list[tuple[str, str | None, str]]:
    """Tokens -> (name, value, original) for `--name=value` / `--name value` of template parameters;
    other tokens come back as (None, None, token). A bare switch (`--overwrite`) has the value "true"."""
    out: list[tuple[str | None, str | None, str]] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, has_value, value = (
            token[2:].partition("=") if token.startswith("--") else ("", False, "")
        )
        if name in names:
            if not has_value:  # `--name value`, as a person may type it
                value = None
                following = tokens[i + 1] if i + 1 < len(tokens) else None
                if (
                    name in switches
                ):  # bare: on; a following true/false is its value, anything else is not
                    value = TRUE
                    if following is not None and following.lower() in (TRUE, FALSE):
                        i += 1
                        value = following
                elif following is not None and not following.startswith("--"):
                    i += 1
                    value = following
            out.append((name, value, token))
        else:
            out.append((None, None, token))
        i += 1
    return out


def to_pipeline_args(
    pipeline: str, argv: Sequence[str], dropped: list[str] | None = None
) -> list[str]:
    """Template launch arguments -> the argv `pipelines.<pipeline>` takes (see the module doc).
    The runtime-environment fields dropped (RUNTIME_ENVIRONMENT_ONLY) are appended to `dropped`."""
    params = parameters(pipeline)
    actions = flag_actions(importlib.import_module(f"pipelines.{pipeline}").build_parser())
    switches = frozenset(
        n
        for n in params
        if isinstance(actions.get(flag_for(n, actions) or ""), argparse._StoreTrueAction)
    )
    beam = beam_option_names()
    args: list[str] = []
    beam_value_next = False  # `--temp_location gs://...`: the word after a Beam option is its value
    environment_value_next = False  # likewise after a dropped runtime-environment field
    for name, value, token in split_tokens(argv, set(params), switches):
        if environment_value_next and name is None and not token.startswith("--"):
            environment_value_next = False
            continue  # the value of the field dropped just before
        environment_value_next = False
        field, has_value, _ = token[2:].partition("=")
        if (
            name is None
            and token.startswith("--")
            and field in RUNTIME_ENVIRONMENT_NAMES
            and not difflib.get_close_matches(field, list(params), n=1)
        ):  # a close miss of a parameter stays refused
            if dropped is not None:
                dropped.append(field)
            environment_value_next = not has_value  # `--launcherMachineType n1-standard-2`
            beam_value_next = False
            continue
        if name is None:
            if not (beam_value_next and not token.startswith("--")):
                check_other_option(pipeline, token, params, beam)
            beam_value_next = token.startswith("--") and "=" not in token
            args.append(token)  # a Beam / Dataflow option
            continue
        beam_value_next = False
        param = params[name]
        flag = flag_for(name, actions)
        if flag is None:
            raise TemplateParameterError(
                f"{name}: templates/{pipeline}/metadata.json names a parameter `efm {pipeline}` does not have"
            )
        if value is None or value == "":
            if param.get("isOptional", False):
                continue  # left blank in the console: the flag's default
            raise TemplateParameterError(f"{name}: a value is required")
        if name in switches:
            value = value.lower()  # TRUE / False / true: the same switch
        check_value(param, value)
        if name in switches:
            if value == TRUE:
                args.append(flag)
            continue
        args.append(f"{flag}={value}")
    return args


def beam_option_names() -> set[str]:
    """Every flag Beam's PipelineOptions (and its registered subclasses) define, aliases included."""
    from pipelines.common import beam_flags

    return beam_flags()


def check_other_option(pipeline: str, token: str, params: dict, beam: set[str]) -> None:
    """A token that is not a template parameter must be a Beam option (what the launcher adds);
    anything else is a misspelt or unknown parameter, refused naming it (never dropped)."""
    if not token.startswith("--"):
        raise TemplateParameterError(
            f"{token}: not a --parameter=value; template parameters are given as --name=value"
        )
    name, _, value = token[2:].partition("=")
    if name in params or name.replace("-", "_") in beam:
        return
    from pipelines import tuning  # a knob that was a parameter of its own: where it went

    if f"--{name.replace('_', '-')}" in tuning.MOVED.get(pipeline, {}):
        raise TemplateParameterError(
            f"{name}: moved into the tuning parameter: pass --tuning={name}={value or '...'} "
            "(docs/tuning.md)"
        )
    close = difflib.get_close_matches(name, list(params), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise TemplateParameterError(
        f"{name}: not a parameter of the efm-{pipeline} template; {hint}its parameters are {', '.join(params)}"
    )


def environment_note(fields: Sequence[str]) -> str:
    """The one note line for the runtime-environment fields the launcher passed and efm dropped."""
    return (
        f"{', '.join(dict.fromkeys(fields))}: set by Dataflow's flex template launcher from the launch "
        "request (its runtime environment), not Beam options; not used by efm, not passed to the pipeline"
    )


def worker_dependencies(args: Sequence[str]) -> list[str]:
    """Beam options that make workers without the template's image install the tested versions."""
    given = {token[2:].partition("=")[0] for token in args if token.startswith("--")}
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    runner = (
        PipelineOptions(list(args)).view_as(StandardOptions).runner
    )  # Beam's own reading of --runner
    if runner in (
        None,
        "DirectRunner",
        "FnApiRunner",
        "PrismRunner",
        "BundleBasedDirectRunner",
        "SwitchingDirectRunner",
    ):
        return []  # runs here, in this image
    if given & {"sdk_container_image", "setup_file", "requirements_file"}:
        return []  # the image has everything (nothing staged), or the caller chose
    return [
        f"--setup_file={os.path.join(REPO, 'setup.py')}",
        f"--requirements_file={os.path.join(REPO, 'constraints.txt')}",
        "--requirements_cache=skip",
    ]  # workers pip-install the pins; no download at launch


def launch(pipeline: str, argv: Sequence[str] | None = None) -> int:
    """The flex template entry point: translate, then run the pipeline (exit status 2 on bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    dropped: list[str] = []
    try:
        args = to_pipeline_args(pipeline, argv, dropped)
        args += worker_dependencies(args)
    except TemplateParameterError as exc:
        print(f"efm {pipeline} (flex template): error: {exc}", file=sys.stderr)
        return 2
    if dropped:
        print(f"efm {pipeline} (flex template): note: {environment_note(dropped)}", file=sys.stderr)
    return importlib.import_module(f"pipelines.{pipeline}").run(args)
