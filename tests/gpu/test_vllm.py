"""The vllm and openai generators on real vLLM engines and tiny random models, checked against the
HF generator. Needs CUDA and the vllm extra; skipped otherwise. Run: `pytest -m gpu tests/gpu`.

Engines start once per module (each takes about a minute); a vLLM server for the openai generator
listens on 127.0.0.1 only and is stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.gpu
vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from conftest import save_tiny_lm  # noqa: E402

from tutorloop.generators.hf import HFGenerator  # noqa: E402
from tutorloop.generators.openai import OpenAIGenerator  # noqa: E402
from tutorloop.generators.vllm import VLLMGenerator  # noqa: E402
from tutorloop.types import SamplingParams  # noqa: E402

PROMPTS = [({"role": "user", "content": "1 + 2 ="},), ({"role": "user", "content": "a much longer prompt, 40 + 2 ="},)]
TARGETS = [[40, 41, 42, 100, 7], [50, 60, 70, 80, 90, 3]]
LORA = {"r": 8, "lora_alpha": 16.0, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"],
        "task_type": "CAUSAL_LM"}


def run(coro):
    return asyncio.run(coro)


def max_gap(a, b) -> float:
    return max(abs(x - y) for row_a, row_b in zip(a, b) for x, y in zip(row_a.logprobs, row_b.logprobs))


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("vllm_student"), seed=0, hidden=128)  # head_dim 64


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("vllm_teacher"), seed=1, hidden=128)


@pytest.fixture(scope="module")
def engine(student_dir):
    return VLLMGenerator(str(student_dir), dtype="float32", gpu_memory_utilization=0.2, sleep_mode=True)


def test_sampled_logprobs_equal_prompt_logprobs(engine):
    outs = run(engine.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=12, n=2)))
    assert len(outs) == 4
    scores = run(engine.score([p for p in PROMPTS for _ in range(2)], [o.token_ids for o in outs], top_k=5))
    for out, score in zip(outs, scores):
        assert len(out.token_ids) == len(out.logprobs) == len(score.logprobs) > 0
        assert max(abs(a - b) for a, b in zip(out.logprobs, score.logprobs)) < 1e-3
        assert all(len(row) == 5 for row in score.topk_ids)


def test_scores_match_the_hf_generator(engine, student_dir):
    hf = HFGenerator(str(student_dir))
    got, want = run(engine.score(PROMPTS, TARGETS, top_k=4)), run(hf.score(PROMPTS, TARGETS, top_k=4))
    assert max_gap(got, want) < 2e-3
    assert [g.topk_ids[0] for g in got] == [w.topk_ids[0] for w in want]


def test_stop_regex_and_stats(engine):
    outs = run(engine.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=40, stop_regex=r"\d")))
    assert all(not any(ch.isdigit() for ch in o.text[:-1]) for o in outs)  # cut at the first digit, if any
    assert run(engine.stats())["gen_tokens"] > 0


def test_sleep_and_wake_keep_the_weights(engine):
    before = run(engine.score(PROMPTS, TARGETS, top_k=0))
    run(engine.sleep())
    run(engine.wake())
    assert max_gap(run(engine.score(PROMPTS, TARGETS, top_k=0)), before) < 1e-5
    run(engine.sleep())  # a call while asleep wakes the engine first
    assert max_gap(run(engine.score(PROMPTS, TARGETS, top_k=0)), before) < 1e-5


def test_full_weight_sync_turns_it_into_the_teacher(engine, teacher_dir):
    teacher = HFGenerator(str(teacher_dir))
    run(engine.sleep())  # syncing into a sleeping engine wakes it first
    run(engine.load_weights(list(teacher.model.state_dict().items()), version=5))
    assert max_gap(run(engine.score(PROMPTS, TARGETS, top_k=0)), run(teacher.score(PROMPTS, TARGETS, top_k=0))) < 2e-3
    assert run(engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=4)))[0].policy_version == 5


def test_lora_sync_matches_peft(student_dir):
    from peft import get_peft_model_state_dict

    gen = VLLMGenerator(str(student_dir), dtype="bfloat16", lora=LORA, gpu_memory_utilization=0.2)
    hf = HFGenerator(str(student_dir), lora=LORA)
    base = run(gen.score(PROMPTS, TARGETS, top_k=0))
    torch.manual_seed(0)
    for name, param in hf.model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0.0, 0.5)
    run(gen.load_weights(list(get_peft_model_state_dict(hf.model).items()), version=1))
    tuned, want = run(gen.score(PROMPTS, TARGETS, top_k=0)), run(hf.score(PROMPTS, TARGETS, top_k=0))
    assert max_gap(tuned, want) < 0.25 * max_gap(base, want)  # bf16 engine vs fp32 reference
    for name, param in hf.model.named_parameters():
        if "lora_B" in name:
            param.data.zero_()
    run(gen.load_weights(list(get_peft_model_state_dict(hf.model).items()), version=2))
    assert max_gap(run(gen.score(PROMPTS, TARGETS, top_k=0)), base) < 0.05


@pytest.fixture(scope="module")
def server(student_dir):
    """`vllm serve` on 127.0.0.1, as the openai generator would meet it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(student_dir),
                             "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny",
                             "--dtype", "float32", "--gpu-memory-utilization", "0.2", "--max-logprobs", "64"])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("vllm serve did not come up")
                time.sleep(2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_openai_generator_against_vllm_serve(server, student_dir):
    gen = OpenAIGenerator("tiny", base_url=f"{server}/v1", timeout=60)
    outs = run(gen.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=12, n=2)))
    assert len(outs) == 4 and all(len(o.token_ids) == len(o.logprobs) > 0 for o in outs)
    scores = run(gen.score([p for p in PROMPTS for _ in range(2)], [o.token_ids for o in outs], top_k=5))
    for out, score in zip(outs, scores):
        assert max(abs(a - b) for a, b in zip(out.logprobs, score.logprobs)) < 1e-3
        assert all(len(row) == 5 for row in score.topk_ids)
    want = run(HFGenerator(str(student_dir)).score(PROMPTS, TARGETS, top_k=0))
    assert max_gap(run(gen.score(PROMPTS, TARGETS, top_k=0)), want) < 2e-3
    version = json.loads(urllib.request.urlopen(f"{server}/version", timeout=5).read())["version"]
    assert gen.is_vllm and version
