"""How a command ends when it fails: one line on stderr, the full trace in a log file, and the
command that finishes the job.

`common.run` calls `session()` around an entry point and `report()` on any exception. The one
line names what went wrong; the log file (`efm-<cmd>-<time>-<pid>.log` in $EFM_LOG_DIR or the
temp folder) holds the traceback and the log records of the run; `--verbose` prints both on
stderr instead. A failure after an output store exists ends with the `--resume` command built
from the command's own argv, so the user can copy it. A Ctrl-C is one KeyboardInterrupt, reported
as one line and exit 130; later ones change nothing (pipelines/interrupts.py).

The line comes from the exception's TYPE (`classify`): efm's own errors derive from
`transforms.core.errors.EfmError`, which carries the line and the exit status; the chain Beam
wraps around them (`__cause__` / `__context__`) is walked for the first EfmError, OSError or
MemoryError. A runner whose workers are other processes (DirectRunner's multi_processing) hands
back only the text of the worker's traceback: no exception object crosses, so pickling efm's
errors (they do pickle whole) cannot help there. `named_in_text` is the one place that reads
text: the last `[<module>.]<Name>: <message>` line whose Name is an EfmError subclass (from the
registry of subclasses, not a list here), a named OSError or MemoryError; the subclass rebuilt
from the message prints the same line as the original would.

No file descriptor is redirected. The log file is written from the session's buffer of log
records (`logging`). Beam's SDK harness prints a failed bundle's traceback on `sys.stderr`: while
a pipeline runs (`pipeline_running`), and in local worker processes (a `--beam_plugins` module,
transforms/core/beam_worker.py), such a write goes to the logger `efm.stderr` (the log), while
a step's own output still reaches the terminal (transforms/core/run_log.py).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import logging
import os
import shlex
import sys
import tempfile
import traceback
from collections.abc import Sequence

from pipelines import interrupts
from transforms.core import errors, run_log
from transforms.core.errors import EfmError, first_line, strip_beam_step

EXIT_INPUT, EXIT_RUNTIME, EXIT_INTERRUPTED = errors.EXIT_INPUT, errors.EXIT_RUNTIME, 130
LOG_DIR_ENV = "EFM_LOG_DIR"
_BUFFERED_RECORDS = 5000  # the last records of a run go into the log file on failure


@dataclasses.dataclass
class Session:
    prog: str
    argv: list[str]
    verbose: bool
    records: collections.deque
    handler: logging.Handler | None = None
    has_resume: bool = False
    output: str | None = None
    output_existed: bool | None = None
    removed_before: int = 0  # outputs.removed_paths() when the session began
    # The run's outcome is decided (its report begins, or it is done): a Ctrl-C changes nothing now.
    # `common.run` sets it with a plain attribute store, which no signal handler can interrupt.
    settled: bool = False


_sessions: list[Session] = []


def current() -> Session | None:
    return _sessions[-1] if _sessions else None


_UNCLOSED = ("Unclosed client session", "Unclosed connector")


class _TerminalFilter(logging.Filter):
    """Without --verbose: warnings as one line each; a Beam bundle's failure (with its traceback) is
    left to the log file, since `report` prints it as one line at the end."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("apache_beam.runners.dataflow.internal.apiclient"):
            return True  # the job id and console URL: people and Airflow read them
        if record.levelno < logging.WARNING:
            return False
        if record.name == "asyncio" and str(record.msg).startswith(_UNCLOSED):
            # aiohttp's notice, at garbage collection, of a session an fsspec filesystem cache
            # left open: no error of the run, and it would break its one line (kept in the log)
            return False
        return not (record.levelno >= logging.ERROR and record.name.startswith("apache_beam"))


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage().strip()
        return f"{record.levelname} {record.name}: {text.splitlines()[0] if text else ''}"


class _Buffer(logging.Handler):
    def __init__(self, records: collections.deque):
        super().__init__(logging.INFO)
        self.records = records
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(self.format(record))
        except Exception:  # a record that cannot be formatted must not break the run
            pass


