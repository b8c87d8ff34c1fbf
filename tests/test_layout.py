"""The tree shows the architecture: each folder of transforms/ imports only the layers below it,
and test infrastructure (emulators/, tests/) stays out of the installed package.

    core  <-  sources  <-  storage  <-  learning  <-  products        (transforms/)
    sample_data (the demo's generator) may use core and sources; label_page (efm label's server and page)
    may use all of transforms/, and so may efm (the Python API), which may also use label_page
    (efm.label serves the same page in a notebook), never pipelines/; pipelines/ composes them all.

The rule, whole (each part is a test below):
* layers only point down: efm/ (the API) and pipelines/ (the commands) both sit on transforms/ and
  never import each other;
* core holds the vocabulary (errors, grid, chunks and the chunk plan, quantisation, metric names,
  a local run's progress line); sources hold where embeddings come from AND the planning of an
  extraction against them (requests, Earth Engine's quotas and latency: sources/extract_plan.py);
  storage holds only storage: no module of transforms/storage/ imports the request planning or
  names a service's quota, and none draws a run's progress line;
* the label page takes its colours without importing the export product (products/export.py);
* in pipelines/, a command module imports only the shared helpers (SHARED below) and its own steps
  (`<command>_<step>.py`, e.g. extract_plan.py of extract.py); the shared helpers import only each
  other; two drivers run other commands by design: cli (the `efm` entry, by name) and demo (the
  whole workflow, command after command); an alias (classify, another name for predict) imports
  only the command it names.
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
    # the Python API: the same transforms as the commands, never the commands themselves; and
    # label_page, the labelling page's server, which efm.label serves inside a notebook
    "efm": {
        "transforms.core",
        "transforms.storage",
        "transforms.learning",
        "transforms.products",
        "label_page",
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


# ---------------------------------------------------------------- the leaks issue 20 names

# Names that belong to extraction planning, not to storage.
PLANNING_MODULES = ("transforms.sources.request_plan", "transforms.sources.extract_plan")
PLANNING_NAMES = {
    "EE_MAX_CONCURRENT",
    "EE_MAX_REQUESTS_PER_SECOND",
    "ASSUMED_EE_LATENCY_S",
    "EMULATOR_THROUGHPUT",
    "MAX_REQUEST_BYTES",
    "split_window",
    "requests_per_chunk",
}
PROGRESS_NAMES = {"Progress", "progress_line", "transforms.core.progress"}


def names_in(path: pathlib.Path) -> set[str]:
    """Every identifier a file names or defines (names, attributes, imported names, definitions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.update((node.name, node.name.rsplit(".", 1)[-1]))
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            found.add(node.name)
    return found


@pytest.mark.parametrize(
    "path",
    sorted((REPO / "transforms" / "storage").glob("*.py")),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_storage_holds_no_extraction_planning_and_no_progress_line(path):
    imported = imports_of(path)
    planning = sorted(i for i in imported if i.startswith(PLANNING_MODULES))
    assert not planning, f"{path.relative_to(REPO)} imports {planning}: planning lives in sources"
    named = names_in(path)
    quotas = sorted(named & PLANNING_NAMES)
    assert not quotas, (
        f"{path.relative_to(REPO)} names {quotas}: request planning and quotas live in "
        "transforms/sources/extract_plan.py"
    )
    progress = sorted((named | imported) & PROGRESS_NAMES)
    assert not progress, f"{path.relative_to(REPO)} has {progress}: a run's progress is not storage"


def test_the_api_and_the_commands_never_import_each_other():
    for top, other in (("efm", "pipelines"), ("pipelines", "efm")):
        for path in sorted((REPO / top).rglob("*.py")):
            leaks = sorted(i for i in imports_of(path) if package_of(i) == other)
            assert not leaks, f"{path.relative_to(REPO)} imports {leaks}: {top} never uses {other}"


def test_the_label_page_takes_its_colours_without_the_export_product():
    for path in sorted((REPO / "label_page").rglob("*.py")):
        leaks = sorted(i for i in imports_of(path) if i.startswith("transforms.products.export"))
        assert not leaks, f"{path.relative_to(REPO)} imports {leaks}"


# what only label_page/startup.py calls: the start-up checks `efm label` and `efm.label` share
LABEL_STARTUP_NAMES = {
    "make_server", "check_output", "basemap_origin", "Imagery", "default_year", "split_polygons",
    "EADDRINUSE",
}  # fmt: skip


@pytest.mark.parametrize("path", ["pipelines/label.py", "efm/label.py"])
def test_the_label_command_and_function_share_one_set_of_start_up_checks(path):
    own = sorted(names_in(REPO / path) & LABEL_STARTUP_NAMES)
    assert not own, f"{path} checks {own} itself: use label_page/startup.py"


# pipelines/ modules every command may use (and that use only each other)
SHARED = {
    "beam_args",
    "common",
    "failures",
    "interrupts",
    "product",
    "fanout",
    "tuning",
    "tuning_keys",
    "polygon_table",
}
DRIVERS = {"cli", "demo"}  # run other commands by design (the `efm` entry; the whole workflow)
ALIASES = {"classify": "predict"}  # another name for a command: it may import that command only
PIPELINES = sorted(p.stem for p in (REPO / "pipelines").glob("*.py") if p.stem != "__init__")


def command_of(module: str) -> str:
    """The command a pipelines module belongs to: itself, or `extract` for extract_plan.py, ..."""
    head = module.split("_", 1)[0]
    return head if head != module and head in PIPELINES and head not in SHARED else module


def pipeline_imports(path: pathlib.Path) -> set[str]:
    """The pipelines modules a file imports (`from pipelines import x`, `import pipelines.x`, ...)."""
    found = set()
    for imported in imports_of(path):
        parts = imported.split(".")
        if parts[0] == "pipelines" and len(parts) > 1 and parts[1] in PIPELINES:
            found.add(parts[1])
    return found


@pytest.mark.parametrize("module", PIPELINES)
def test_a_command_imports_only_the_shared_helpers_and_its_own_steps(module):
    assert SHARED <= set(PIPELINES) and DRIVERS <= set(PIPELINES), "a listed module is gone"
    if module in DRIVERS:
        return
    if module in ALIASES:
        leaks = pipeline_imports(REPO / "pipelines" / f"{module}.py") - SHARED - {ALIASES[module]}
        assert not leaks, (
            f"pipelines/{module}.py, an alias of {ALIASES[module]}, imports {sorted(leaks)}"
        )
        return
    allowed = (
        SHARED
        if module in SHARED
        else SHARED | {m for m in PIPELINES if command_of(m) == command_of(module)}
    )
    leaks = sorted(pipeline_imports(REPO / "pipelines" / f"{module}.py") - allowed - {module})
    assert not leaks, f"pipelines/{module}.py imports {leaks}: " + (
        f"a shared helper uses only {sorted(SHARED)}"
        if module in SHARED
        else f"a command uses only the shared helpers {sorted(SHARED)} and its own steps; "
        "move what both need into a shared helper or down into transforms/"
    )


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
