"""VLLMGenerator's own code, with the vLLM engine replaced by a fake.

The fake mirrors vLLM 0.33.0's offline structures (`vllm/outputs.py`, `vllm/logprobs.py`,
`vllm/sampling_params.py`, `vllm/lora/request.py`): `LLM.generate` returns one `RequestOutput` per
prompt whose `outputs` hold n `CompletionOutput`s; with `logprobs=0` each sampled position's dict
holds only the sampled token; `prompt_logprobs[0]` is None and entry i scores prompt token i given
the tokens before it, holding the top-k plus the actual token (whose rank may be beyond k).
Its "model" is a toy bigram distribution, so sampled log-probs and scores must agree exactly.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tutorloop.agents.protocol import Generator
from tutorloop.errors import UserError
from tutorloop.generators.vllm import VLLMGenerator, _import_vllm, lora_rank_slot, target_scores
from tutorloop.graders import ANSWER_STOP
from tutorloop.models import render_prompt_ids
from tutorloop.types import SamplingParams

PROMPTS = [({"role": "user", "content": "1 + 2 ="},), ({"role": "user", "content": "a longer prompt, 40 + 2 ="},)]
SCRIPT = "Work: 40 + 2. The answer is: 42.\nThen more words"


@dataclass
class Logprob:  # vllm.logprobs.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:  # vllm.outputs.RequestOutput
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass(frozen=True)
class FakeSamplingParams:  # the vllm.SamplingParams fields the generator sets
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    seed: int | None = None


@dataclass(frozen=True)
class FakeLoRARequest:  # vllm.lora.request.LoRARequest
    lora_name: str
    lora_int_id: int
    lora_path: str = ""


def toy_logprobs(prev: int, vocab: int) -> list[float]:
    """log p(· | previous token) of the fake model."""
    logits = [((t * 31 + prev * 17) % 97) / 8.0 for t in range(vocab)]
    top = max(logits)
    norm = top + math.log(sum(math.exp(x - top) for x in logits))
    return [x - norm for x in logits]


def ranked(logps: list[float], token: int, k: int) -> dict[int, Logprob]:
    """One position as vLLM reports it: the top-k by rank, plus `token` with its own rank."""
    order = sorted(range(len(logps)), key=lambda t: -logps[t])
    out = {t: Logprob(logps[t], rank=r + 1) for r, t in enumerate(order[:k])}
    out.setdefault(token, Logprob(logps[token], rank=order.index(token) + 1))
    return out


@dataclass
class FakeLLM:
    kwargs: dict[str, Any]
    script_ids: list[int]
    eos: int
    vocab: int
    calls: list[tuple[str, Any]] = field(default_factory=list)
    llm_engine: Any = None

    def __post_init__(self) -> None:
        self.llm_engine = self  # add_lora / remove_lora live on LLM.llm_engine

    def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
        self.calls.append(("generate", (prompts, sampling_params, lora_request)))
        per_prompt = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(per_prompt) == len(prompts)  # vLLM pairs a list of params with the prompts one by one
        return [self._request(i, p["prompt_token_ids"], sp) for i, (p, sp) in enumerate(zip(prompts, per_prompt))]

    def _request(self, i: int, prompt: list[int], sp: FakeSamplingParams) -> RequestOutput:
        prompt_logprobs = None
        if sp.prompt_logprobs is not None:
            prompt_logprobs = [None] + [ranked(toy_logprobs(prompt[j - 1], self.vocab), prompt[j], sp.prompt_logprobs)
                                        for j in range(1, len(prompt))]
        ids = (self.script_ids + [self.eos])[:sp.max_tokens]
        samples = []
        for index in range(sp.n):
            prevs = [prompt[-1]] + ids[:-1]
            logprobs = [{t: Logprob(toy_logprobs(p, self.vocab)[t], rank=None)} for p, t in zip(prevs, ids)]
            samples.append(CompletionOutput(index, "", list(ids), sum(d[t].logprob for d, t in zip(logprobs, ids)),
                                            logprobs, finish_reason="stop" if ids[-1] == self.eos else "length"))
        return RequestOutput(str(i), None, list(prompt), prompt_logprobs, samples)

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.calls.append(("collective_rpc", (method, args)))
        return [None]

    def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
        self.calls.append(("reset_prefix_cache", None))
        return True

    def sleep(self, level=1, mode="abort"):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tags))
        return True

    def add_lora(self, lora_request):
        assert (Path(lora_request.lora_path) / "adapter_config.json").is_file()  # vLLM reads it now
        self.calls.append(("add_lora", lora_request))
        return True

    def remove_lora(self, lora_id):
        self.calls.append(("remove_lora", lora_id))
        return True

    def named(self, name: str) -> list[Any]:
        return [arg for call, arg in self.calls if call == name]


class FakeVLLM:
    """Stands in for the `vllm` module: `LLM`, `SamplingParams`, `LoRARequest`."""

    SamplingParams = FakeSamplingParams
    LoRARequest = FakeLoRARequest

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.llm = tokenizer, None

    def LLM(self, **kwargs: Any) -> FakeLLM:  # noqa: N802 - the module's class name
        ids = self.tokenizer(SCRIPT, add_special_tokens=False)["input_ids"]
        self.llm = FakeLLM(kwargs, ids, self.tokenizer.eos_token_id, len(self.tokenizer))
        return self.llm


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A model directory that holds only the tokenizer: the fake engine needs no weights."""
    path = tmp_path_factory.mktemp("tokenizer_only")
    tiny_tokenizer.save_pretrained(path)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return path


