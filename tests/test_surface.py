"""The command-line surface (issue 20 item 4), counted from the parsers themselves.

A command's OWN flags = the options its parser defines, less -h/--help and less the run-control
flags it takes from pipelines/common.py (`add_overwrite`, `add_resume`, `add_dry_run` and
`make_parser`'s --verbose: defined there once, with one meaning in every command) and --tuning
(pipelines/tuning.add_flag: one syntax, each command's keys); `common.is_shared` tells them apart. Beam's options (passed through) are not counted. The TOTAL = the sum of the
commands' own flags + the shared flags, counted once. `classify` is another name for `predict`
(the same parser), so it is not counted twice. The table (all options and own, per command) is
printed: `pytest -s tests/test_surface.py`.

Target: every command's own flags <= 15 (held), total < 90 (held: TOTAL_NOW, so it cannot grow;
docs/tuning.md says how the count is made).
"""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

from pipelines import cli, cluster, common, extract_sizing, tuning, tuning_keys
from transforms.sources import earthengine
from transforms.storage import zarr_source

REPO = pathlib.Path(__file__).resolve().parents[1]
LIMIT = 15
TOTAL_TARGET = 90
TOTAL_NOW = 87  # issue 20 item 4: total < TOTAL_TARGET; it may not grow
SHARED = {"--verbose", "--resume", "--overwrite", "--dry-run", "--tuning"}
HELP_LINES = 50
COMMANDS = [name for name in cli.SUBCOMMANDS if name != "classify"]


def parser(name: str):
    return importlib.import_module(cli.SUBCOMMANDS[name][0]).build_parser()


def options(name: str) -> list:
    return [action for action in parser(name)._actions if action.option_strings]


def own_flags(name: str) -> list[str]:
    return [
        action.option_strings[0]
        for action in options(name)
        if action.dest != "help" and not common.is_shared(action)
    ]


def shared_flags(name: str) -> set[str]:
    return {action.option_strings[0] for action in options(name) if common.is_shared(action)}


def test_own_flags_per_command():
    counts = {name: own_flags(name) for name in COMMANDS}
    shared = set().union(*(shared_flags(name) for name in COMMANDS))
    print("\ncommand            options  own")
    for name, flags in counts.items():
        every = len([a for a in options(name) if a.dest != "help"])
        print(f"  {name:<17} {every:>7} {len(flags):>4}")
    own = sum(map(len, counts.values()))
    print(f"  {'(own, summed)':<17} {'':>7} {own:>4}")
    print(f"  {'(shared, once)':<17} {'':>7} {len(shared):>4}  {' '.join(sorted(shared))}")
    print(f"  {'(total)':<17} {'':>7} {own + len(shared):>4}  (target < {TOTAL_TARGET})")
    for name, flags in counts.items():
        assert len(flags) <= LIMIT, (name, flags)
    # the shared flags: the run-control ones and --tuning, one definition each
    assert shared == SHARED == set(common.SHARED_FLAGS)
    assert own + len(shared) <= TOTAL_NOW, (own, shared)


def test_a_shared_flag_is_defined_once_and_means_one_thing():
    """Every --overwrite/--resume/--dry-run a writing command takes comes from common.py's helpers."""
    for name in COMMANDS:
        for action in options(name):
            flag = action.option_strings[0]
            if flag in SHARED:
                assert common.is_shared(action), (name, flag)
            if common.is_shared(action) and flag != "--tuning":
                assert action.nargs == 0 and action.default is False, (name, flag)


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
    # (command, key) -> default: two commands may have a key of the same name (seed, points_crs,
    # colors, rgb), and a command's name may hold a hyphen (make-sample-data)
    rows = {
        (m.group(1), m.group(2)): m.group(3).strip()
        for m in re.finditer(r"^\| ([\w-]+) \| `(\w+)` \| ([^|]+) \|", table, re.M)
    }
    for command, keys in tuning.KEYS.items():
        for key in keys:
            assert (command, key.name) in rows, f"docs/tuning.md: no row for {command} {key.name}"
            default = rows[command, key.name]
            shown = (
                "efm chooses"
                if key.default is None
                else "none"
                if key.default == ""
                else f"`{key.default}`"
            )
            assert default.startswith(shown), (key.name, default)
    # the key's default is the one the code used when it was a flag
    defaults = {k.name: k.default for k in tuning_keys.EXTRACT}
    assert defaults["worker_memory_gb"] == extract_sizing.DEFAULT_WORKER_MEMORY_GB
    assert defaults["chunk_size"] == extract_sizing.DEFAULT_CHUNK_SIZE
    assert defaults["ee_project"] is None  # the credentials' project, as the flag's default
    assert defaults["collection"] == earthengine.DEFAULT_COLLECTION
    assert defaults["ee_api_url"] == earthengine.HIGH_VOLUME_URL
    assert {k.name: k.choices for k in tuning_keys.EXTRACT}["grid"] == zarr_source.GRIDS
    assert {k.name: k.default for k in tuning_keys.CLUSTER}[
        "sample_size"
    ] == cluster.DEFAULT_SAMPLE_SIZE
