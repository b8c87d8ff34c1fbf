"""The run summary a command prints, read back."""

from __future__ import annotations


def summary_values(out: str) -> dict[str, str]:
    """The run summary's `name  value` lines."""
    rows = [line.strip().split("  ", 1) for line in out.splitlines() if line.startswith("  ")]
    return {name.strip(): value.strip() for name, value in rows}