def make(tokenizer_dir: Path, tiny_tokenizer: Any, **kwargs: Any) -> tuple[VLLMGenerator, FakeLLM]:
    fake = FakeVLLM(tiny_tokenizer)
    gen = VLLMGenerator(str(tokenizer_dir), backend=fake, **kwargs)
    return gen, fake.llm


def test_engine_arguments(tokenizer_dir, tiny_tokenizer):
    gen, llm = make(tokenizer_dir, tiny_tokenizer, lora={"r": 12}, tensor_parallel=2, gpu_memory_utilization=0.4,
                    sleep_mode=True, max_batch_size=64, seed=3)
    assert isinstance(gen, Generator)
    args = llm.kwargs
    assert args["logprobs_mode"] == "raw_logprobs" and args["max_num_seqs"] == 64 and args["seed"] == 3
    assert args["max_logprobs"] >= 1024 and args["trust_remote_code"] is False
    assert args["tensor_parallel_size"] == 2 and args["gpu_memory_utilization"] == 0.4 and args["enable_sleep_mode"]
    assert args["enforce_eager"] is False  # compiled with CUDA graphs unless a test asks for a quick start
    assert args["enable_lora"] and args["max_loras"] == 1 and args["max_lora_rank"] == 16
    _, plain = make(tokenizer_dir, tiny_tokenizer)
    assert "enable_lora" not in plain.kwargs
    _, auto = make(tokenizer_dir, tiny_tokenizer, dtype="auto")  # vLLM's own auto would read config.json
    assert auto.kwargs["dtype"] == ("bfloat16" if __import__("torch").cuda.is_available() else "float32")
    assert [lora_rank_slot(r) for r in (1, 2, 8, 300)] == [1, 8, 8, 320]


def test_generate_n_per_prompt_consecutively_with_raw_logprobs(tokenizer_dir, tiny_tokenizer):
    gen, llm = make(tokenizer_dir, tiny_tokenizer)
    outs = asyncio.run(gen.generate(PROMPTS, SamplingParams(temperature=0.7, max_new_tokens=200, n=2)))
    prompts, (sp, other), lora = llm.named("generate")[0]
    assert [p["prompt_token_ids"] for p in prompts] == [render_prompt_ids(tiny_tokenizer, p) for p in PROMPTS]
    assert (sp.n, sp.max_tokens, sp.logprobs, sp.temperature) == (2, 200, 0, 0.7) and lora is None
    assert other.seed == sp.seed + 2  # each prompt's samples get seeds of their own
    assert len(outs) == 4 and outs[0].token_ids == outs[1].token_ids
    first = render_prompt_ids(tiny_tokenizer, PROMPTS[0])[-1]
    assert outs[0].logprobs[0] == toy_logprobs(first, len(tiny_tokenizer))[outs[0].token_ids[0]]
    assert outs[0].token_ids[-1] == tiny_tokenizer.eos_token_id and outs[0].finish_reason == "stop"
    assert outs[0].text == SCRIPT and len(outs[0].logprobs) == len(outs[0].token_ids)


def test_sampled_logprobs_equal_teacher_forced_scores(tokenizer_dir, tiny_tokenizer):
    """Scoring a sample under the context that produced it returns its own log-probs: the target
    span is read from prompt_logprobs at the right offset."""
    gen, llm = make(tokenizer_dir, tiny_tokenizer)
    outs = asyncio.run(gen.generate(PROMPTS, SamplingParams(max_new_tokens=12)))
    scores = asyncio.run(gen.score(PROMPTS, [o.token_ids for o in outs], top_k=3))
    _, sp, _ = llm.named("generate")[-1]
    assert (sp.max_tokens, sp.prompt_logprobs, sp.temperature) == (1, 3, 1.0)
    for out, score in zip(outs, scores):
        assert score.logprobs == out.logprobs and len(score.logprobs) == 12
        assert all(len(row) == 3 for row in score.topk_ids)
        assert all(a >= b for row in score.topk_logprobs for a, b in zip(row, row[1:]))
    assert out.logprobs[-1] <= score.topk_logprobs[-1][0]


