"""How a command ends when it fails: one line on stderr, the full trace in a log file, and the
command that finishes the job.

`common.run` calls `session()` around an entry point and `report()` on any exception. The one
line names what went wrong; the log file (`efm-<cmd>-<time>-<pid>.log` in $EFM_LOG_DIR or the
temp folder) holds the traceback and the log records of the run; `--verbose` prints both on
stderr instead. A failure after an output store exists ends with the `--resume` command built
from the command's own argv, so the user can copy it. A Ctrl-C is one KeyboardInterrupt, reported
as one line and exit 130; later ones change nothing (pipelines/interrupts.py).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import io
import logging
import os
import re
import shlex
import sys
import tempfile
import traceback
from collections.abc import Sequence

from pipelines import interrupts
from transforms.core.errors import InputError, first_line

EXIT_INPUT, EXIT_RUNTIME, EXIT_INTERRUPTED = 2, 1, 130
LOG_DIR_ENV = "EFM_LOG_DIR"
_BUFFERED_RECORDS = 5000  # the last records of a run go into the log file on failure
# Exception names found in the text of a worker's failure (multi-process runners pass only text).
_NAMED = re.compile(
    r"^(?:[\w.]+\.)?(TileFetchError|DamagedStoreError|InputError|CredentialsError|PermissionError|FileNotFoundError|"
    r"IsADirectoryError|NotADirectoryError|FileExistsError|OSError|MemoryError): (.+)$",
    re.M,
)
_BEAM_STEP = re.compile(r"\s*\[while running '[^']*'\]\s*$")


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


@contextlib.contextmanager
def quiet_stderr():
    """Beam prints a failed bundle's traceback straight to stderr (sdk_worker.py), in this process
    and in worker subprocesses, which inherit file descriptor 2. While a pipeline runs, fd 2 goes
    to the log (only worker subprocesses write there directly), and sys.stderr passes everything
    on to the terminal except tracebacks, which go to the log too."""
    state = current()
    if state is None or state.verbose:
        yield
        return
    raw = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
    sys.stderr.flush()
    saved = os.dup(2)
    old_stderr = sys.stderr
    real_fd2 = _is_fd2(old_stderr)
    terminal = (
        os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
        if real_fd2
        else old_stderr
    )
    if real_fd2 and state.handler is not None:  # our own log lines still reach the terminal
        state.handler.setStream(terminal)
    sys.stderr = _NoTracebacks(terminal, raw)
    os.dup2(raw.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr = old_stderr
        raw.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if real_fd2:
            if state.handler is not None:
                state.handler.setStream(old_stderr)
            terminal.close()
        raw.seek(0)
        text = raw.read()
        raw.close()
        if text.strip():
            state.records.append("stderr of the run:\n" + text.rstrip())


class _NoTracebacks(io.TextIOBase):
    """sys.stderr while a pipeline runs: a write holding a traceback (and the newline print adds
    after it) goes to the log; anything else to the terminal."""

    def __init__(self, terminal, log):
        self.terminal, self.log, self._diverted = terminal, log, False

    def write(self, text: str) -> int:
        if "Traceback (most recent call last)" in text or (self._diverted and text == "\n"):
            self.log.write(text)
            self._diverted = text != "\n"
        else:
            self._diverted = False
            self.terminal.write(text)
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()

    def fileno(self) -> int:
        return self.terminal.fileno()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    @property
    def encoding(self):
        return getattr(self.terminal, "encoding", "utf-8")


def _is_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


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
    """(exit status, one-line message) for any exception, unwrapping what Beam wrapped around ours."""
    from transforms.sources.fetch import TileFetchError
    from transforms.storage.integrity import DamagedStoreError
    from transforms.storage.outputs import RemovalError

    chain = _chain(exc)
    if any(isinstance(e, KeyboardInterrupt) for e in chain):
        return EXIT_INTERRUPTED, "interrupted (Ctrl-C)"
    for e in chain:
        if isinstance(
            e, RemovalError
        ):  # an --overwrite's removal failed part-way: says what is left
            return EXIT_RUNTIME, str(e)
    for e in chain:
        if isinstance(e, InputError):
            return EXIT_INPUT, _strip(str(e))
        if isinstance(e, TileFetchError):
            return EXIT_RUNTIME, _fetch_message(first_line(e))
        if isinstance(e, DamagedStoreError):  # names the chunk and the repair
            return EXIT_RUNTIME, _strip(str(e))
        if isinstance(e, OSError):
            return EXIT_RUNTIME, _os_message(type(e).__name__, e)
        if isinstance(e, MemoryError):
            return (
                EXIT_RUNTIME,
                "out of memory; lower --chunk-size or run on workers with more memory",
            )
    matches = _NAMED.findall(str(exc))
    if matches:  # a worker in another process: only its traceback's text came back
        name, text = matches[-1]
        text = _strip(text)
        if name == "TileFetchError":
            return EXIT_RUNTIME, _fetch_message(text)
        if name in ("InputError", "CredentialsError"):
            return EXIT_INPUT, text
        if name == "DamagedStoreError":
            return EXIT_RUNTIME, text
        if name == "MemoryError":
            return (
                EXIT_RUNTIME,
                "out of memory; lower --chunk-size or run on workers with more memory",
            )
        return EXIT_RUNTIME, f"{_os_word(name)}: {text}"
    if type(exc).__module__.startswith(
        "pipelines."
    ):  # ours, written for the user (e.g. the demo's step failures)
        return EXIT_RUNTIME, str(exc).strip()
    return EXIT_RUNTIME, f"unexpected {type(exc).__name__}: {_strip(first_line(exc))[:300]}"


def _strip(text: str) -> str:
    """First line, without Beam's "[while running ...]" suffix nor a final full stop (a clause follows)."""
    return _BEAM_STEP.sub("", text.strip().splitlines()[0] if text.strip() else text).rstrip(".")


