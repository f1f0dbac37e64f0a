"""The core's shape: no import circle (type-only imports aside), no ZenML, no folder holding most of the code."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "tuneline"


def _module(path: Path) -> str:
    return ".".join(path.relative_to(CORE.parent).with_suffix("").parts).removesuffix(".__init__")


def _exists(module: str) -> bool:
    path = CORE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _runtime_imports(path: Path) -> set[str]:
    """Modules imported when the file runs; `from package import module` imports the module, not the package's
    other contents."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= {s for s in submodules if _exists(s)} or {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    imports = {_module(p): _runtime_imports(p) for p in CORE.rglob("*.py")}
    return {m: {d for d in deps if d in imports and d != m} for m, deps in imports.items()}


def test_no_import_circle():
    graph, state, circles = _graph(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                circles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_core_never_imports_zenml():
    users = [_module(p) for p in CORE.rglob("*.py") if any(d.split(".")[0] == "zenml" for d in _runtime_imports(p))]
    assert users == []


def test_no_folder_holds_most_of_the_code():
    lines: dict[Path, int] = {}
    for path in CORE.parent.rglob("*.py"):
        if ".venv" not in path.parts and "tests" not in path.parts:
            lines[path.parent] = lines.get(path.parent, 0) + len(path.read_text().splitlines())
    largest = max(lines, key=lines.get)
    assert lines[largest] / sum(lines.values()) < 0.25, (largest, lines[largest])