def test_sampling_state_resumes_the_seed_stream(tokenizer_dir, tiny_tokenizer):
    gen, llm = make(tokenizer_dir, tiny_tokenizer, seed=7)
    asyncio.run(gen.generate(PROMPTS, SamplingParams(n=3)))
    state = asyncio.run(gen.sampling_state())
    asyncio.run(gen.generate(PROMPTS[:1], SamplingParams()))
    resumed, again = make(tokenizer_dir, tiny_tokenizer, seed=7)
    asyncio.run(resumed.load_sampling_state(state))
    asyncio.run(resumed.generate(PROMPTS[:1], SamplingParams()))
    assert again.named("generate")[0][1][0].seed == llm.named("generate")[1][1][0].seed == 7 * 1_000_003 + 6


def test_target_scores_keep_the_actual_token_out_of_the_top_k():
    row = {5: Logprob(-0.1, 1), 9: Logprob(-2.0, 2), 7: Logprob(-4.0, 7)}  # actual token 7 ranks 7th
    got = target_scores([None, {1: Logprob(-1.0, 1)}, row], context=[3, 1], target=[7], top_k=2)
    assert got.logprobs == (-4.0,) and got.topk_ids == ((5, 9),) and got.topk_logprobs == ((-0.1, -2.0),)
    assert target_scores([None, row], context=[3], target=[7], top_k=0).topk_ids == ()


def test_empty_targets_need_no_engine_call(tokenizer_dir, tiny_tokenizer):
    gen, llm = make(tokenizer_dir, tiny_tokenizer)
    assert asyncio.run(gen.score(PROMPTS[:1], [()], top_k=4))[0].logprobs == ()
    assert llm.named("generate") == []


def test_stop_regex_cuts_after_the_answer_line(tokenizer_dir, tiny_tokenizer):
    gen, _ = make(tokenizer_dir, tiny_tokenizer)
    (out,) = asyncio.run(gen.generate(PROMPTS[:1], SamplingParams(max_new_tokens=200, stop_regex=ANSWER_STOP)))
    assert out.text == "Work: 40 + 2. The answer is: 42." and out.finish_reason == "stop"
    assert tiny_tokenizer.decode(out.token_ids) == "Work: 40 + 2. The answer is: 42.\n"
    assert len(out.logprobs) == len(out.token_ids)
    (short,) = asyncio.run(gen.generate(PROMPTS[:1], SamplingParams(max_new_tokens=5)))
    assert short.finish_reason == "length" and len(short.token_ids) == 5


def test_full_weight_sync_reloads_every_worker_and_drops_the_prefix_cache(tokenizer_dir, tiny_tokenizer):
    import torch

    from tutorloop.generators.vllm_worker import decode_tensors

    gen, llm = make(tokenizer_dir, tiny_tokenizer)
    assert llm.kwargs["worker_extension_cls"] == "tutorloop.generators.vllm_worker.WeightReceiver"
    assert asyncio.run(gen.load_weights([("model.embed_tokens.weight", torch.ones(2, 3))], version=3)) == 3
    ((method, args),) = llm.named("collective_rpc")
    assert method == "tutorloop_load_weights"
    assert [name for name, _ in decode_tensors(args[0])] == ["model.embed_tokens.weight"]
    assert [c for c, _ in llm.calls][-2:] == ["collective_rpc", "reset_prefix_cache"]
    assert asyncio.run(gen.generate(PROMPTS[:1], SamplingParams(max_new_tokens=3)))[0].policy_version == 3
    from tutorloop.trainers.weight_sync import pack

    asyncio.run(gen.load_weights(pack([("lm_head.weight", torch.full((2, 3), 2.0))]), version=4))  # as Ray sends it
    (name, tensor), = decode_tensors(llm.named("collective_rpc")[-1][1][0])
    assert name == "lm_head.weight" and torch.equal(tensor, torch.full((2, 3), 2.0))


def test_weights_cross_the_rpc_as_msgpack_native_values_and_load_in_the_worker():
    """vLLM's engine-core RPC keeps bytes, strings and lists, not tensors: what we send is only
    those, and the worker side rebuilds every dtype bit for bit before `reload_weights`."""
    import torch

    from tutorloop.generators.vllm_worker import WeightReceiver, encode_tensors

    tensors = [("a.weight", torch.randn(3, 4, dtype=torch.bfloat16)), ("b.bias", torch.arange(5.0)),
               ("c.scalar", torch.tensor(2.5)), ("d.empty", torch.zeros(0, 4))]
    encoded = encode_tensors(tensors)
    assert all(type(n) is str and type(d) is str and all(type(x) is int for x in s) and type(b) is bytes
               for n, d, s, b in encoded)

    class Worker(WeightReceiver):  # what vLLM's worker class becomes with the extension mixed in
        def reload_weights(self, weights_iterator=None, weights_path=None, is_checkpoint_format=True):
            self.got = (list(weights_iterator), is_checkpoint_format)

    worker = Worker()
    assert worker.tutorloop_load_weights(encoded) == 4
    got, checkpoint_format = worker.got
    assert checkpoint_format and [n for n, _ in got] == [n for n, _ in tensors]
    assert all(g.dtype == t.dtype and g.shape == t.shape and torch.equal(g, t) for (_, g), (_, t) in zip(got, tensors))


