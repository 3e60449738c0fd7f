"""VLLMGenerator: a vLLM engine (`vllm.LLM`, API of vLLM 0.33) inside this process or Ray actor.

- Generation returns each sampled token's log-prob from vLLM's default `logprobs_mode="raw_logprobs"`
  (log-softmax of the raw logits, temperature 1), so it compares with teacher scores as in the HF
  generator.
- Scoring sends context + target ids as one prompt with `max_tokens=1` and reads `prompt_logprobs`;
  each position's dict always holds the actual token, plus the top-k (verl's OPD teacher and TRL's
  `get_sequence_logprobs` do the same). Targets are aligned by id, never re-tokenized.
- Full weights reach every tensor-parallel worker through `collective_rpc` into our worker
  extension (`vllm_worker.py`), which rebuilds the tensors from bytes and calls the worker's own
  `reload_weights` (the model's `load_weights`, in place): tensors themselves do not survive the
  RPC to vLLM 0.33's engine-core process. TRL's colocate mode calls `model.load_weights` through
  `llm_engine.model_executor.driver_worker`, which needs the engine in this process. A LoRA adapter
  is written to a temporary directory and served as a new `LoRARequest` each version, as verl does
  with `lora.merge=False`.
- `sleep()` / `wake()` free and restore the GPU (`LLM.sleep(level=1)` / `LLM.wake_up()`) when a
  trainer shares it; any call made while asleep wakes the engine first.

`import vllm` happens only in `_import_vllm`, so `import tutorloop` never needs it.
"""

from __future__ import annotations

import json
import tempfile
import time
from itertools import count
from pathlib import Path
from typing import Any, Sequence

