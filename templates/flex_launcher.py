"""What a flex template's entry file runs: template parameters -> `efm <pipeline>` flags -> the pipeline.

Dataflow's launcher runs FLEX_TEMPLATE_PYTHON_PY_FILE (templates/<pipeline>/main.py) as

    python main.py --<parameter>=<value> ... --runner=DataflowRunner --project=... --region=... (Beam options)

Template parameter names use underscores (`chunk_size`), the way Dataflow, gcloud and Beam name
options; efm's flags use dashes (`--chunk-size`). This module, shared by the three entry files:

1. checks each template parameter against its metadata.json regexes, so the same values fail
   here as in Dataflow's own launch-time check (and when the entry file is run by hand);
2. turns `--chunk_size=512` into `--chunk-size=512`, and a boolean `--overwrite=true` into
   `--overwrite` (`false` drops it); every other token (Beam's options) passes as it is;
3. runs `pipelines.<pipeline>.run`, whose checks (area, years, credentials, Earth Engine reachable,
   output bucket exists, model loads, ...) all happen here, before any worker starts. On Dataflow
   the launcher submits the job and returns without waiting (pipelines.common.detached).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from typing import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
PIPELINES = ("extract", "classify", "sample")
TRUE, FALSE = "true", "false"


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
    """`--chunk-size` -> its argparse action, for every long flag of an efm parser."""
    return {s: a for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


def flag_for(name: str, actions: dict[str, argparse.Action]) -> str | None:
    """The efm flag a template parameter stands for: `chunk_size` -> `--chunk-size` (None: not efm's)."""
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
                f"(must match {pattern}); e.g. {example}")


def split_tokens(argv: Sequence[str], names: set[str]) -> list[tuple[str, str | None, str]]:
    """Tokens -> (name, value, original) for `--name=value` / `--name value` of template parameters;
    other tokens come back as (None, None, token)."""
    out: list[tuple[str | None, str | None, str]] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, has_value, value = token[2:].partition("=") if token.startswith("--") else ("", False, "")
        if name in names:
            if not has_value:  # `--name value`, as a person may type it
                value = None
                if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                    i += 1
                    value = tokens[i]
            out.append((name, value, token))
        else:
            out.append((None, None, token))
        i += 1
    return out


def to_pipeline_args(pipeline: str, argv: Sequence[str]) -> list[str]:
    """Template launch arguments -> the argv `pipelines.<pipeline>` takes (see the module doc)."""
    params = parameters(pipeline)
    actions = flag_actions(importlib.import_module(f"pipelines.{pipeline}").build_parser())
    args: list[str] = []
    for name, value, token in split_tokens(argv, set(params)):
        if name is None:
            args.append(token)  # a Beam / Dataflow option
            continue
        param = params[name]
        flag = flag_for(name, actions)
        if flag is None:
            raise TemplateParameterError(f"{name}: templates/{pipeline}/metadata.json names a parameter `efm {pipeline}` does not have")
        if value is None or value == "":
            if param.get("isOptional", False):
                continue  # left blank in the console: the flag's default
            raise TemplateParameterError(f"{name}: a value is required")
        check_value(param, value)
        if isinstance(actions[flag], argparse._StoreTrueAction):
            if value.lower() == TRUE:
                args.append(flag)
            continue
        args.append(f"{flag}={value}")
    return args


def launch(pipeline: str, argv: Sequence[str] | None = None) -> int:
    """The flex template entry point: translate, then run the pipeline (exit status 2 on bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = to_pipeline_args(pipeline, argv)
    except TemplateParameterError as exc:
        print(f"efm {pipeline} (flex template): error: {exc}", file=sys.stderr)
        return 2
    return importlib.import_module(f"pipelines.{pipeline}").run(args)
