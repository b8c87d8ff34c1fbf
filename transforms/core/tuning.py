"""`--tuning KEY=VALUE,...` (or `--tuning @file.toml`): the knobs a user rarely needs, one flag.

A command declares its keys (`Key`: name, type, default, meaning, check); `parse` turns the flag's
text into {name: value} with every key present (the default where not given), refusing, as one
line naming the key: an unknown key (with the closest known key as a suggestion), a key given
twice, an item that is not KEY=VALUE, a value of the wrong type or out of range. The keys and their
defaults are listed in docs/tuning.md.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from transforms.core.errors import InputError

FLAG = "--tuning"
TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


@dataclass(frozen=True)
class Key:
    name: str
    kind: type  # int, float, str or bool
    default: object  # None: efm chooses (the meaning says how)
    meaning: str
    check: Callable[[object], str | None] | None = None  # -> what is wrong, or None
    choices: tuple[str, ...] = ()

    def convert(self, raw) -> object:
        """A text (KEY=VALUE) or a TOML value -> this key's type; InputError naming the key."""
        value = raw
        if isinstance(raw, str):
            value = _from_text(self, raw.strip())
        elif self.kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            value = float(raw)
        elif not isinstance(raw, self.kind) or (self.kind is not bool and isinstance(raw, bool)):
            raise self.error(f"must be {_kind_words(self)}, got {raw!r}")
        if self.choices and value not in self.choices:
            raise self.error(f"must be one of {', '.join(self.choices)}, got {value!r}")
        problem = self.check(value) if self.check else None
        if problem:
            shown = raw.strip() if isinstance(raw, str) else repr(value)
            raise self.error(f"{problem}, got {shown}")
        return value

    def error(self, message: str) -> InputError:
        return InputError(FLAG, f"{self.name}: {message}")


def _kind_words(key: Key) -> str:
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a text",
    }[key.kind]


def _from_text(key: Key, text: str):
    if key.kind is bool:
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise key.error(f"must be true or false, got {text!r}")
    if key.kind is int:
        try:
            return int(text)
        except ValueError:
            raise key.error(f"must be an integer, got {text!r}") from None
    if key.kind is float:
        try:
            return float(text)
        except ValueError:
            raise key.error(f"must be a number, got {text!r}") from None
    return text


def positive(value) -> str | None:
    if not (value > 0 and math.isfinite(value)):
        return "must be positive"
    return None


def at_least(minimum) -> Callable[[object], str | None]:
    def check(value) -> str | None:
        return None if value >= minimum else f"must be {minimum} or more"

    return check


def parse(given: Iterable[str] | str | None, keys: Mapping[str, Key], prog: str = "") -> dict:
    """The values of `keys` (every one: the default where not given) from the flag's texts.

    Each text is `KEY=VALUE,KEY=VALUE` or `@path.toml` (a TOML file of `key = value` lines)."""
    if isinstance(given, str):
        given = [given]
    values: dict[str, object] = {}
    for text in given or ():
        for name, raw in _items(text):
            key = _known(name, keys, prog)
            if name in values:
                raise InputError(FLAG, f"{name} is given twice; give each key once")
            values[name] = key.convert(raw)
    return {name: values.get(name, key.default) for name, key in keys.items()}


def _items(text: str) -> list[tuple[str, object]]:
    text = text.strip()
    if text.startswith("@"):
        return _file_items(text[1:])
    items = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            # a word after a KEY=VALUE: most likely a list given with `,` (rgb=A01,A16,A09)
            after = (
                f" after {items[-1][0]}={items[-1][1]}: a list inside one value is ;-separated "
                f"(e.g. {items[-1][0]}={items[-1][1]};{item})"
                if items and not sep
                else ""
            )
            raise InputError(
                FLAG,
                f"expected KEY=VALUE,KEY=VALUE (e.g. max_retries=3), got {item!r}{after}; "
                "or @file.toml (docs/tuning.md)",
            )
        items.append((name.strip(), value.strip()))
    return items


def _file_items(path: str) -> list[tuple[str, object]]:
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise InputError(FLAG, f"{path}: no such file (give @path/to/tuning.toml)") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(FLAG, f"{path}: cannot read it as TOML ({exc})") from None
    items = []
    for name, value in table.items():
        if isinstance(value, dict):
            raise InputError(
                FLAG, f"{path}: [{name}] is a table; the file holds `key = value` lines only"
            )
        items.append((name, value))
    return items


def _known(name: str, keys: Mapping[str, Key], prog: str) -> Key:
    if name in keys:
        return keys[name]
    whose = f" of {prog}" if prog else ""
    close = difflib.get_close_matches(name, list(keys), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    listed = ", ".join(keys) if keys else "none"
    raise InputError(
        FLAG,
        f"unknown key {name!r}; {hint}the tuning keys{whose}: {listed} (docs/tuning.md)",
    )


def value_list(text: str) -> list[str]:
    """A list inside one value: `A01;A16;A09` (`,` separates the KEY=VALUE items, so a list there
    is `;`-separated) or, from a @file.toml string or the Python API, `A01,A16,A09`."""
    return [item.strip() for item in re.split("[;,]", text) if item.strip()]
