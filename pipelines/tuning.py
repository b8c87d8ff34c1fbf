"""Each command's tuning keys (`--tuning KEY=VALUE,...`; docs/tuning.md lists them), and the flags
they replace: an old knob flag is refused with one line saying where it went, so a script that
still passes it does not silently run with the default.

The keys (pipelines/tuning_keys.py) land on the parsed arguments under their own names
(`args.max_retries`), so the code after parsing reads them as it read the flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipelines.tuning_keys import KEYS
from transforms.core import tuning
from transforms.core.errors import InputError

# the flags the keys replace (refused with a hint): command -> {old flag: key}; a key is named
# after the flag it replaced (`--chunk-size` -> chunk_size)
MOVED: dict[str, dict[str, str]] = {
    command: {f"--{key.name.replace('_', '-')}": key.name for key in keys}
    for command, keys in KEYS.items()
}


def add_flag(parser: argparse.ArgumentParser, command: str) -> None:
    """`--tuning` on a command's parser (its keys are recorded on the parser for `apply`)."""
    keys = KEYS[command]
    action = parser.add_argument(
        "--tuning",
        action="append",
        metavar="KEY=VALUE,...",
        help=f"rarely needed knobs, or @file.toml: {', '.join(k.name for k in keys)} "
        "(docs/tuning.md)",
    )
    # one flag with one syntax in every command (its keys differ): counted once in the surface,
    # like pipelines/common.py's run-control flags (the same mark; common imports this module)
    action.efm_shared = True  # type: ignore[attr-defined]
    parser.set_defaults(_efm_tuning_command=command)


def command_of(parser: argparse.ArgumentParser) -> str | None:
    return parser.get_default("_efm_tuning_command")


def refuse_moved(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """An old knob flag (`--max-retries 3`): one line naming where it went."""
    command = command_of(parser) or ""
    moved = MOVED.get(command, {})
    switches = {key.name for key in KEYS.get(command, ()) if key.kind is bool}
    argv = list(argv)
    for i, token in enumerate(argv):
        flag, equals, value = token.partition("=")
        if flag in moved:
            key = moved[flag]
            if key in switches:  # it was a switch (`--split-zones`): no value of its own
                value = "true"
            elif not equals and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
            raise InputError(
                flag,
                f"moved: use --tuning {key}={value or '...'} (rarely needed knobs are "
                "--tuning keys: docs/tuning.md)",
            )


def apply(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--tuning's texts -> one attribute per key on `args` (the default where not given)."""
    command = command_of(parser)
    if command is None:
        return
    keys = {key.name: key for key in KEYS[command]}
    values = tuning.parse(args.tuning, keys, prog=parser.prog)
    for name, value in values.items():
        setattr(args, name, value)
    del args._efm_tuning_command
