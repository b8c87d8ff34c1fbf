"""The tree shows the architecture: each folder of transforms/ imports only the layers below it,
and test infrastructure (emulators/, tests/) stays out of the installed package.

    core  <-  sources  <-  storage  <-  learning  <-  products        (transforms/)
    sample_data (the demo's generator) may use core and sources; label_page (efm label's server and page)
    may use all of transforms/, and so may efm (the Python API, which also reuses the commands' checks);
    pipelines/ composes them all.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# what each package may import of efm's own code (besides itself)
ALLOWED = {
    "transforms": set(),  # the package itself: only the docstring
    "transforms.core": set(),
    "transforms.sources": {"transforms.core"},
    "transforms.storage": {"transforms.core", "transforms.sources"},
    "transforms.learning": {"transforms.core", "transforms.storage"},
    "transforms.products": {"transforms.core", "transforms.storage", "transforms.learning"},
    "sample_data": {"transforms.core", "transforms.sources"},
    "label_page": {
        "transforms.core",
        "transforms.storage",
        "transforms.learning",
        "transforms.products",
    },
    # the Python API: the same transforms as the commands, never the commands themselves
    "efm": {
        "transforms.core",
        "transforms.storage",
        "transforms.learning",
        "transforms.products",
    },
    "pipelines": {
        "transforms.core",
        "transforms.sources",
        "transforms.storage",
        "transforms.learning",
        "transforms.products",
        "sample_data",
        "label_page",
    },
}
OWN = ("transforms", "pipelines", "sample_data", "label_page", "efm", "emulators")


def package_of(module: str) -> str | None:
    """The layer a dotted module name belongs to (None: not efm's code)."""
    for package in sorted(ALLOWED, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    return module.split(".")[0] if module.split(".")[0] in OWN else None


def imports_of(path: pathlib.Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from transforms.core import grid` imports transforms.core.grid
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def source_files():
    for top in ("transforms", "sample_data", "label_page", "efm", "pipelines"):
        yield from sorted((REPO / top).rglob("*.py"))


@pytest.mark.parametrize("path", list(source_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_each_module_imports_only_the_layers_below_it(path):
    module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    own = package_of(module)
    assert own in ALLOWED, (
        f"{path.relative_to(REPO)} sits in no layer: put it in one of {sorted(ALLOWED)}"
    )
    for imported in sorted(imports_of(path)):
        layer = package_of(imported)
        if layer is None or layer == own:
            continue
        assert layer in ALLOWED[own], (
            f"{module} imports {imported}: {own} may import only {sorted(ALLOWED[own]) or 'nothing of efm'}"
        )


def test_transforms_holds_only_its_layers():
    loose = sorted(p.name for p in (REPO / "transforms").glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules directly in transforms/: {loose} (each belongs in a layer)"
    layers = sorted(
        p.name for p in (REPO / "transforms").iterdir() if p.is_dir() and p.name != "__pycache__"
    )
    assert layers == sorted(
        name.split(".")[1] for name in ALLOWED if name.startswith("transforms.")
    )


def test_the_installed_package_holds_the_product_and_no_test_infrastructure(monkeypatch):
    """The packages setup.py hands setuptools (what the wheel, the editable install and the worker image get)."""
    import setuptools

    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(REPO)  # find_packages looks in the working directory
    exec(compile((REPO / "setup.py").read_text(), "setup.py", "exec"), {"__name__": "__main__"})
    packages = set(captured["packages"])
    assert {p.split(".")[0] for p in packages} == {
        "transforms",
        "pipelines",
        "sample_data",
        "label_page",
        "efm",
    }, packages
    on_disk = {
        ".".join(p.relative_to(REPO).parent.parts)
        for top in ("transforms", "pipelines", "sample_data", "label_page", "efm")
        for p in (REPO / top).rglob("__init__.py")
    }
    assert packages == on_disk, f"packages not installed: {on_disk - packages}"


def infrastructure_code(
    tops=("tests", "tests_airflow", "benchmarks", "scripts"),
) -> list[pathlib.Path]:
    return sorted(
        p for top in tops for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts
    )


def test_modules_share_code_only_through_tests_helpers():
    """Shared test code lives in tests/helpers/ (or in a conftest's fixtures), imported one way,
    `from tests.helpers.x import ...`: no test module imports another (nor a conftest), nothing
    imports a helper by a second name (`helpers.x`, `store_factory`: a module loaded twice), and
    the runner flags FNAPI are assigned once, in tests/helpers/runners.py."""
    bare = {"helpers", "conftest"} | {
        p.stem
        for top in ("tests", "tests/helpers", "tests_airflow")
        for p in (REPO / top).glob("*.py")
    }
    bare -= {"__init__", "collections"}  # tests/helpers/collections.py is only ever tests.helpers.*
    wrong, fnapi = [], []
    for path in infrastructure_code():
        where = path.relative_to(REPO)
        for node in ast.walk(ast.parse(path.read_text())):
            on_path = isinstance(node, ast.Call) and "sys.path" in ast.unparse(node.func)
            on_path |= isinstance(node, ast.Assign) and "sys.path" in ast.unparse(node.targets[0])
            if on_path and any(getattr(c, "value", None) == "tests" for c in ast.walk(node)):
                wrong.append(f"{where}:{node.lineno}: puts tests/ on sys.path (a second name)")
            if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                fnapi += [where for t in targets if isinstance(t, ast.Name) and t.id == "FNAPI"]
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    wrong.append(f"{where}:{node.lineno}: a relative import")
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                ours = parts[0] in ("tests", "tests_airflow")
                if parts[0] in bare or ours and parts[:2] != ["tests", "helpers"]:
                    wrong.append(f"{where}:{node.lineno}: imports {name}")
    assert not wrong, "\n".join(wrong)
    assert fnapi == [pathlib.Path("tests/helpers/runners.py")], fnapi
    assert __name__ == "tests.test_layout"  # tests/ is a package: modules load as tests.<name>
