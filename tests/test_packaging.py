"""setup.py's requirements vs constraints.txt and the product's imports (issue 20, item 5).

* setup.py gives compatible ranges, never exact pins (`==`): efm must install next to a notebook's
  newer pandas, zarr or scikit-learn. The exact versions CI, `make` and the image install are in
  constraints.txt, and every range must admit the version pinned there (so the tested set is one
  the ranges allow); an upper bound carries its reason on the same line.
* Every third-party module the product imports (efm/, transforms/, pipelines/, label_page/,
  sample_data/) comes from a distribution setup.py requires, and every distribution it requires
  is imported by the product (or loaded by name: LOADED_BY_NAME) -- nothing like `xee` that only
  tests and benchmarks use. The module -> distribution map is the installed packages' own
  metadata (importlib.metadata), not a list kept by hand.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("efm", "transforms", "pipelines", "label_page", "sample_data")
# Required but never imported: fsspec loads these by the URL's protocol.
LOADED_BY_NAME = {"gcsfs": "gs:// paths (fsspec imports it for the protocol)"}
# Imported only inside a guard, for an extra (the import failing is handled).
OPTIONAL_IMPORTS = {"botocore": "s3"}  # transforms/sources/remote_fs.py, s3fs's credentials


def setup_lists() -> tuple[list[str], dict[str, list[str]]]:
    tree = ast.parse((REPO / "setup.py").read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in (
            "INSTALL_REQUIRES",
            "EXTRAS",
        ):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["INSTALL_REQUIRES"], found["EXTRAS"]


def constraint_pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def all_requirements() -> list[tuple[str, Requirement]]:
    install, extras = setup_lists()
    return [("install_requires", Requirement(r)) for r in install] + [
        (f"extra {extra}", Requirement(r)) for extra, reqs in extras.items() for r in reqs
    ]


@pytest.mark.parametrize("where,req", all_requirements(), ids=lambda v: str(v))
def test_requirement_is_a_range_that_admits_the_tested_pin(where, req):
    assert not any(spec.operator in ("==", "===", "~=") for spec in req.specifier), (
        f"setup.py {where}: {req} pins a version; give a range (>= the tested version) and put the "
        "exact version in constraints.txt"
    )
    assert any(spec.operator == ">=" for spec in req.specifier), (
        f"setup.py {where}: {req} needs a lower bound (the version tested: constraints.txt's)"
    )
    pins = constraint_pins()
    name = canonicalize_name(req.name)
    assert name in pins, f"setup.py {where}: {req.name} has no exact version in constraints.txt"
    assert req.specifier.contains(pins[name], prereleases=True), (
        f"setup.py {where}: {req} does not admit constraints.txt's {req.name}=={pins[name]} (the tested version)"
    )
    lower = max(Version(s.version) for s in req.specifier if s.operator == ">=")
    assert lower <= pins[name]


def test_upper_bounds_say_why():
    for line in (REPO / "setup.py").read_text().splitlines():
        if re.search(r'^\s*"[A-Za-z0-9_.\-\[\]]+[^"]*<', line):
            assert "#" in line, f"setup.py: an upper bound without its reason: {line.strip()}"


@functools.cache
def imported_modules() -> dict[str, set[str]]:
    """Every absolute import in the product: module (up to its second component) -> files."""
    found: dict[str, set[str]] = {}
    for package in PRODUCT:
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    key = ".".join(name.split(".")[:2])
                    found.setdefault(key, set()).add(str(path.relative_to(REPO)))
    return found


def third_party(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    return {
        m: files
        for m, files in modules.items()
        if m.split(".")[0] not in sys.stdlib_module_names
        and m.split(".")[0] not in PRODUCT
        and m.split(".")[0] != "__future__"
    }


@functools.cache
def top_level_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def distribution_of(module: str) -> str:
    """The installed distribution that provides `module` (namespace packages such as `google.*`
    resolved by the file the module is loaded from)."""
    top = module.split(".")[0]
    candidates = sorted(set(top_level_distributions().get(top, [])))
    assert candidates, f"{module}: no installed distribution provides it"
    if len(candidates) == 1:
        return canonicalize_name(candidates[0])
    spec = importlib.util.find_spec(module)
    origin = Path(spec.origin if spec.origin else next(iter(spec.submodule_search_locations)))
    origin = origin.resolve()
    for name in candidates:
        dist = importlib.metadata.distribution(name)
        for file in dist.files or []:
            located = Path(dist.locate_file(file)).resolve()
            if located == origin or origin in located.parents:
                return canonicalize_name(name)
    raise AssertionError(f"{module}: none of {candidates} holds {origin}")


def test_every_product_import_is_a_required_distribution():
    install, extras = setup_lists()
    required = {canonicalize_name(Requirement(r).name) for r in install}
    missing = {}
    for module, files in sorted(third_party(imported_modules()).items()):
        top = module.split(".")[0]
        if top in OPTIONAL_IMPORTS:
            assert OPTIONAL_IMPORTS[top] in extras, f"{top}: extra {OPTIONAL_IMPORTS[top]} is gone"
            continue
        dist = distribution_of(module)
        if dist not in required:
            missing[f"{module} ({dist})"] = sorted(files)
    assert not missing, (
        "the product imports these, but setup.py's install_requires does not list their "
        f"distribution (a user's install may lack them, or get an untested version): {missing}"
    )


def test_every_required_distribution_is_used_by_the_product():
    install, _ = setup_lists()
    imported = {
        distribution_of(m)
        for m in third_party(imported_modules())
        if m.split(".")[0] not in OPTIONAL_IMPORTS
    }
    unused = [
        Requirement(r).name
        for r in install
        if canonicalize_name(Requirement(r).name) not in imported
        and canonicalize_name(Requirement(r).name) not in LOADED_BY_NAME
    ]
    assert not unused, (
        f"setup.py requires {unused}, which no product module imports: move them to the extra "
        "that needs them (test, bench, distributed) or drop them"
    )


def test_xee_is_only_an_extra():
    install, extras = setup_lists()
    assert all(canonicalize_name(Requirement(r).name) != "xee" for r in install)
    assert any(Requirement(r).name == "xee" for r in extras["bench"])
