"""What every pipeline entry point shares: flags, Beam options, errors, the run summary."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)

from pipelines import beam_args, failures, tuning
from transforms.core.errors import InputError
from transforms.storage import places

LOCAL_RUNNERS = {
    None,
    "DirectRunner",
    "FnApiRunner",
    "BundleBasedDirectRunner",
    "SwitchingDirectRunner",
    "PrismRunner",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are efm's one line (`--flag: what`), not a usage block."""

    def error(self, message: str):
        match = re.match(r"argument (--[\w-]+)(?:/\S+)?: (.*)", message)
        if match:
            raise InputError(match.group(1), f"{match.group(2)} (see {self.prog} --help)")
        raise InputError("", f"{message} (see {self.prog} --help)")


def make_parser(prog: str, description: str, beam_options: bool = True) -> argparse.ArgumentParser:
    """beam_options=False: a command that takes only its own flags (no Beam options to pass on)."""
    parser = _Parser(
        prog=prog,
        description=description,
        allow_abbrev=False,  # an abbreviation must not swallow a Beam flag
        # helps start at column 32: `efm <cmd> --help` fits one screen (tests/test_surface.py)
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=32),
        epilog="Any other flag is passed to Beam's PipelineOptions (e.g. --runner, --direct_num_workers, "
        "--temp_location, --project, --region for Dataflow)."
        if beam_options
        else None,
    )
    _shared(
        parser.add_argument(
            "--verbose",
            action="store_true",
            help="on failure, print the full trace and the run's log on stderr "
            "(otherwise: one line, the trace in a log file)",
        )
    )
    return parser


# The run-control flags: defined here once, with one meaning in every command that takes them
# (the help names what the command writes); and --tuning (pipelines/tuning.add_flag: one syntax,
# each command's own keys). tests/test_surface.py counts them once in the total.
SHARED_FLAGS = ("--verbose", "--resume", "--overwrite", "--dry-run", "--tuning")


def _shared(action: argparse.Action) -> argparse.Action:
    action.efm_shared = True  # type: ignore[attr-defined]
    return action


def is_shared(action: argparse.Action) -> bool:
    """An option defined by this module's run-control helpers (not a command's own)."""
    return getattr(action, "efm_shared", False)


def add_overwrite(container, what: str = "an existing output") -> argparse.Action:
    """--overwrite: replace what the command wrote before (only a path it recognises as its own)."""
    return _shared(
        container.add_argument("--overwrite", action="store_true", help=f"replace {what}")
    )


def add_resume(container, what: str) -> argparse.Action:
    """--resume: finish an interrupted run into the same place, doing only what is missing."""
    return _shared(
        container.add_argument(
            "--resume", action="store_true", help=f"finish an interrupted run: {what}"
        )
    )


def add_dry_run(container, what: str, beam_spelling: bool = False) -> argparse.Action:
    """--dry-run: check every input and print the plan; write nothing. beam_spelling: `--dry_run`
    means the same (otherwise Beam's test option of that name is refused, see split_args)."""
    names = ("--dry-run", "--dry_run") if beam_spelling else ("--dry-run",)
    return _shared(container.add_argument(*names, dest="dry_run", action="store_true", help=what))


def own_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """For a command that runs no Beam pipeline (train, export): its own flags only, anything else refused."""
    argv = _attach_negative_values(parser, argv)
    tuning.refuse_moved(parser, argv)
    args = parser.parse_args(argv)
    tuning.apply(parser, args)
    failures.note_args(parser, args)
    return args


def split_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, PipelineOptions]:
    """Our flags -> namespace; the rest -> Beam options, refusing flags neither side knows."""
    attached = _attach_negative_values(parser, argv)
    tuning.refuse_moved(parser, attached)
    args, rest = parser.parse_known_args(attached)
    _refuse_beam_dry_run(parser, rest)
    beam_args.check_values(rest)
    if not os.environ.get(
        FLEX_LAUNCHER_ENV
    ):  # the launcher writes argv itself, with options of its own
        beam_args.refuse_stray_words(argv if argv is not None else sys.argv[1:], rest, parser)
    options = PipelineOptions(rest)
    known = beam_args.option_names() | beam_flags()  # dests and every alias the launcher may pass
    for token in rest:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0]
            # Inside Dataflow's flex template launcher too: templates/flex_launcher.py passes Beam's
            # options as they are and drops the launch request's runtime-environment fields, so an
            # unknown name that reaches here is a mistake there as well.
            if name.replace("-", "_") not in known:
                raise InputError(
                    f"--{name}",
                    f"unknown flag: not an option of `{parser.prog}` nor of Beam (see --help)",
                )
    beam_args.check_runner(runner_name(options))
    tuning.apply(parser, args)
    failures.note_args(parser, args)
    return args, options


def beam_flags() -> set[str]:
    """Every flag name Beam's options define, aliases included (`no_use_public_ips`, `worker_machine_type`):
    option *names* alone would refuse flags Dataflow's launcher passes."""
    flags: set[str] = set()

    def collect(parser: argparse.ArgumentParser) -> None:
        flags.update(
            s[2:] for action in parser._actions for s in action.option_strings if s.startswith("--")
        )

    PipelineOptions([]).get_all_options(add_extra_args_fn=collect)
    return flags


