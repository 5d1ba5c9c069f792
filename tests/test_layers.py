"""critcore's import graph: every module has a layer of its own, and every import, at the top of a
module or inside a function, goes to a module of a lower layer, so there is no import cycle."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "critcore"
LAYERS = [  # lowest first, one module each: a module imports only modules listed before it
    "errors", "progress", "schema", "atomic", "hardware", "distributed", "provenance", "stats", "report",
    "records", "generated", "readers", "loaders", "data", "backbones", "format", "export", "recipe", "card",
    "collate", "loss", "model", "metrics", "scaling", "evaluate", "train", "probe",
    "llm.cache", "llm.complete", "llm.prompts", "llm.http", "llm.local", "llm",
    "critics.base", "critics.local", "critics.openai", "critics.simulated", "critics",
    "critique", "judge", "metacritique",
    "params", "config",
    "run", "splits", "rms", "jobs",
    "studies.base", "studies.protocol", "studies.rq1_runs", "studies.validation", "studies.budget",
    "studies.judge", "studies.metacritique", "studies.rq1_charts", "studies.rq1", "studies.quickstart", "studies.rq2",
    "studies.runner", "studies",
    "cli",
]


def _module_of(name: str) -> str | None:
    """The module `name` is or lies in ("llm.cache.CritiqueCache" -> "llm.cache"); None for the
    package's own attributes (`from . import __version__`)."""
    while name and name not in LAYERS:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


def _layer(module: str) -> int:
    found = _module_of(module)
    return LAYERS.index(found) if found else -1


def _imports(path: Path, module: str):
    """(imported critcore module, at the top level?) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    if path.name == "__init__.py":
        package = module
    else:
        package = module.rsplit(".", 1)[0] if "." in module else ""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = parts[: len(parts) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("critcore."):
                target = node.module.removeprefix("critcore.")
            else:
                continue
            names = [target] if node.module else [f"{target}.{a.name}".strip(".") for a in node.names]
            for name in names:
                yield name.strip("."), id(node) in top
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("critcore."):
                    yield a.name.removeprefix("critcore."), id(node) in top


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts == ["__init__"]:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def test_every_module_has_a_layer_of_its_own():
    modules = [m for m, _ in _modules()]
    assert sorted(modules) == sorted(LAYERS), (set(modules) ^ set(LAYERS))  # each listed once, none stale


def test_no_upward_imports():
    """Lazy imports (inside a function) included: there is no import circle, not even a deferred one."""
    upward = []
    for module, path in _modules():
        for target, _ in _imports(path, module):
            if target and _layer(target) > _layer(module):
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_no_import_cycles():
    graph = {}
    modules = dict(_modules())
    for module, path in modules.items():
        graph[module] = {found for target, _ in _imports(path, module)
                         if (found := _module_of(target)) and found != module}
    seen, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(m):] + [m])}")
        if m in seen:
            return
        stack.append(m)
        for d in graph.get(m, ()):
            visit(d)
        stack.pop()
        seen.add(m)

    for m in graph:
        visit(m)