@contextlib.contextmanager
def session(prog: str, argv: Sequence[str] | None):
    argv_given = argv
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    records: collections.deque = collections.deque(maxlen=_BUFFERED_RECORDS)
    root = logging.getLogger()
    handlers = [_Buffer(records)]
    terminal = logging.StreamHandler(sys.stderr)
    if verbose:
        terminal.setLevel(logging.INFO)
        terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        terminal.addFilter(_TerminalFilter())
        terminal.setFormatter(_OneLineFormatter())
    handlers.append(terminal)
    from transforms.storage import outputs

    state = Session(prog, argv, verbose, records, terminal)
    state.removed_before = len(outputs.removed_paths())
    old_level = root.level
    outer = current()
    if outer is None and argv_given is None:  # this process's own command line
        interrupts.own_process()
    previous = interrupts.catch(state) if outer is None else None  # Ctrl-C: pipelines/interrupts.py
    if (
        outer is not None and outer.handler is not None
    ):  # a command run by another (the demo): its lines go where it says
        root.removeHandler(outer.handler)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(logging.INFO)
    _sessions.append(state)
    try:
        yield state
    finally:
        _sessions.pop()
        for h in handlers:
            root.removeHandler(h)
        if outer is not None and outer.handler is not None:
            root.addHandler(outer.handler)
        root.setLevel(old_level)
        if outer is None:
            interrupts.release(previous)


def note_args(parser, args) -> None:
    """Called by split_args: what the resume advice needs to know about this command."""
    state = current()
    if state is None:
        return
    state.has_resume = any(action.dest == "resume" for action in parser._actions)
    state.output = getattr(args, "output", None)
    if state.output and not state.has_resume:
        state.output_existed = _exists(state.output)


def quiet() -> bool:
    """Does a traceback printed while this command runs belong in the log (not --verbose)?"""
    state = current()
    return state is not None and not state.verbose


@contextlib.contextmanager
def pipeline_running():
    """While a pipeline runs, a traceback Beam prints on stderr goes to the log, not the terminal
    (transforms/core/run_log.py); with --verbose everything stays on the terminal."""
    if not quiet():
        yield
        return
    with run_log.tracebacks_to_log():
        yield


def _exists(path: str) -> bool | None:
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(path)
        return fs.exists(root)
    except Exception:  # the check is advice only
        return None


# ---------------------------------------------------------------- turning an exception into one line


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        out.append(exc)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return out


def classify(exc: BaseException) -> tuple[int, str]:
    """(exit status, one line) for any exception, by the types in its chain (what Beam wrapped
    around ours): a Ctrl-C anywhere; else a decisive EfmError anywhere; else the first EfmError,
    OSError or MemoryError; else what a worker in another process named in its text."""
    chain = _chain(exc)
    if any(isinstance(e, KeyboardInterrupt) for e in chain):
        return EXIT_INTERRUPTED, "interrupted (Ctrl-C)"
    decisive = [e for e in chain if isinstance(e, EfmError) and e.decisive]
    for e in decisive + chain:
        if isinstance(e, EfmError):
            return e.exit_status, e.line()
        if isinstance(e, OSError):
            return EXIT_RUNTIME, _os_message(e)
        if isinstance(e, MemoryError):
            return EXIT_RUNTIME, _OUT_OF_MEMORY
    named = named_in_text(str(exc))
    if named is not None:
        name, text = named
        if name in errors.registry():
            found = errors.registry()[name].from_text(text)
            return found.exit_status, found.line()
        if name == "MemoryError":
            return EXIT_RUNTIME, _OUT_OF_MEMORY
        return EXIT_RUNTIME, f"{_OS_WORDS.get(name, 'file system error')}: {strip_beam_step(text)}"
    return (
        EXIT_RUNTIME,
        f"unexpected {type(exc).__name__}: {strip_beam_step(first_line(exc))[:300]}",
    )


