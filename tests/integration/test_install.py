"""`pip install '.[vllm]'` resolves against the project's own pins: pip's dry run (nothing installed,
no CUDA wheel on this machine) picks vllm 0.33.0, exactly the pinned core versions and a torch in the
core range. Slow tier: it asks PyPI (skipped when PyPI is unreachable) and takes a minute or two."""

import importlib.metadata
import json
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/vllm/", timeout=10).close()
        return True
    except OSError:
        return False


def _dry_run(tmp_path: Path) -> dict[str, str]:
    """The versions pip would install for `-e ROOT[vllm]` in an empty environment."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--report", str(report), "-e", f"{ROOT}[vllm]"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"`{' '.join(cmd)}` did not resolve:\n{done.stderr[-3000:]}"
    install = json.loads(report.read_text())["install"]
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in install}


def test_vllm_extra_resolves_with_the_core_pins(tmp_path):
    if not _pypi_reachable():
        pytest.skip("PyPI is unreachable")
    torch_before = importlib.metadata.version("torch")
    chosen = _dry_run(tmp_path)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    vllm = Requirement(project["optional-dependencies"]["vllm"][0])
    assert chosen["vllm"] == str(next(iter(vllm.specifier)).version) == "0.33.0"
    for line in project["dependencies"]:
        req = Requirement(line)
        version = chosen[canonicalize_name(req.name)]
        assert req.specifier.contains(version), f"pip chose {req.name} {version}, the pin is {line}"
    assert chosen["torch"] == "2.14.0"  # vLLM 0.33.0's own torch pin, inside the core range
    assert importlib.metadata.version("torch") == torch_before  # a dry run: nothing was installed