def _fetch_message(text: str) -> str:
    text = _strip(text)
    if "HTTP 429" in text:
        return (
            f"quota exhausted: {text}; the service still refused after every retry: try later, or lower "
            "--max-concurrent-requests / --max-requests-per-second, or raise --max-retries"
        )
    return f"a request kept failing: {text}"


def _os_word(name: str) -> str:
    return {
        "PermissionError": "permission denied",
        "FileNotFoundError": "not found",
        "IsADirectoryError": "is a folder",
        "NotADirectoryError": "not a folder",
        "FileExistsError": "already exists",
    }.get(name, "file system error")


def _os_message(name: str, exc: OSError) -> str:
    if not getattr(
        exc, "filename", None
    ):  # not a file: e.g. a connection that broke (requests' errors are OSErrors)
        return f"{name}: {_strip(first_line(exc))[:300]}"
    what = exc.strerror or first_line(exc)
    return f"{_os_word(name)}: {exc.filename} ({what}); check that the path is right and writable, then re-run"


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
    if state.has_resume and state.output and _incomplete_store(state.output):
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


def _command(prog: str, argv: list[str]) -> str:
    return shlex.join(prog.split() + argv)


def _incomplete_store(path: str) -> bool:
    """An unfinished store, or a collection with a member missing or unfinished."""
    try:
        import zarr

        from transforms.storage import collection, store

        if collection.is_collection(path):
            coll = collection.read(path, check_stores=False)
            for member in coll.members:
                try:
                    group = zarr.open_group(coll.path_of(member), mode="r")
                except Exception:  # not written yet
                    return True
                if group.attrs.get(store.STATUS_ATTR) != "complete":
                    return True
            return False
        group = zarr.open_group(path, mode="r")
        return group.attrs.get(store.STATUS_ATTR) == "incomplete"
    except Exception:  # no store, or not ours: nothing to resume
        return False


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