def named_in_text(text: str) -> tuple[str, str] | None:
    """The one place efm reads an error out of text. A runner whose workers run in other processes
    (DirectRunner's multi_processing, a portable runner) hands back a failed bundle only as the
    text of the worker's traceback, inside a RuntimeError: no exception object crosses. The last
    line of that text of the form `[<module>.]<Name>: <message>` whose Name is an EfmError subclass
    (transforms.core.errors.registry(): efm's errors, known once their module is imported, as the
    command that built the pipeline has done), an OSError named in `_OS_WORDS` or MemoryError:
    (Name, message), or None."""
    known = {*errors.registry(), *_OS_WORDS, "MemoryError"}
    found = None
    for line in text.splitlines():
        head, sep, message = line.partition(": ")
        if not (sep and message.strip()) or head.rsplit(".", 1)[-1] not in known:
            continue
        if all(part.isidentifier() for part in head.split(".")):
            found = head.rsplit(".", 1)[-1], message
    return found


_OUT_OF_MEMORY = (
    "out of memory; lower chunk_size (efm extract --tuning chunk_size=...) or run on workers "
    "with more memory"
)
_OS_WORDS = {  # the OSErrors a failure line names in words (any other OSError: its own name)
    "PermissionError": "permission denied",
    "FileNotFoundError": "not found",
    "IsADirectoryError": "is a folder",
    "NotADirectoryError": "not a folder",
    "FileExistsError": "already exists",
    "OSError": "file system error",
}


def _os_message(exc: OSError) -> str:
    name = type(exc).__name__
    if not getattr(exc, "filename", None):  # not a file: e.g. a connection that broke
        return f"{name}: {strip_beam_step(first_line(exc))[:300]}"
    what = exc.strerror or first_line(exc)
    return (
        f"{_OS_WORDS.get(name, 'file system error')}: {exc.filename} ({what}); "
        "check that the path is right and writable, then re-run"
    )


# ---------------------------------------------------------------- the line, the log, the next command


def report(state: Session, exc: BaseException) -> int:
    status, message = classify(exc)
    if status == EXIT_INPUT:  # bad input: the message names the flag and the fix
        print(f"{state.prog}: error: {message}", file=sys.stderr)
        return status
    log = _write_log(state, exc)
    if state.verbose:
        traceback.print_exception(exc, file=sys.stderr)
    where = f"full trace in {log}" if log else "run with --verbose for the full trace"
    print(f"{state.prog}: error: {message} ({where}); {next_step(state)}", file=sys.stderr)
    return status


def next_step(state: Session) -> str:
    """What to run next: the --resume command when an unfinished store is there, else the same command.

    After an --overwrite removed the old product, the line says so: nothing of it remains.
    """
    argv = [a for a in state.argv if a not in ("--overwrite", "--resume", "--verbose")]
    removed = _removed_by(state)
    if state.has_resume and state.output and _unfinished(state.output):
        return (
            f"{'the old store was removed (nothing of it remains) and ' if removed else ''}"
            f"{state.output} is incomplete; finish it with: {_command(state.prog, argv + ['--resume'])}"
        )
    if removed:
        left = (
            "nothing is there now"
            if not _exists(state.output)
            else "what this run left there is efm's and --overwrite replaces it"
        )
        return f"the old {state.output} was removed (nothing of it remains; {left}); re-run: {_command(state.prog, state.argv)}"
    if (
        not state.has_resume
        and state.output
        and state.output_existed is False
        and _exists(state.output)
    ):
        return f"to replace what it left at {state.output}, re-run: {_command(state.prog, argv + ['--overwrite'])}"
    return f"nothing to resume; re-run: {_command(state.prog, state.argv)}"


def _removed_by(state: Session) -> bool:
    """Did this run's --overwrite remove the product at its output?"""
    if not state.output:
        return False
    from transforms.storage import outputs

    try:
        real = outputs.resolve(state.output)
    except Exception:  # advice only
        return False
    return real in outputs.removed_paths()[state.removed_before :]


def _unfinished(path: str) -> bool:
    from transforms.storage import collection

    return collection.unfinished(path)


def _command(prog: str, argv: list[str]) -> str:
    return shlex.join(prog.split() + argv)


def _write_log(state: Session, exc: BaseException) -> str | None:
    folder = os.environ.get(LOG_DIR_ENV) or tempfile.gettempdir()
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    path = os.path.join(folder, f"efm-{state.prog.split()[-1]}-{stamp}-{os.getpid()}.log")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"$ {_command(state.prog, state.argv)}\n\n")
            for line in state.records:
                f.write(line + "\n")
            f.write("\n")
            f.write("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return path
