"""The layering rules of docs/architecture.md, read from the code's own `import` statements.

Every module of `translator/`, `conformance/`, `server/` (and `fixtures/`, so a circle through it is
seen too) is parsed, not imported: module-level imports, imports inside functions and classes, and
imports under `if TYPE_CHECKING:` are all found. Checked:

- no import circle among modules at module level (the imports that run when a module is loaded;
  `TYPE_CHECKING` blocks and function bodies do not run then, so they cannot close a circle);
- `translator/` imports nothing of `server/`, `conformance/` or `fixtures/`, anywhere, except the
  deprecated re-export `translator/validate.py`;
- `conformance/` imports, of the project, only `translator.events` (and `fixtures.*` in the corpus
  runner `conformance/corpus.py`);
- no module in `server/` is over `SERVER_MODULE_LIMIT` lines (a module that long holds more than
  one job; split it by job).

`python -m tests.server.test_layering` prints each module's project imports, the "may import"
column of docs/architecture.md.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("translator", "conformance", "server", "fixtures")
#: The most lines a server module may hold ("~400" with a little slack).
SERVER_MODULE_LIMIT = 420
#: The translator module allowed to import the conformance kit (the deprecated re-export).
TRANSLATOR_SHIM = "translator.validate"
#: The one conformance module allowed to import fixtures (the corpus runner replays its scenarios).
CORPUS_RUNNER = "conformance.corpus"


@dataclass
class Imports:
    """One module's imports of the project, split by when they run."""

    eager: set[str] = field(default_factory=set)  # at module level: run when the module loads
    lazy: set[str] = field(default_factory=set)  # inside functions, classes' methods, TYPE_CHECKING

    @property
    def all(self) -> set[str]:
        return self.eager | self.lazy


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module `name` denotes (a package's `__init__` when it is a package), or None."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            target = _resolve(alias.name, modules)
            if target:
                found.add(target)
        return found
    if node.level:  # relative: from the module's package
        base = here.split(".") if is_package else here.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    for alias in node.names:  # `from pkg import module` names a module; `from module import name` does not
        submodule = f"{source}.{alias.name}"
        target = submodule if submodule in modules else _resolve(source, modules)
        if target:
            found.add(target)
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def parse_imports(modules: dict[str, Path] | None = None) -> dict[str, Imports]:
    modules = modules or project_modules()
    graph: dict[str, Imports] = {}
    for name, path in modules.items():
        imports = Imports()
        is_package = path.name == "__init__.py"

        def walk(nodes: list[ast.stmt], eager: bool, name: str = name, imports: Imports = imports,
                 is_package: bool = is_package) -> None:
            for node in nodes:
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    targets = _targets(node, name, is_package, modules) - {name}
                    (imports.eager if eager else imports.lazy).update(targets)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    walk(list(ast.walk(node))[1:], False)  # every import in the body, nested or not
                elif isinstance(node, ast.ClassDef):
                    walk(node.body, eager)  # a class body runs at load; its methods do not
                elif isinstance(node, ast.If):
                    walk(node.body, eager and not _is_type_checking(node))
                    walk(node.orelse, eager)
                elif isinstance(node, (ast.Try, ast.With, ast.For, ast.While)):
                    for block in ("body", "handlers", "orelse", "finalbody"):
                        for child in getattr(node, block, []):
                            walk(child.body if isinstance(child, ast.ExceptHandler) else [child], eager)

        walk(ast.parse(path.read_text(), str(path)).body, True)
        graph[name] = imports
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path (`a -> b -> a`), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def _package(module: str) -> str:
    return module.partition(".")[0]


# ------------------------------------------------------------------------------------------ tests


def test_the_parser_sees_every_kind_of_import() -> None:
    """The rules below are only as good as the parser: it must find module-level, function-level,
    relative, `from pkg import module` and TYPE_CHECKING imports, and tell eager from lazy."""
    graph = parse_imports()
    assert {"server.config", "server.limits"} <= graph["server.transport"].eager
    assert "server.app" in graph["server.cli"].lazy  # imported inside worker_app()/serve()
    assert "server.app" not in graph["server.cli"].eager
    assert "translator.events" in graph["conformance.catalogue"].eager  # `from translator import events`
    assert "fixtures.corpus" in graph["conformance.corpus"].all
    assert len(graph) > 60


def test_no_import_circles_at_module_level() -> None:
    graph = {name: imports.eager for name, imports in parse_imports().items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_translator_imports_nothing_of_server_conformance_or_fixtures() -> None:
    wrong = {
        name: sorted(dep for dep in imports.all if _package(dep) in ("server", "conformance", "fixtures"))
        for name, imports in parse_imports().items()
        if _package(name) == "translator" and name != TRANSLATOR_SHIM
    }
    assert {name: deps for name, deps in wrong.items() if deps} == {}


def test_conformance_imports_only_the_event_catalogue() -> None:
    wrong = {}
    for name, imports in parse_imports().items():
        if _package(name) != "conformance":
            continue
        allowed = {"translator.events"}
        outside = {dep for dep in imports.all if _package(dep) != "conformance"}
        bad = sorted(dep for dep in outside - allowed
                     if not (name == CORPUS_RUNNER and _package(dep) == "fixtures"))  # fmt: skip
        if bad:
            wrong[name] = bad
    assert wrong == {}


def test_no_server_module_is_over_the_limit() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for name, path in project_modules().items()
        if _package(name) == "server"
    }
    too_long = {path: lines for path, lines in sizes.items() if lines > SERVER_MODULE_LIMIT}
    assert too_long == {}, f"server modules over {SERVER_MODULE_LIMIT} lines (split them by job): {too_long}"


if __name__ == "__main__":  # the "may import" column of docs/architecture.md
    for name, imports in sorted(parse_imports().items()):
        eager = ", ".join(sorted(imports.eager))
        lazy = ", ".join(sorted(imports.lazy - imports.eager))
        print(f"{name}: {eager or '-'}" + (f"; lazily {lazy}" if lazy else ""))