def _refuse_beam_dry_run(parser: argparse.ArgumentParser, rest: list[str]) -> None:
    """A command without --dry-run of its own: Beam would take `--dry-run`/`--dry_run` as its test option and run the job."""
    for token in rest:
        flag = token.split("=", 1)[0]
        if flag in ("--dry-run", "--dry_run"):
            if any(action.dest == "dry_run" for action in parser._actions):
                raise InputError(
                    flag,
                    f"Beam's --dry_run test option would run the job anyway; `{parser.prog}`'s "
                    "own is --dry-run (with a hyphen, no value)",
                )
            raise InputError(
                flag,
                f"`{parser.prog}` has no dry run (Beam's --dry_run test option would run the job anyway); "
                "`efm extract --dry-run` plans an extraction",
            )


def _attach_negative_values(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> list[str]:
    """`--bbox -122.5,37.7,...` -> `--bbox=-122.5,37.7,...`: argparse would take the value for a flag."""
    argv = list(sys.argv[1:] if argv is None else argv)
    takes_value = {
        flag
        for action in parser._actions
        if action.nargs is None and action.option_strings
        for flag in action.option_strings
    }
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in takes_value and i + 1 < len(argv) and re.match(r"-\d", argv[i + 1]):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def runner_name(options: PipelineOptions) -> str | None:
    return options.view_as(StandardOptions).runner


def local_workers(options: PipelineOptions) -> int | None:
    """Worker processes of a local runner, or None for a distributed runner."""
    if runner_name(options) not in LOCAL_RUNNERS:
        return None
    return max(1, options.view_as(DirectOptions).direct_num_workers or 1)


def worker_processes(options: PipelineOptions) -> bool:
    """A local runner whose workers are processes of their own (`multi_processing`)."""
    return (
        runner_name(options) in LOCAL_RUNNERS
        and options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    )


IN_PROCESS_RUNNERS = {None, "DirectRunner", "FnApiRunner", "SwitchingDirectRunner"}


def single_local_worker(options: PipelineOptions) -> bool:
    """One in-process worker (the default local run): a Reshuffle there spreads nothing and costs ~0.2 CPU s."""
    return (
        runner_name(options) in IN_PROCESS_RUNNERS
        and options.view_as(DirectOptions).direct_num_workers == 1
    )


def run(
    prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None
) -> int:
    """Run an entry point. Every failure is one line on stderr (see pipelines/failures.py): bad input
    exits 2, a runtime failure 1 (the trace in a log file, and the --resume command when a store is
    left unfinished), Ctrl-C 130."""
    # Dataflow's "Created job with id: [...]" and console-URL lines: people read them, and Airflow's
    # Beam operator finds the job id in them (to link and wait on the job).
    logging.getLogger("apache_beam.runners.dataflow.internal.apiclient").setLevel(logging.INFO)
    with failures.session(prog, argv) as state:
        try:
            status = main(argv)
            state.settled = True  # done: a Ctrl-C now changes nothing (pipelines/interrupts.py)
            return status
        except JobSubmitted as exc:
            state.settled = True
            print(f"{prog}: {exc}")
            return 0
        except (
            Exception,
            KeyboardInterrupt,
        ) as exc:  # SystemExit (argparse's own errors, exit 2) passes
            state.settled = True  # first, before any call: nothing interrupts the report
            return failures.report(state, exc)


def print_summary(title: str, rows: list[tuple[str, object]], stream=None) -> None:
    stream = stream or sys.stdout
    width = max(len(name) for name, _ in rows)
    print(f"{title}", file=stream)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}", file=stream)


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


class JobSubmitted(Exception):
    """The pipeline went to Dataflow and this process must not wait for it (a flex template launch)."""


FLEX_LAUNCHER_ENV = (
    "FLEX_TEMPLATE_PYTHON_PY_FILE"  # set in a flex template's image (templates/Dockerfile)
)


def detached(options: PipelineOptions) -> bool:
    """Submit and return without waiting: when writing a template (--template_location), or when run by
    the flex template launcher, whose job only starts once this process has exited."""
    if runner_name(options) in LOCAL_RUNNERS:
        return False
    return (
        bool(options.view_as(GoogleCloudOptions).template_location)
        or FLEX_LAUNCHER_ENV in os.environ
    )


def run_pipeline(build: Callable[[beam.Pipeline], None], options: PipelineOptions):
    """Build and run, waiting for the end; returns the PipelineResult.

    Raises JobSubmitted instead of waiting when `detached(options)`: the run summary (counters)
    is then in the Dataflow job's page, not on this process's stdout.
    """
    if failures.quiet() and worker_processes(options):  # their printed tracebacks: to the log
        setup = options.view_as(SetupOptions)
        setup.beam_plugins = [*(setup.beam_plugins or []), "transforms.core.beam_worker"]
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    with failures.pipeline_running():
        result = pipeline.run()
        if not detached(options):
            result.wait_until_finish()
    if detached(options):
        template = options.view_as(GoogleCloudOptions).template_location
        if template:
            raise JobSubmitted(
                f"job graph written to {template}; Dataflow starts the job from it (this process does not wait)"
            )
        job_id = getattr(result, "job_id", lambda: None)()
        raise JobSubmitted(f"submitted Dataflow job {job_id}; this process does not wait for it")
    return result


def check_writable(path: str, flag: str = "--output") -> None:
    """A local output's folder must exist (export makes none) and take a new file."""
    if "://" in path:
        return  # buckets: permission errors surface at write time, as one line
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(flag, f"the folder {folder} does not exist; create it or write elsewhere")
    places.check_local_writable(path, flag)
