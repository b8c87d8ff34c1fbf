"""Checks on what efm passes to Beam: no stray words, a runner Beam knows.

Beam parses its options with `parse_known_args` and drops what it cannot parse with only a
warning, so `--years 2021 2022` would silently extract 2021 alone; and a misspelt `--runner`
fails deep inside pipeline construction with a traceback.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Sequence

from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
    _BeamArgumentParser,
)

from transforms.core.errors import InputError


class _OneLineBeamParser(_BeamArgumentParser):
    """Beam's parser, but a value it rejects (`--direct_num_workers abc`) is efm's one line naming
    the flag, not Beam's usage block (120 lines) and SystemExit."""

    def error(self, message: str):
        match = re.match(r"argument (--[\w-]+)(?:/\S+)?: (.*)", message)
        if match:
            raise InputError(
                match.group(1),
                f"{match.group(2)} (a Beam pipeline option: give it a valid value or leave it out)",
            )
        raise InputError("", f"{message} (in Beam's pipeline options)")


def _beam_parser() -> _BeamArgumentParser:
    """The parser PipelineOptions.get_all_options builds: every options class's flags."""
    parser = _OneLineBeamParser(allow_abbrev=False)
    subset = {}
    for cls in PipelineOptions.__subclasses__():
        subset.setdefault(str(cls), cls)
    for cls in subset.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def option_names() -> set[str]:
    """Every Beam option's name (dest), e.g. `direct_num_workers`."""
    return {action.dest for action in _beam_parser()._actions}


def check_values(rest: Sequence[str]) -> None:
    """Parse the Beam flags as Beam will (types, choices, a missing value): a bad one is one line."""
    _beam_parser().parse_known_args(list(rest))


def refuse_stray_words(argv: Sequence[str], rest: Sequence[str], parser) -> None:
    """Refuse any token left over by our parser that Beam's own parser does not consume either
    (a word that is neither a flag nor the value of a flag)."""
    _, unknown = _beam_parser().parse_known_args(list(rest))
    stray, after_unknown_flag = [], False
    for token in unknown:
        if token.startswith("-"):
            after_unknown_flag = "=" not in token
        elif (
            after_unknown_flag
        ):  # the value of a flag nobody knows: split_args refuses that flag by name
            after_unknown_flag = False
        else:
            stray.append(token)
    if not stray:
        return
    word = stray[0]
    argv = list(argv)
    position = argv.index(word) if word in argv else -1
    flag = (
        next((t for t in reversed(argv[:position]) if t.startswith("--")), None)
        if position > 0
        else None
    )
    values = []
    if flag and "=" not in flag and _takes_value(parser, flag):
        for token in argv[argv.index(flag) + 1 :]:
            if token.startswith("--"):
                break
            values.append(token)
    if len(values) > 1 and all(
        re.fullmatch(r"[-+\d.]+", v) for v in values
    ):  # e.g. --years 2021 2022
        raise InputError(
            flag,
            f"takes one value but got {len(values)} words ({' '.join(values)}); "
            f"for several, join them with commas and no spaces: {flag} {','.join(values)}",
        )
    raise InputError(
        flag.split("=", 1)[0] if flag else "",
        f"unexpected word {word!r}: `{parser.prog}` takes no positional arguments; "
        "one value follows each flag (--name value or --name=value), a list is comma-separated with no spaces"
        + (f"; is it part of {flag.split('=', 1)[0]}?" if flag else ""),
    )


def _takes_value(parser, flag: str) -> bool:
    return any(
        flag in action.option_strings and action.nargs is None and action.const is None
        for action in parser._actions
    )


def known_runners() -> list[str]:
    return sorted(path.rsplit(".", 1)[-1] for path in StandardOptions.ALL_KNOWN_RUNNERS)


def check_runner(name: str | None) -> None:
    """Beam accepts a known runner's class name in any case, with or without 'Runner', or a dotted path."""
    if not name:
        return
    known = {r.lower(): r for r in known_runners()}
    if name.lower() in known or name.lower() + "runner" in known:
        return
    if "." in name:
        module, _, cls = name.rpartition(".")
        try:
            getattr(importlib.import_module(module), cls)
            return
        except (ImportError, AttributeError) as exc:
            raise InputError(
                "--runner",
                f"cannot load the runner class {name!r} ({type(exc).__name__}); "
                f"use a known runner: {', '.join(known_runners())}",
            ) from None
    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.6)
    hint = f"did you mean {known[close[0]]}? " if close else ""
    raise InputError(
        "--runner",
        f"unknown Beam runner {name!r}; {hint}known runners: {', '.join(known_runners())}",
    )