def test_lora_sync_serves_a_new_adapter_per_version(tokenizer_dir, tiny_tokenizer):
    import torch
    from safetensors.torch import load_file

    lora = {"r": 8, "lora_alpha": 16.0, "lora_dropout": 0.0, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}
    gen, llm = make(tokenizer_dir, tiny_tokenizer, lora=lora)
    name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    asyncio.run(gen.load_weights([(name, torch.full((8, 32), 0.5))], version=1))
    (first,) = llm.named("add_lora")
    adapter = Path(first.lora_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and {k: config[k] for k in lora} == lora
    assert torch.equal(load_file(adapter / "adapter_model.safetensors")[name], torch.full((8, 32), 0.5))
    outs = asyncio.run(gen.generate(PROMPTS[:1], SamplingParams(max_new_tokens=3)))
    assert llm.named("generate")[-1][2] == first and outs[0].policy_version == 1
    assert asyncio.run(gen.load_weights((2, [(name, torch.zeros(8, 32))]))) == 2  # as Trainer.weights() gives it
    second = llm.named("add_lora")[-1]
    assert llm.named("remove_lora") == [first.lora_int_id] and second.lora_int_id != first.lora_int_id
    assert not adapter.exists() and Path(second.lora_path).is_dir()
    assert llm.named("collective_rpc") == []  # the base weights never move


def test_a_saved_adapter_is_served_from_the_start(tokenizer_dir, tiny_tokenizer, tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32, "peft_type": "LORA"}))
    gen, llm = make(tokenizer_dir, tiny_tokenizer, adapter=str(tmp_path))
    assert llm.kwargs["max_lora_rank"] == 32
    asyncio.run(gen.score(PROMPTS[:1], [(5, 6)], top_k=1))
    assert llm.named("generate")[0][2].lora_path == str(tmp_path)


def test_sleep_and_wake(tokenizer_dir, tiny_tokenizer):
    gen, llm = make(tokenizer_dir, tiny_tokenizer, sleep_mode=True)
    asyncio.run(gen.sleep())
    asyncio.run(gen.sleep())  # idempotent
    assert llm.named("sleep") == [1]
    asyncio.run(gen.generate(PROMPTS[:1], SamplingParams(max_new_tokens=3)))  # wakes first
    assert [c for c, _ in llm.calls] == ["sleep", "wake_up", "generate"]
    awake, _ = make(tokenizer_dir, tiny_tokenizer)
    with pytest.raises(UserError, match="sleep_mode"):
        asyncio.run(awake.sleep())


def test_stats_count_and_reset(tokenizer_dir, tiny_tokenizer):
    gen, _ = make(tokenizer_dir, tiny_tokenizer)
    asyncio.run(gen.generate(PROMPTS, SamplingParams(max_new_tokens=4)))
    asyncio.run(gen.score(PROMPTS[:1], [(5, 6, 7)], top_k=2))
    stats = asyncio.run(gen.stats())
    assert stats["gen_tokens"] == 8 and stats["score_tokens"] == 3 and stats["gen_seconds"] > 0
    assert asyncio.run(gen.stats())["gen_tokens"] == 0


def test_missing_vllm_is_a_one_line_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    with pytest.raises(UserError, match=r"vllm extra") as info:
        _import_vllm()
    assert "\n" not in str(info.value)


def test_config_fields_reach_the_vllm_generator():
    from tutorloop.agents import spawn_generator
    from tutorloop.config import AgentConfig

    class Recorder:
        def spawn(self, cls, *args, resources=None, **kwargs):
            return cls, args, kwargs

    spec = AgentConfig(generator={"kind": "vllm", "tensor_parallel": 2, "gpu_memory_utilization": 0.5,
                                  "sleep_mode": True}, model="/models/x")
    cls, args, kwargs = spawn_generator(Recorder(), spec, seed=1, lora={"r": 8})
    assert cls is VLLMGenerator and args == ("/models/x",)
    expected = {"tensor_parallel": 2, "gpu_memory_utilization": 0.5, "sleep_mode": True, "lora": {"r": 8},
                "trust_remote_code": False}
    assert {k: kwargs[k] for k in expected} == expected
