"""The code's shape, as the style guide asks for it: no import circle, config at the ground floor, short modules.

Imports are read from the source (module level only: an import inside a function runs when it is called,
after every module has loaded), so this holds without importing anything.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ito_sweeps", "analysis")
MAX_LINES = 400
# config.py's own floor: its eval section, the generic typed tree, the declared names, strict YAML, the error base (and the
# package itself, whose __init__ imports nothing)
GROUND_FLOOR = {"ito_sweeps", "ito_sweeps.config", "ito_sweeps.eval_config", "ito_sweeps.typed_tree", "ito_sweeps.catalog",
                "ito_sweeps.strict_yaml", "ito_sweeps.errors"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level (`from a import b` may import module a.b)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        edges = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            edges |= {t for t in targets if t in known and t != name}
        graph[name] = edges
    return graph


def test_no_import_circle():
    graph = imports()
    done, path = set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError(f"import circle: {' -> '.join(path[path.index(module):] + [module])}")
        if module in done:
            return
        path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_config_imports_nothing_above_it():
    graph, reached, todo = imports(), set(), ["ito_sweeps.config"]
    while todo:
        module = todo.pop()
        for target in graph[module] - reached:
            reached.add(target)
            todo.append(target)
    assert reached <= GROUND_FLOOR, sorted(reached - GROUND_FLOOR)


def test_modules_stay_short():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by concern: {long}"
