"""critcore's import graph: every import, at the top of a module or inside a function, goes to a
module of the same or a lower layer, and the top-level imports have no cycle."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "critcore"
LAYERS = [  # lowest first; a module may import its own layer and those below it
    {"errors", "atomic", "hardware", "provenance", "stats", "report"},
    {"data", "generated", "backbones"},
    {"format", "collate", "loss", "model", "metrics", "scaling"},
    {"train", "evaluate"},
    {"llm", "critique", "probe"},
    {"judge", "metacritique"},
    {"config"},
    {"run"},
    {"studies"},
    {"cli"},
]


def _layer(module: str) -> int:
    """The layer of a module; -1 for the package's own attributes (`from . import __version__`)."""
    head = module.split(".")[0]
    return next((i for i, layer in enumerate(LAYERS) if head in layer), -1)


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


def test_every_module_has_a_layer():
    assert all(_layer(module) >= 0 for module, _ in _modules()), [m for m, _ in _modules() if _layer(m) < 0]


def test_no_upward_imports():
    upward = []
    for module, path in _modules():
        for target, _ in _imports(path, module):
            if target and _layer(target) > _layer(module):
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_no_cycles_in_top_level_imports():
    graph = {}
    modules = dict(_modules())
    for module, path in modules.items():
        deps = set()
        for target, top in _imports(path, module):
            while target and target not in modules:  # "llm.cache.CritiqueCache" -> "llm.cache"
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if top and target and target != module:
                deps.add(target)
        graph[module] = deps
    seen, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(m):] + [m])}")
        if m in seen:
            return
        stack.append(m)
        for d in graph.get(m, ()):
            if not d.startswith(m + ".") and not m.startswith(d + "."):  # a package and its own modules
                visit(d)
        stack.pop()
        seen.add(m)

    for m in graph:
        visit(m)
