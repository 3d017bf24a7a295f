"""The project's import graph: no cycles, and each folder depends only on those below it."""

import ast
from pathlib import Path

from common.settings import PROJECT_ROOT

PACKAGES = ("api", "worker", "common", "training", "cli", "bench")
# What each folder may import from the project: ``common`` is the floor, the API and
# the workers meet only there (and through the Celery app the API sends with).
ALLOWED = {
    "common": {"common"},
    "training": {"common", "training"},
    # The sample photos of a model's parity and validation checks are drawn ones.
    "worker": {"common", "worker", "training.synthetic"},
    "api": {"common", "api", "worker.celery"},
    "bench": {"common", "bench", "worker", "training"},
    "cli": {"common", "cli", "worker", "training", "bench", "api"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, modules: set[str] = frozenset()) -> set[str]:
    """Every project module ``path`` imports, at its top or inside a function.

    ``from package import module`` counts as importing the module (one of
    ``modules``), not the package: every submodule runs its package's
    ``__init__`` anyway, and that is no dependency of its own.
    """
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        imported |= {name for name in names if name.split(".")[0] in PACKAGES}
    return imported


def import_graph() -> dict[str, set[str]]:
    paths = [p for package in PACKAGES for p in (PROJECT_ROOT / package).rglob("*.py")]
    modules = {module_name(path): path for path in paths}
    return {
        name: {t for t in project_imports(path, set(modules)) if t in modules and t != name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or ``None``; depth-first with colours."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        trail.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return [*trail[trail.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        trail.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_project_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the project
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_each_folder_imports_only_the_folders_below_it():
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if not any(
            target == allowed or target.startswith(allowed + ".")
            for allowed in ALLOWED[module.split(".")[0]]
        )
    ]
    assert wrong == []


def test_settings_import_nothing_of_the_project():
    assert project_imports(PROJECT_ROOT / "common" / "settings.py") == set()
