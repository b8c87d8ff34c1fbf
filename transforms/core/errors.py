"""Errors a user can act on: one line, naming the flag and the fix."""


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type when it has no message): for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class InputError(ValueError):
    """Bad input detected before any work starts.

    `flag` names the command-line flag at fault (e.g. "--bbox"); the message says what
    is wrong and how to fix it. The CLI prints `efm <cmd>: error: <flag>: <message>`.
    """

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
        super().__init__("--ee-project", f"{how} ({detail})" if detail else how)
