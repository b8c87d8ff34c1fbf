"""efm's own errors: each carries the one line a user reads and the exit status of the command.

Every error efm raises on purpose derives from `EfmError`. `pipelines/failures.py` finds the first
one in an exception's chain (`__cause__` / `__context__`) by type and prints its `line()`; it needs
no knowledge of the subclasses. An `EfmError` rebuilt from its class and its message is the same
error (`__reduce__`), so it crosses a pickle, and `from_text` rebuilds one from the text a worker
in another process hands back (see `pipelines/failures.py` for that one text boundary).
"""

from __future__ import annotations

EXIT_RUNTIME, EXIT_INPUT = 1, 2


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type when it has no message): for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def strip_beam_step(text: str) -> str:
    """First line, without Beam's " [while running '<step>']" suffix nor a final full stop (a
    clause follows it in the failure line)."""
    text = text.strip()
    line = text.splitlines()[0] if text else text
    step = line.rfind(" [while running '")
    if step >= 0 and line.endswith("']"):
        line = line[:step]
    return line.rstrip().rstrip(".")


class EfmError(Exception):
    """An error efm raises on purpose: its message is written for the user.

    `exit_status`: the command's exit status (1: a runtime failure; 2: bad input, refused before
    anything is written). `decisive`: the line stands whatever else the exception's chain holds.
    `line()`: the one line printed after `efm <cmd>: error: `; it depends only on `str(self)`, so
    an error rebuilt from its message (`from_text`) prints the same line.
    """

    exit_status = EXIT_RUNTIME
    decisive = False

    def line(self) -> str:
        return strip_beam_step(str(self))

    def __reduce__(self):
        return _rebuild, (type(self), str(self)), self.__dict__ or None

    @classmethod
    def from_text(cls, text: str) -> EfmError:
        """The error whose message is `text`, without running the subclass's own constructor."""
        return _rebuild(cls, text)


def _rebuild(cls: type[EfmError], text: str) -> EfmError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, text)
    return exc


def registry() -> dict[str, type[EfmError]]:
    """Every EfmError subclass defined so far, by class name (the name a traceback's last line
    shows). The modules that define them are imported by whoever raises them."""
    found, todo = {}, [EfmError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


class InputError(EfmError, ValueError):
    """Bad input detected before any work starts.

    `flag` names the command-line flag at fault (e.g. "--bbox"); the message says what
    is wrong and how to fix it. The CLI prints `efm <cmd>: error: <flag>: <message>`.
    """

    exit_status = EXIT_INPUT

    def __init__(self, flag: str, message: str):
        self.flag = flag
        super().__init__(f"{flag}: {message}" if flag else message)


class CredentialsError(InputError):
    """No usable Earth Engine credentials."""

    def __init__(self, detail: str = ""):
        how = (
            "no Earth Engine credentials found; run `gcloud auth application-default login "
            "--scopes=https://www.googleapis.com/auth/earthengine,https://www.googleapis.com/auth/cloud-platform` "
            "or set EFM_EE_ACCESS_TOKEN=$(gcloud auth print-access-token)"
        )
        # not a flag's fault (the project is --tuning ee_project): the line names what is missing
        super().__init__("credentials", f"{how} ({detail})" if detail else how)
