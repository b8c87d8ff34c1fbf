"""The command-line surface (issue 20 item 4), counted from the parsers themselves.

Own flags of a command = the options its parser defines, less -h/--help and --verbose (every
command has both: they are efm's, not the command's) and less Beam's (passed through). `classify`
is another name for `predict` (the same parser), so it is not counted twice. The table is printed
(`pytest -s tests/test_surface.py`).
"""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

from pipelines import cli, extract_sizing, tuning

REPO = pathlib.Path(__file__).resolve().parents[1]
LIMIT = 15
# Still over the target (issue 20 item 4): pinned so they cannot grow, lowered as flags move.
OVER = {"extract": 23, "predict": 16}
HELP_LINES = 50
COMMANDS = [name for name in cli.SUBCOMMANDS if name != "classify"]


def parser(name: str):
    return importlib.import_module(cli.SUBCOMMANDS[name][0]).build_parser()


def own_flags(name: str) -> list[str]:
    return [
        action.option_strings[0]
        for action in parser(name)._actions
        if action.option_strings and action.dest not in ("help", "verbose")
    ]


def test_own_flags_per_command():
    counts = {name: own_flags(name) for name in COMMANDS}
    distinct = {flag for flags in counts.values() for flag in flags}
    print("\ncommand            own flags")
    for name, flags in counts.items():
        print(f"  {name:<17} {len(flags):>3}")
    print(f"  {'(sum)':<17} {sum(map(len, counts.values())):>3}")
    print(f"  {'(distinct names)':<17} {len(distinct):>3}")
    for name, flags in counts.items():
        assert len(flags) <= OVER.get(name, LIMIT), (name, flags)
    assert len(distinct) < 90, sorted(distinct)


def test_classify_is_predict_under_its_own_name():
    assert own_flags("classify") == own_flags("predict")
    assert parser("classify").prog == "efm classify" and parser("predict").prog == "efm predict"


@pytest.mark.parametrize("name", list(cli.SUBCOMMANDS))
def test_help_fits_one_screen(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = parser(name).format_help()
    assert len(text.splitlines()) <= HELP_LINES, text
    assert max(map(len, text.splitlines())) <= 100


def test_docs_list_every_tuning_key_with_its_default():
    table = (REPO / "docs" / "tuning.md").read_text()
    rows = {
        m.group(2): (m.group(1), m.group(3).strip())
        for m in re.finditer(r"^\| (\w+) \| `(\w+)` \| ([^|]+) \|", table, re.M)
    }
    for command, keys in tuning.KEYS.items():
        for key in keys:
            assert key.name in rows, f"docs/tuning.md: no row for {key.name}"
            where, default = rows[key.name]
            assert where == command
            shown = "efm chooses" if key.default is None else f"`{key.default}`"
            assert default.startswith(shown), (key.name, default)
    # the key's default is the one the code used when it was a flag
    assert dict((k.name, k.default) for k in tuning.EXTRACT)["worker_memory_gb"] == (
        extract_sizing.DEFAULT_WORKER_MEMORY_GB
    )