from tutorloop.generators.hf import Coalescer
from tutorloop.generators.stops import stop_length
from tutorloop.generators.vllm_worker import WORKER_EXTENSION, encode_tensors
from tutorloop.errors import UserError
from tutorloop.hardware import resolve_dtype
from tutorloop.models import load_tokenizer, render_prompt_ids, resolve_model
from tutorloop.types import Completion, Message, SamplingParams, TokenScores

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM 0.33 accepts for `max_lora_rank` (`vllm/config/lora.py`)."""
MAX_TOP_K = 1024
"""The most top-k log-probs a scoring call may ask for (config caps `trainer.objectives.kd.top_k` there too)."""


class VLLMGenerator:
    def __init__(self, model: str, *, dtype: str = "bfloat16", max_batch_size: int = 32,
                 lora: dict[str, Any] | None = None, adapter: str | None = None, seed: int = 0,
                 trust_remote_code: bool = False, tensor_parallel: int = 1, gpu_memory_utilization: float = 0.9,
                 sleep_mode: bool = False, enforce_eager: bool = False, backend: Any = None) -> None:
        """lora: peft LoraConfig arguments of the adapters that sync will send; adapter: a saved peft
        adapter to serve from the start. enforce_eager: skip torch.compile and CUDA graphs (a start in
        seconds, slower decoding; tests). backend: the `vllm` module, or a stand-in with `LLM`,
        `SamplingParams` and `LoRARequest` (tests)."""
        path = resolve_model(model)
        self.tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        self.vllm = backend if backend is not None else _import_vllm()
        rank = lora["r"] if lora is not None else _adapter_rank(adapter) if adapter is not None else None
        args = engine_args(path, dtype=resolve_dtype(dtype, "cuda"), seed=seed, max_batch_size=max_batch_size,
                           tensor_parallel=tensor_parallel, gpu_memory_utilization=gpu_memory_utilization,
                           sleep_mode=sleep_mode, lora_rank=rank, enforce_eager=enforce_eager)
        # vllm/entrypoints/llm.py `LLM.__init__`: named arguments, the rest go to `EngineArgs`.
        self.llm = self.vllm.LLM(**args, trust_remote_code=trust_remote_code)
        self.lora, self.sleep_mode, self.asleep = lora, sleep_mode, False
        self.lora_ids = count(1)
        self.lora_request = None if adapter is None else self._lora_request("adapter", adapter)
        self.adapter_dir: tempfile.TemporaryDirectory | None = None
        self.seed, self.samples, self.version = seed, 0, 0
        self.counters = {"gen_tokens": 0.0, "gen_seconds": 0.0, "score_tokens": 0.0, "score_seconds": 0.0}
        self.coalescer = Coalescer(self._run)

    async def generate(self, prompts: Sequence[Sequence[Message]], params: SamplingParams) -> list[Completion]:
        await self.wake()
        ids = [render_prompt_ids(self.tokenizer, p) for p in prompts]
        groups = await self.coalescer.submit(("generate", params), ids)  # vLLM samples n per prompt itself
        return [completion for group in groups for completion in group]

    async def score(self, prompts: Sequence[Sequence[Message]], target_ids: Sequence[Sequence[int]],
                    top_k: int) -> list[TokenScores]:
        await self.wake()
        contexts = [render_prompt_ids(self.tokenizer, p) for p in prompts]
        return await self.coalescer.submit(("score", top_k), list(zip(contexts, map(tuple, target_ids))))

    async def load_weights(self, weights: Any, version: int | None = None) -> int:
        """`PackedWeights` or (name, tensor) pairs with their version, or the (version, weights) pair
        of `Trainer.weights()`: the LoRA adapter when `lora` is set, else the full model under HF
        parameter names. Returns the version."""
        from tutorloop.trainers.weight_sync import as_named_tensors

        if version is None:
            version, weights = weights
        await self.wake()
        tensors = [(name, tensor.detach().cpu()) for name, tensor in as_named_tensors(weights)]
        if self.lora is not None:
            self._swap_adapter(tensors, version)
        else:
            # `LLM.collective_rpc` (vllm/entrypoints/llm.py) runs the method on every worker.
            self.llm.collective_rpc("tutorloop_load_weights", args=(encode_tensors(tensors),))
            self.llm.reset_prefix_cache()  # `LLM.reset_prefix_cache`: cached KV came from the old weights
        self.version = version
        return version

    async def sleep(self) -> None:
        """Offload the weights to CPU and drop the KV cache, so a trainer on this GPU can use it."""
        if not self.sleep_mode:
            raise UserError("this vllm generator was started without `sleep_mode: true`, so it cannot sleep")
        if not self.asleep:  # `LLM.sleep` (vllm/entrypoints/llm.py): level 1 keeps the weights in CPU memory
            self.llm.sleep(level=1)
            self.asleep = True

    async def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()  # `LLM.wake_up(tags=None)`: weights and KV cache both come back
            self.asleep = False

    async def stats(self) -> dict[str, float]:
        counters = dict(self.counters)
        self.counters = dict.fromkeys(self.counters, 0.0)
        return counters

    async def sampling_state(self) -> dict[str, int]:
        return {"samples": self.samples}  # request seeds derive from it: this is the whole stream

    async def load_sampling_state(self, state: dict[str, int]) -> None:
        self.samples = int(state["samples"])

    def _run(self, key: tuple[str, Any], items: list[Any]) -> list[Any]:
        kind, arg = key
        return self._generate_batch(items, arg) if kind == "generate" else self._score_batch(items, arg)

    def _generate_batch(self, prompt_ids: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        began = time.perf_counter()
        # logprobs=0: only the sampled token's log-prob; we decode with our tokenizer, so vLLM need not.
        # A seed per request (vLLM gives sample i of a request seed + i) makes the stream reproducible
        # for a given call order and resumable from `sampling_state`, as the HF generator's is.
        # vllm/sampling_params.py `SamplingParams`; `LLM.generate` pairs a list of them with the prompts.
        sampling = [self.vllm.SamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p,
                                             max_tokens=params.max_new_tokens, logprobs=0, detokenize=False,
                                             seed=self._next_seed(params.n)) for _ in prompt_ids]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sampling, use_tqdm=False,
                                    lora_request=self.lora_request)
        groups = [[self._completion(sample, params.stop_regex) for sample in out.outputs] for out in outputs]
        self.counters["gen_tokens"] += sum(len(c.token_ids) for group in groups for c in group)
        self.counters["gen_seconds"] += time.perf_counter() - began
        return groups

    def _next_seed(self, n: int) -> int:
        seed = self.seed * 1_000_003 + self.samples
        self.samples += n
        return seed

    def _completion(self, sample: Any, stop_regex: str | None) -> Completion:
        ids = list(sample.token_ids)
        logps = [position[token].logprob for position, token in zip(sample.logprobs, ids)]
        reason = "length" if sample.finish_reason == "length" else "stop"
        if stop_regex and (cut := stop_length(len(ids), lambda k: self._decode(ids[:k]), stop_regex)) is not None:
            ids, logps, reason = ids[:cut], logps[:cut], "stop"
        return Completion(text=self._decode(ids).strip(), token_ids=tuple(ids), logprobs=tuple(logps),
                          finish_reason=reason, policy_version=self.version)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _score_batch(self, requests: list[tuple[list[int], tuple[int, ...]]], top_k: int) -> list[TokenScores]:
        began = time.perf_counter()
        scores = [TokenScores(logprobs=())] * len(requests)
        todo = [i for i, (_, target) in enumerate(requests) if target]  # an empty span needs no forward pass
        if todo:
            # prompt_logprobs: top-k plus the actual token per prompt position (vllm/logprobs.py
            # `append_logprobs_for_next_position`); such requests skip the prefix cache (sampling_params.py).
            sampling = self.vllm.SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=top_k, detokenize=False)
            prompts = [{"prompt_token_ids": list(requests[i][0]) + list(requests[i][1])} for i in todo]
            outputs = self.llm.generate(prompts, sampling, use_tqdm=False, lora_request=self.lora_request)
            for i, out in zip(todo, outputs):
                scores[i] = target_scores(out.prompt_logprobs, *requests[i], top_k)
        self.counters["score_tokens"] += sum(len(target) for _, target in requests)
        self.counters["score_seconds"] += time.perf_counter() - began
        return scores

    def _swap_adapter(self, tensors: list[tuple[str, Any]], version: int) -> None:
        directory = tempfile.TemporaryDirectory(prefix=f"tutorloop-adapter-v{version}-")
        write_adapter(Path(directory.name), tensors, self.lora)
        # `LLMEngine.add_lora` / `remove_lora` (vllm/v1/engine/llm_engine.py).
        if self.lora_request is not None:  # one adapter slot (max_loras=1): free it first
            self.llm.llm_engine.remove_lora(self.lora_request.lora_int_id)
        self.lora_request = self._lora_request(f"student-v{version}", directory.name)
        self.llm.llm_engine.add_lora(self.lora_request)  # load now: a bad adapter fails at sync, not mid-round
        self.adapter_dir = directory  # the previous directory is deleted when its object goes

    def _lora_request(self, name: str, path: str) -> Any:
        # A new id and name each time: vLLM caches adapters by id and prefix-cache blocks by name.
        lora_id = next(self.lora_ids)  # vllm/lora/request.py: ids must be >= 1
        return self.vllm.LoRARequest(lora_name=f"{name}-{lora_id}", lora_int_id=lora_id, lora_path=path)


def engine_args(path: Path, *, dtype: str, seed: int, max_batch_size: int, tensor_parallel: int,
                gpu_memory_utilization: float, sleep_mode: bool, lora_rank: int | None,
                enforce_eager: bool = False) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` for one role (fields of vllm/engine/arg_utils.py `EngineArgs`)."""
    args: dict[str, Any] = {
        "model": str(path), "dtype": dtype, "seed": seed, "max_num_seqs": max_batch_size,
        "tensor_parallel_size": tensor_parallel, "gpu_memory_utilization": gpu_memory_utilization,
        "enable_sleep_mode": sleep_mode, "enforce_eager": enforce_eager, "logprobs_mode": "raw_logprobs",
        "max_logprobs": MAX_TOP_K,  # vLLM's default cap of 20 would refuse a larger OPD top-k
        "worker_extension_cls": WORKER_EXTENSION}  # full-weight sync (vllm_worker.py)
    if lora_rank is not None:
        args |= {"enable_lora": True, "max_loras": 1, "max_lora_rank": lora_rank_slot(lora_rank)}
    return args


