"""Static guards: nothing in tutorloop can execute text (model output, data, config) or unpickle a
file. Model output is only ever graded as a string, matched with regexes, and tokenized."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tutorloop"
SOURCES = sorted(PACKAGE.rglob("*.py"))
CALLS = {"eval", "exec", "compile", "__import__", "breakpoint"}
"""Builtins that turn a string into running code."""
MODULE_CALLS = {("os", "system"), ("os", "popen"), ("os", "execv"), ("os", "execvp"), ("pickle", "load"),
                ("pickle", "loads"), ("marshal", "loads"), ("torch", "load"), ("yaml", "load"),
                ("yaml", "unsafe_load"), ("dill", "load"), ("dill", "loads")}
MODULES = {"pickle", "subprocess", "marshal", "shelve", "dill", "cloudpickle"}


def _violations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in CALLS:
                found.append(f"{func.id}()")
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                    and (func.value.id, func.attr) in MODULE_CALLS:
                found.append(f"{func.value.id}.{func.attr}()")
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in MODULES]
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in MODULES:
            found.append(f"from {node.module} import")
    return [f"{path.name}: {v}" for v in found]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_code_execution_or_unpickling(path):
    assert _violations(path) == []


def test_the_guard_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport torch\nx = eval(reply)\ny = torch.load(f)\n")
    assert [v.split(": ")[1] for v in _violations(bad)] == ["import pickle", "eval()", "torch.load()"]
