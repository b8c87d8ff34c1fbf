"""Evaluates Earth Engine expression graphs (the JSON that ``ee.serializer`` writes).

Only the algorithms listed in ``ALGORITHMS`` exist here; anything else is an
``EvaluationError`` (HTTP 400), never a silently wrong answer.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from emulators.earthengine import images as im
from emulators.earthengine.images import Image


class EvaluationError(Exception):
    """The expression cannot be evaluated (answered as HTTP 400 INVALID_ARGUMENT)."""


@dataclasses.dataclass(frozen=True)
class Date:
    ms: int


@dataclasses.dataclass(frozen=True)
class DateRange:
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class Projection:
    crs: str
    transform: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Filter:
    test: Callable[[dict[str, Any]], bool]


@dataclasses.dataclass(frozen=True)
class Reducer:
    kind: str
    count: int = 1  # number of inputs
    inner: Reducer | None = None  # set for repeat(): ``count`` copies of ``inner``
    optional: int = 0  # toList(numOptional): trailing inputs that may be null
    tupled: bool = False  # toList(tupleSize) collects tuples


@dataclasses.dataclass(eq=False)
class ImageCollection:
    images: list[Image]
    properties: dict[str, Any] = dataclasses.field(default_factory=dict)
    collection_id: str | None = None

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "ImageCollection", "bands": []}
        if self.collection_id:
            out.update(id=self.collection_id, version=1700000000000000)
        out["properties"] = dict(self.properties)
        out["features"] = [image.info() for image in self.images]
        return out

    def derive(self, images: list[Image]) -> ImageCollection:
        return ImageCollection(images, self.properties, self.collection_id)


ALGORITHMS: dict[str, Callable[..., Any]] = {}


def algorithm(*names: str) -> Callable:
    def register(fn: Callable) -> Callable:
        for name in names:
            ALGORITHMS[name] = fn
        return fn

    return register


# ---- the graph walker -------------------------------------------------------------

_env_serial = itertools.count(1)


class _Env:
    """Bindings of one custom-function call; its serial keys the memo table."""

    def __init__(self, names: list[str], values: tuple, parent: _Env | None):
        self.serial = next(_env_serial)
        self.bindings = dict(zip(names, values))
        self.parent = parent

    def lookup(self, name: str) -> Any:
        env: _Env | None = self
        while env is not None:
            if name in env.bindings:
                return env.bindings[name]
            env = env.parent
        raise EvaluationError(f"Unbound argument reference {name!r}.")


class Closure:
    """A ``functionDefinitionValue``: a body reference plus argument names."""

    def __init__(self, evaluator: Evaluator, names: list[str], body: str, env: _Env | None):
        self.evaluator, self.names, self.body, self.env = evaluator, names, body, env

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        values = tuple(args) + tuple(kwargs.get(n) for n in self.names[len(args) :])
        return self.evaluator.reference(self.body, _Env(self.names, values, self.env))


class Evaluator:
    """Walks one expression ``{"result": ref, "values": {ref: ValueNode}}``."""

    def __init__(self, catalog: Any):
        self.catalog = catalog
        self._values: dict[str, Any] = {}
        self._memo: dict[tuple[str, int], Any] = {}

    def evaluate(self, expression: Any) -> Any:
        if (
            not isinstance(expression, dict)
            or "result" not in expression
            or "values" not in expression
        ):
            raise EvaluationError("Expression must be an object with 'result' and 'values'.")
        self._values = expression["values"]
        return self.reference(expression["result"], None)

    def reference(self, ref: str, env: _Env | None) -> Any:
        key = (ref, env.serial if env else 0)
        if key not in self._memo:
            if ref not in self._values:
                raise EvaluationError(f"Reference to undefined value {ref!r}.")
            self._memo[key] = self.node(self._values[ref], env)
        return self._memo[key]

    def node(self, node: dict[str, Any], env: _Env | None) -> Any:
        if "constantValue" in node:
            return node["constantValue"]
        if "integerValue" in node:
            return int(node["integerValue"])
        if "valueReference" in node:
            return self.reference(node["valueReference"], env)
        if "argumentReference" in node:
            if env is None:
                raise EvaluationError(
                    f"Argument {node['argumentReference']!r} used outside a function."
                )
            return env.lookup(node["argumentReference"])
        if "arrayValue" in node:
            return [self.node(v, env) for v in node["arrayValue"].get("values", [])]
        if "dictionaryValue" in node:
            return {
                k: self.node(v, env) for k, v in node["dictionaryValue"].get("values", {}).items()
            }
        if "functionDefinitionValue" in node:
            fdef = node["functionDefinitionValue"]
            return Closure(self, list(fdef.get("argumentNames", [])), fdef["body"], env)
        if "functionInvocationValue" in node:
            return self._invoke(node["functionInvocationValue"], env)
        raise EvaluationError(f"Unsupported value node with keys {sorted(node)}.")

    def _invoke(self, call: dict[str, Any], env: _Env | None) -> Any:
        args = {k: self.node(v, env) for k, v in call.get("arguments", {}).items()}
        if "functionReference" in call:
            fn = self.reference(call["functionReference"], env)
            if not isinstance(fn, Closure):
                raise EvaluationError("functionReference does not name a function.")
            return fn(**args)
        name = call.get("functionName", "")
        impl = ALGORITHMS.get(name)
        if impl is None:
            raise EvaluationError(
                f"Earth Engine emulator does not implement the algorithm {name!r}."
            )
        try:
            return impl(self, **args)
        except EvaluationError:
            raise
        except (
            TypeError,
            ValueError,
            KeyError,
            IndexError,
            AttributeError,
        ) as exc:  # bad arguments
            raise EvaluationError(f"{name}: {exc}") from exc


def to_info(value: Any) -> Any:
    """The JSON ``getInfo`` answer for an evaluated value."""
    if isinstance(value, (Image, ImageCollection)):
        return value.info()
    if isinstance(value, Date):
        return {"type": "Date", "value": value.ms}
    if isinstance(value, DateRange):
        return {"type": "DateRange", "dates": [value.start, value.end]}
    if isinstance(value, Projection):
        return {"type": "Projection", "crs": value.crs, "transform": list(value.transform)}
    if isinstance(value, (list, tuple)):
        return [to_info(v) for v in value]
    if isinstance(value, dict):
        return {k: to_info(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise EvaluationError(f"A {type(value).__name__} cannot be returned by value:compute.")


def as_image(value: Any) -> Image:
    if isinstance(value, Image):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Image([im.constant_band(value)])
    raise EvaluationError(f"Expected an Image, got {type(value).__name__}.")


def as_millis(value: Any) -> int:
    if isinstance(value, Date):
        return value.ms
    try:
        return im.to_millis(value)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None


def properties_of(element: Any) -> dict[str, Any]:
    if isinstance(element, (Image, ImageCollection)):
        return element.properties
    raise EvaluationError(f"Expected an Element, got {type(element).__name__}.")


# Algorithms register themselves into ALGORITHMS when their modules are imported.
from emulators.earthengine import collection_algorithms, image_algorithms  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