def lora_rank_slot(r: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds rank r."""
    for slot in LORA_RANKS:
        if slot >= r:
            return slot
    raise UserError(f"LoRA rank {r} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]})")


def target_scores(prompt_logprobs: Sequence[Any], context: Sequence[int], target: Sequence[int],
                  top_k: int) -> TokenScores:
    """Scores of the target span from vLLM's `prompt_logprobs`, whose entry i (a dict token id →
    `Logprob(logprob, rank, decoded_token)`) scores prompt token i given the tokens before it."""
    rows = [prompt_logprobs[len(context) + j] for j in range(len(target))]
    logprobs = tuple(float(row[token].logprob) for row, token in zip(rows, target))
    if not top_k:
        return TokenScores(logprobs=logprobs)
    # The dict holds the top-k and the actual token, whose rank may be beyond k.
    tops = [sorted(((t, lp) for t, lp in row.items() if lp.rank is not None and lp.rank <= top_k),
                   key=lambda item: (item[1].rank, -item[1].logprob))[:top_k] for row in rows]
    return TokenScores(logprobs=logprobs, topk_ids=tuple(tuple(t for t, _ in top) for top in tops),
                       topk_logprobs=tuple(tuple(float(lp.logprob) for _, lp in top) for top in tops))


def write_adapter(directory: Path, tensors: Sequence[tuple[str, Any]], lora: dict[str, Any]) -> None:
    """A peft-format adapter (adapter_config.json + adapter_model.safetensors) that vLLM can load.
    The tensors keep peft's state-dict names (`base_model.model.….lora_A.weight`)."""
    from safetensors.torch import save_file

    config = {"peft_type": "LORA", "bias": "none", **lora}  # `lora` holds peft LoraConfig arguments
    (directory / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    save_file({name: tensor.contiguous() for name, tensor in tensors}, str(directory / "adapter_model.safetensors"))


def _adapter_rank(adapter: str) -> int:
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        raise UserError(f"adapter: no adapter_config.json in '{adapter}'")
    return int(json.loads(config.read_text(encoding="utf-8"))["r"])


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise UserError("generator `vllm` needs the vllm extra (pip install 'tutorloop[vllm]') and a GPU") from None
    return vllm
