"""The import order of ARCHITECTURE §7, held by reading the code: every `tutorloop` import, at module
level or inside a function, goes to a module on the same layer or a lower one, and no modules
import each other in a cycle. A module missing from LAYERS fails, so a new file is placed on purpose.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tutorloop"
NAMES = ("types, errors", "config, graders, models", "generators, tasks, trainers", "agents, envs",
         "learner, checkpoint, metrics", "loop", "cli")

# The longest matching dotted prefix gives a module's layer; `tutorloop` matches the package face only.
# Names §7 does not give are placed where their imports put them, each with its reason.
LAYERS = {
    "tutorloop": (0, "the package face re-exports only types and errors"),
    "tutorloop.types": (0, ""),
    "tutorloop.errors": (0, ""),
    "tutorloop.config": (1, ""),
    "tutorloop.agent_config": (1, "the `agents:` section of the run config, which re-exports it"),
    "tutorloop.env_config": (1, "the `env:` section of the run config, which re-exports it"),
    "tutorloop.learner_config": (1, "the `learners:` and `trainer:` sections of the run config, which re-exports them"),
    "tutorloop.task_config": (1, "the `tasks:` and `eval.transfer` sections of the run config, which re-exports them"),
    "tutorloop.graders": (1, ""),
    "tutorloop.models": (1, ""),
    "tutorloop.hardware": (1, "measures the machine for models' and trainers' dtype; imports nothing"),
    "tutorloop.generators": (2, ""),
    "tutorloop.tasks": (2, ""),
    "tutorloop.trainers": (2, ""),
    "tutorloop.objectives": (1, "the objective registry: config validates each objective's parameters "
                                         "against it (§7: config validation reads the registry)"),
    "tutorloop.objectives.losses": (1, "pure loss functions over tensors (torch only), which the registry names"),
    "tutorloop.objectives.pg_losses": (1, "pure policy-gradient losses over tensors (torch only), as losses"),
    "tutorloop.trainers.weight_sync": (2, "a trainer's weights as tensors; generators load them (same layer)"),
    "tutorloop.runtime": (2, "spawns generators and trainers (Ray or local); agents and learners receive it"),
    "tutorloop.agents": (3, ""),
    "tutorloop.envs": (3, ""),
    "tutorloop.envs.moves": (3, "the envs' shared steps; they call agent handles (same layer, agents never import envs)"),
    "tutorloop.envs.tutoring_metrics": (3, "success@k and telling@k of dialogue episodes, for the envs' metrics"),
    "tutorloop.learner": (4, ""),
    "tutorloop.checkpoint": (4, ""),
    "tutorloop.metrics": (4, ""),
    "tutorloop.viewer": (4, "writes the run's transcripts as HTML, beside the metrics sink"),
    "tutorloop.loop": (5, ""),
    "tutorloop.chat": (5, "a dialogue where a person is one agent; borrows loop's problem pool"),
    "tutorloop.cli": (6, ""),
}


REGISTRY_ENTRY = re.compile(r"^\w+(?:\.\w+)+:\w+$")  # "tutorloop.generators.hf:HFGenerator", imported by name


def modules(package: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str], root: str) -> set[str]:
    """The package's modules `name` imports anywhere in its file: `from a import b` counts as an
    import of module a.b when there is one, else of a; a registry string "a.b:Attr" counts too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and REGISTRY_ENTRY.match(node.value):
            found.add(node.value.partition(":")[0])
    return {m for m in found if m == root or m.startswith(root + ".")}


def layer_of(name: str, table: dict[str, tuple[int, str]], root: str) -> int:
    parts = name.split(".")
    for n in range(len(parts), 1, -1):
        if ".".join(parts[:n]) in table:
            return table[".".join(parts[:n])][0]
    if name == root:
        return table[root][0]
    raise AssertionError(f"{name} has no layer: add it to LAYERS in tests/unit/test_layering.py")


def graph(package: Path) -> dict[str, set[str]]:
    found = modules(package)
    return {name: imports(name, path, set(found), package.name) for name, path in found.items()}


def rooms(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between the package's top-level files and folders (tutorloop.agents.* is one)."""
    def top(name: str) -> str:
        return ".".join(name.split(".")[:2])

    out: dict[str, set[str]] = {}
    for source, targets in edges.items():
        out.setdefault(top(source), set()).update(top(t) for t in targets if top(t) != top(source))
    return out


def upward_imports(edges: dict[str, set[str]], table: dict[str, tuple[int, str]], root: str) -> list[str]:
    bad = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            if target not in edges:
                bad.append(f"{source} imports {target}, which is not a module")
            elif layer_of(target, table, root) > layer_of(source, table, root):
                bad.append(f"{source} (layer {layer_of(source, table, root)}) imports {target} "
                           f"(layer {layer_of(target, table, root)})")
    return bad


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_every_module_has_a_layer_and_imports_only_downward():
    edges = graph(PACKAGE)
    assert len(edges) > 40  # the whole package was read
    assert upward_imports(edges, LAYERS, "tutorloop") == []


def test_no_import_cycles():
    assert find_cycle(graph(PACKAGE)) is None


def test_no_import_cycles_between_packages():
    """A cycle between folders (agents/ and envs/ importing each other) is one too, even when no
    two files close it."""
    assert find_cycle(rooms(graph(PACKAGE))) is None


def test_each_layer_is_named_in_the_order_of_section_7():
    assert sorted({layer for layer, _ in LAYERS.values()}) == list(range(len(NAMES)))
    named = {n.strip() for names in NAMES for n in names.split(",")}
    for name in named:
        assert LAYERS[f"tutorloop.{name}"][0] == next(i for i, names in enumerate(NAMES) if name in names)
    assert all(reason for key, (_, reason) in LAYERS.items() if key.rpartition(".")[2] not in named | {"tutorloop"})


def test_the_checker_sees_upward_imports_inside_functions_and_cycles(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from pkg.sub import high\n")
    (pkg / "sub" / "__init__.py").write_text("from . import high\n")
    (pkg / "sub" / "high.py").write_text("import pkg.low\nREGISTRY = {'x': 'pkg.sub.gone:Thing'}\n")
    table = {"pkg": (0, ""), "pkg.low": (0, ""), "pkg.sub": (1, "")}
    edges = graph(pkg)
    assert edges["pkg.low"] == {"pkg.sub.high"} and edges["pkg.sub"] == {"pkg.sub.high"}
    assert upward_imports(edges, table, "pkg") == [
        "pkg.low (layer 0) imports pkg.sub.high (layer 1)", "pkg.sub.high imports pkg.sub.gone, which is not a module"]
    assert find_cycle(edges) == ["pkg.low", "pkg.sub.high", "pkg.low"]
    assert find_cycle(rooms(edges)) == ["pkg.low", "pkg.sub", "pkg.low"]
    with pytest.raises(AssertionError, match="pkg.other has no layer"):
        layer_of("pkg.other", table, "pkg")
