"""The layout's rules, checked on the source so they stay true.

- ``bot.engine`` (the interpreter), ``bot.automations`` (the rule engine), ``bot.shop`` (the
  shop's rules) and ``bot.kommo_import`` (Kommo conversion) are pure: no I/O library, no clock, no
  other layer of ours;
- each package imports only the layers below it (docs/architecture.md draws them);
- no module is over 600 lines (tests and benches included);
- no import cycle between modules, counting imports inside functions and under
  ``TYPE_CHECKING`` (a lazy or type-only import that closes a cycle hides a layering mistake);
- a test's config that names its ``flows_dir`` names its ``automations_dir`` too: the default
  (``./automations``) is the folder pytest runs in, the repo's example rules, which would act on
  the test's leads and add background work to what it counts or waits for.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600

#: What each of our packages may import, among our own packages. A package not listed here may
#: import anything of ours (only ``bot.server`` and ``bot.cli`` sit at the top).
LAYERS: dict[str, set[str]] = {
    "bot.engine": {"bot.builder", "bot.messages", "bot.errors", "bot.lazy"},
    "bot.builder": {"bot.errors", "bot.messages", "bot.lazy", "bot.inputs"},
    "bot.automations": {"bot.builder", "bot.engine", "bot.errors", "bot.messages"},
    "bot.shop": {"bot.errors"},
    "bot.store": {"bot.engine", "bot.builder", "bot.messages", "bot.errors", "bot.shop"},
    "bot.outward": {"bot.engine", "bot.builder", "bot.store", "bot.config", "bot.errors", "crm_bridge"},
    "bot.simulation": {"bot.engine", "bot.builder", "bot.automations", "bot.messages", "bot.errors", "bot.shop",
                       "bot.runtime.driver", "crm_bridge"},
    "bot.runtime": {"bot.engine", "bot.builder", "bot.automations", "bot.store", "bot.outward", "bot.messages",
                    "bot.errors", "bot.config", "bot.logs", "bot.shop", "crm_bridge"},
    "bot.channels": {"bot.engine", "bot.builder", "bot.store", "bot.messages", "bot.errors", "bot.config",
                     "bot.inputs", "bot.logs", "crm_bridge"},
    "crm_bridge": {"bot.errors", "bot.config", "bot.inputs", "bot.store", "bot.outward.netguard", "bot.lazy"},
    "bot.kommo_import": {"bot.builder", "bot.errors"},
}

#: Libraries that do I/O (or read the clock); the interpreter never imports them.
IMPURE = {"redis", "hiredis", "aiohttp", "aiosmtplib", "telegram", "twilio", "socket", "ssl", "asyncio",
          "subprocess", "http", "urllib", "smtplib", "time", "threading", "os", "msgpack"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in ("bot", "crm_bridge"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _package(name: str) -> str:
    path = MODULES[name]
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str) -> Iterator[tuple[str, int]]:
    """Every module ``name`` imports, anywhere in the file, with the line of the import."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(name).split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), node.lineno


def _ours(target: str) -> str | None:
    """The module of ours that ``target`` names (a name inside a module maps to the module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _layer(name: str) -> str | None:
    for layer in sorted(LAYERS, key=len, reverse=True):
        if name == layer or name.startswith(layer + "."):
            return layer
    return None


def _allowed(target: str, layer: str) -> bool:
    if target == layer or target.startswith(layer + "."):
        return True
    return any(target == ok or target.startswith(ok + ".") for ok in LAYERS[layer])


def test_the_pure_layers_import_no_io_library() -> None:
    bad = [f"{name}:{line} imports {target}"
           for name in MODULES
           if name.startswith(("bot.engine", "bot.automations", "bot.shop", "bot.kommo_import"))
           for target, line in _imports(name) if target.split(".")[0] in IMPURE]
    assert bad == []


def test_each_package_imports_only_the_layers_below_it() -> None:
    bad = []
    for name in MODULES:
        layer = _layer(name)
        if layer is None:
            continue
        for target, line in _imports(name):
            ours = _ours(target)
            if ours is not None and not _allowed(ours, layer):
                bad.append(f"{name}:{line} imports {ours}")
    assert bad == []


def test_no_module_is_over_600_lines() -> None:
    paths = [*MODULES.values(), *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "bench").rglob("*.py"))]
    long = {str(path.relative_to(ROOT)): n for path in paths if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_every_test_config_with_flows_names_its_automations_too() -> None:
    careless = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if "flows_dir" in keys and "automations_dir" not in keys:
                    careless.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert careless == [], f"set automations_dir (tests.server.conftest.NO_AUTOMATIONS): {careless}"


def test_there_is_no_import_cycle() -> None:
    graph = {name: sorted({ours for target, _ in _imports(name)
                           if (ours := _ours(target)) is not None and ours != name})
             for name in MODULES}
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the graph is small, but recursion depth is not ours to pick)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(graph[step])))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(component)
    return out


@pytest.mark.parametrize("graph, cycles", [
    ({"a": ["b"], "b": ["a"], "c": []}, [["a", "b"]]),
    ({"a": ["b"], "b": ["c"], "c": []}, []),
    ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, [["a", "b", "c"]]),
])
def test_the_cycle_finder_finds_cycles(graph: dict[str, list[str]], cycles: list[list[str]]) -> None:
    assert [sorted(c) for c in _strongly_connected(graph) if len(c) > 1] == cycles
