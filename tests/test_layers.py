"""The package's layering (docs/architecture.md): each part imports only the parts below it,
and no module imports itself back through others. Read from the source (imports under
TYPE_CHECKING count too: a type is a dependency)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "server" / "kgweave"

#: each part of the package, by rank: a part may import parts of a lower rank, or its own
RANK = {
    "kgweave": 0,  # the package root (__version__)
    "typing": 0,
    "errors": 0,
    "arguments": 1,
    "atomic": 1,
    "killpoints": 1,
    "private": 1,
    "subpath": 1,  # a path attribute below a folder attribute (settings, Neo4j server)
    "settings": 1,
    "device": 1,
    "allocator": 1,
    "cpus": 1,
    "data": 2,
    "models": 2,
    "graph": 3,  # databases: triples and text in and out, no model
    "evaluation": 3,
    "training": 4,
    "artifact": 5,
    "predict": 6,
    "engine": 6,
    "language": 7,
    "tuning": 7,  # hyperparameter search and graph recipes: trains through engine
    "serving": 8,
    "changes": 9,
    "dataplane": 10,
    "bootstrap": 11,
    "v1": 11,  # generated protobuf code
    "api": 12,
    "cli": 13,
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kgweave"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "v1" in path.relative_to(PACKAGE).parts:
            continue
        name = ".".join(path.with_suffix("").relative_to(PACKAGE.parent).parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("kgweave"):
                out.add(node.module)
                out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("kgweave")}
    return out


def test_every_part_has_a_rank() -> None:
    parts = {_part(m) for m in _modules()}
    assert parts <= set(RANK), f"new parts need a place in RANK: {sorted(parts - set(RANK))}"


def test_no_upward_imports() -> None:
    upward = []
    for module, path in _modules().items():
        mine = RANK[_part(module)]
        for target in _imports(path):
            theirs = RANK.get(_part(target))
            if theirs is not None and theirs > mine:
                upward.append(f"{module} imports {target}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles_between_modules() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for name in _imports(path):
            # `from kgweave.x import y` names module x.y or attribute y of x: keep the module
            target = name
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    cycles = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    # a package's __init__ re-exporting its own modules is not a cycle of design
    cycles = [c for c in cycles if not _within_one_package_init(c)]
    assert not cycles, "\n".join(cycles)


def _within_one_package_init(cycle: str) -> bool:
    names = cycle.split(" -> ")
    packages = {n for n in names if (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    return bool(packages) and all(any(n.startswith(p) for p in packages) for n in names)
