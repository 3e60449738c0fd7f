"""HFGenerator: transformers generation and teacher-forced scoring on CPU or one GPU.

Agents send one request per problem; many episodes run concurrently, so requests that arrive
together are coalesced into batched forward passes (a queue flushed once every ready episode has
submitted). Sampled-token log-probs come from the raw logits (temperature 1), like vLLM's default
`raw_logprobs`, so they compare directly with teacher scores for on-policy distillation.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from typing import Any, Callable, Sequence

from tutorloop.hardware import cpu_turn
from tutorloop.models import forward_targets, load_causal_lm, load_tokenizer, render_prompt_ids, resolve_model
from tutorloop.types import Completion, Message, SamplingParams, TokenScores


class Coalescer:
    """Gathers the requests of concurrent coroutines and answers them with one batched call per key."""

    def __init__(self, run: Callable[[Any, list[Any]], list[Any]], yields: int = 3) -> None:
        self.run, self.yields = run, yields
        self.pending: dict[Any, list[tuple[list[Any], asyncio.Future]]] = {}
        self.scheduled = False

    async def submit(self, key: Any, items: list[Any]) -> list[Any]:
        future = asyncio.get_running_loop().create_future()
        self.pending.setdefault(key, []).append((items, future))
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        # A few loop turns let every episode whose previous call just returned reach its next call.
        for _ in range(self.yields):
            await asyncio.sleep(0)
        self.scheduled = False
        pending, self.pending = self.pending, {}
        for key, requests in pending.items():
            flat = [item for items, _ in requests for item in items]
            try:
                results = self.run(key, flat)
                if inspect.isawaitable(results):  # a remote call (RayProxy): await it without blocking the loop
                    results = await results
            except Exception as exc:  # every waiter learns of the failure; none hangs
                for _, future in requests:
                    future.set_exception(exc)
                continue
            start = 0
            for items, future in requests:
                future.set_result(results[start:start + len(items)])
                start += len(items)


class HFGenerator:
    def __init__(self, model: str, *, dtype: str = "float32", max_batch_size: int = 32,
                 lora: dict[str, Any] | None = None, adapter: str | None = None, seed: int = 0,
                 trust_remote_code: bool = False) -> None:
        """lora: adapter layout to receive synced weights into; adapter: a saved peft adapter to load."""
        path = resolve_model(model)
        self.tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        self.model = load_causal_lm(path, dtype, trust_remote_code=trust_remote_code).eval()
        if lora is not None and adapter is None:  # the trainer's adapter layout, so synced tensors load by name
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(self.model, LoraConfig(**lora))
        if adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter)
        self.model.eval()
        self.max_batch_size, self.seed = max_batch_size, seed
        self.version, self.calls = 0, 0
        self.counters = {"gen_tokens": 0.0, "gen_seconds": 0.0, "gen_rows": 0.0, "gen_batches": 0.0,
                         "score_tokens": 0.0, "score_seconds": 0.0}
        self.coalescer = Coalescer(self._run)

    async def generate(self, prompts: Sequence[Sequence[Message]], params: SamplingParams) -> list[Completion]:
        ids = [render_prompt_ids(self.tokenizer, p) for p in prompts]
        return await self.coalescer.submit(("generate", params), [i for i in ids for _ in range(params.n)])

    async def score(self, prompts: Sequence[Sequence[Message]], target_ids: Sequence[Sequence[int]],
                    top_k: int) -> list[TokenScores]:
        contexts = [render_prompt_ids(self.tokenizer, p) for p in prompts]
        return await self.coalescer.submit(("score", top_k), list(zip(contexts, map(tuple, target_ids))))

    async def load_weights(self, weights: Any, version: int | None = None) -> int:
        """Copy new weights in: `PackedWeights` or (name, tensor) pairs with their `version`, or the
        (version, weights) pair exactly as `Trainer.weights()` returns it. Returns the version."""
        from tutorloop.trainers.weight_sync import copy_into

        if version is None:
            version, weights = weights
        # LoRA parameters alias nothing, so they may be laid out flat for one-copy syncs.
        layout = self.__dict__.setdefault("_layout", {}) if hasattr(self.model, "peft_config") else None
        copy_into(self._sync_targets(), weights, layout)
        self.version = version
        return version

    def _sync_targets(self) -> dict[str, Any]:
        """Tensors by the names the trainer sends: peft's adapter names without the adapter
        ("...lora_A.weight", as get_peft_model_state_dict writes them), or the full state_dict."""
        if not hasattr(self, "_targets"):
            if hasattr(self.model, "peft_config"):
                adapter = f".{self.model.active_adapter}"
                self._targets = {n.replace(adapter, ""): p for n, p in self.model.named_parameters() if "lora_" in n}
            else:
                self._targets = dict(self.model.state_dict())
        return self._targets

    async def stats(self) -> dict[str, float]:
        counters = dict(self.counters)
        self.counters = dict.fromkeys(self.counters, 0.0)
        return counters

    async def sampling_state(self) -> dict[str, int]:
        return {"calls": self.calls}  # each batch reseeds torch from (seed, calls): this is the whole stream

    async def load_sampling_state(self, state: dict[str, int]) -> None:
        self.calls = int(state["calls"])

    def _run(self, key: tuple[str, Any], items: list[Any]) -> list[Any]:
        with cpu_turn():  # on Ray, generators sharing a node's cores compute one at a time
            return self._run_chunks(key, items)

    def _run_chunks(self, key: tuple[str, Any], items: list[Any]) -> list[Any]:
        kind, arg = key
        run_chunk = self._generate_chunk if kind == "generate" else self._score_chunk
        # Similar lengths share a chunk, so little compute goes to padding; results keep input order.
        order = sorted(range(len(items)), key=lambda i: _length(items[i]))
        results: list[Any] = [None] * len(items)
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start:start + self.max_batch_size]
            for i, result in zip(chunk, run_chunk([items[i] for i in chunk], arg)):
                results[i] = result
        return results

    def _generate_chunk(self, prompt_ids: list[list[int]], params: SamplingParams) -> list[Completion]:
        import torch

        began = time.perf_counter()
        self.calls += 1
        torch.manual_seed(self.seed * 1_000_003 + self.calls)  # reproducible for a given call order
        width = max(map(len, prompt_ids))
        input_ids = torch.full((len(prompt_ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for i, ids in enumerate(prompt_ids):
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            attention[i, width - len(ids):] = 1
        stop = RegexStop(self.tokenizer, params.stop_regex) if params.stop_regex else None
        with torch.inference_mode():
            rows = sample(self.model, input_ids, attention, params, self.tokenizer.eos_token_id, stop)
        completions = [self._completion(*row) for row in rows]
        self.counters["gen_tokens"] += sum(len(c.token_ids) for c in completions)
        self.counters["gen_seconds"] += time.perf_counter() - began
        self.counters["gen_rows"] += len(prompt_ids)  # with gen_batches: the batch size tok/s was had at
        self.counters["gen_batches"] += 1
        return completions

    def _completion(self, ids: list[int], logps: list[float], reason: str) -> Completion:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text=text.strip(), token_ids=tuple(ids), logprobs=tuple(logps), finish_reason=reason,
                          policy_version=self.version)

    def _score_chunk(self, requests: list[tuple[list[int], tuple[int, ...]]], top_k: int) -> list[TokenScores]:
        import torch

        began = time.perf_counter()
        contexts, targets = zip(*requests)
        with torch.inference_mode():  # as in generation: the scores leave as Python lists, no autograd use
            logits_B_T_V, labels_B_T, mask_B_T = forward_targets(self.model, contexts, targets,
                                                                 self.tokenizer.pad_token_id)
            scores = token_scores(logits_B_T_V, labels_B_T, mask_B_T, top_k)
        self.counters["score_tokens"] += sum(map(len, targets))  # = mask_B_T.sum(), without a device sync
        self.counters["score_seconds"] += time.perf_counter() - began
        return scores


def token_scores(logits_B_T_V: Any, labels_B_T: Any, mask_B_T: Any, top_k: int) -> list[TokenScores]:
    """Each row's `TokenScores` from `forward_targets`' right-aligned logits, labels and mask.

    log_softmax and topk run once, over the N real target positions only (a short row's padding
    is dropped first), and each result leaves the device with one `.tolist()`: on a GPU every
    `.tolist()` is a sync and a copy, and per-row conversions cost 3 a row. Rows are then slices
    of those flat lists, in order, since boolean indexing keeps row-major order.
    """
    import torch

    logp_N_V = torch.log_softmax(logits_B_T_V[mask_B_T].float(), -1)
    logps = logp_N_V.gather(-1, labels_B_T[mask_B_T].unsqueeze(-1)).squeeze(-1).tolist()
    top_k = min(top_k, logp_N_V.shape[-1])
    ids: list[tuple[int, ...]] = []
    top_logps: list[tuple[float, ...]] = []
    if top_k:
        top_logp_N_K, top_ids_N_K = logp_N_V.topk(top_k, dim=-1)
        ids, top_logps = list(map(tuple, top_ids_N_K.tolist())), list(map(tuple, top_logp_N_K.tolist()))
    scores, start = [], 0
    for length in mask_B_T.sum(-1).tolist():
        span = slice(start, start + length)
        scores.append(TokenScores(logprobs=tuple(logps[span]), topk_ids=tuple(ids[span]),
                                  topk_logprobs=tuple(top_logps[span])))
        start += length
    return scores


TOP_K = 50
"""Samples come from the 50 most likely tokens, as under `transformers.generate`'s default (which
this generator used before it had its own loop), so they follow the same distribution as before."""


def sample(model: Any, input_ids_B_T: Any, attention_B_T: Any, params: SamplingParams, eos_id: int,
           stop: RegexStop | None = None) -> list[tuple[list[int], list[float], str]]:
    """Each row's continuation: token ids, their raw log-probs, and "stop" or "length".

    Our own decode loop over a KV cache rather than `model.generate`: sampling among TOP_K candidates
    instead of the whole vocabulary (torch.multinomial over SmolLM2's 49k entries costs ~15 ms per
    step on 2 CPU cores, as much as the batch-8 matmuls), and a row that finishes leaves the batch, so
    the others decode without computing its padding.
    """
    import torch

    ids: list[list[int]] = [[] for _ in range(input_ids_B_T.shape[0])]
    logps: list[list[float]] = [[] for _ in ids]
    reasons = ["length"] * len(ids)
    rows_L = torch.arange(len(ids))  # L: the rows still decoding, by their index in the batch
    cache = reserved_cache(model.config, input_ids_B_T.shape[1] + params.max_new_tokens)
    attention_L_T = attention_B_T
    positions_L_T = (attention_B_T.cumsum(-1) - 1).clamp(min=0)  # left padding: positions follow the mask
    logits_L_V = _next_logits(model, input_ids_B_T, attention_L_T, positions_L_T, cache)
    for step in range(params.max_new_tokens):
        token_L = pick_tokens(logits_L_V, params.temperature, params.top_p)
        logp_L = logits_L_V.gather(-1, token_L[:, None]).squeeze(-1) - logits_L_V.logsumexp(-1)
        live = rows_L.tolist()
        for row, token, logp in zip(live, token_L.tolist(), logp_L.tolist()):
            ids[row].append(token)
            logps[row].append(logp)
        done = [ids[row][-1] == eos_id for row in live]
        if stop is not None:
            done = [d or hit for d, hit in zip(done, stop.matches([ids[row] for row in live]))]
        for row, finished in zip(live, done):
            reasons[row] = "stop" if finished else reasons[row]
        if all(done) or step == params.max_new_tokens - 1:
            break
        if any(done):  # drop finished rows from the batch and from the cache
            keep_L = torch.tensor([i for i, finished in enumerate(done) if not finished])
            cache.batch_select_indices(keep_L)
            rows_L, token_L, attention_L_T = rows_L[keep_L], token_L[keep_L], attention_L_T[keep_L]
            positions_L_T = positions_L_T[keep_L]
        attention_L_T = torch.cat([attention_L_T, attention_L_T.new_ones((len(rows_L), 1))], dim=1)
        positions_L_T = positions_L_T[:, -1:] + 1
        logits_L_V = _next_logits(model, token_L[:, None], attention_L_T, positions_L_T, cache)
    return list(zip(ids, logps, reasons))


def reserved_cache(config: Any, capacity: int) -> Any:
    """A transformers DynamicCache whose layers keep keys and values in buffers reserved for
    `capacity` tokens. The stock layer concatenates the whole cache with the new token at every step
    and layer: at batch 32 with 300-token prompts that copies more bytes per step than the weights
    hold. Sliding-window layers (other architectures) keep the stock behaviour."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [_reserved_layer_class()(capacity) for _ in cache.layers]
    return cache


@functools.cache
def _reserved_layer_class() -> type:
    """Built on first use, so importing this module does not import transformers."""
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        """`keys` and `values` are views of the filled prefix of [B, H, capacity, D] buffers."""

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity, self.length = capacity, 0

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            self.key_buffer = _reserve(key_states, self.capacity)
            self.value_buffer = _reserve(value_states, self.capacity)
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start, self.length = self.length, self.length + key_states.shape[-2]
            self.key_buffer[:, :, start:self.length] = key_states
            self.value_buffer[:, :, start:self.length] = value_states
            return self._views()

        def batch_select_indices(self, indices: Any) -> None:
            if self.is_initialized:
                self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
                self._views()

        def _views(self) -> tuple[Any, Any]:
            self.keys = self.key_buffer[:, :, :self.length]
            self.values = self.value_buffer[:, :, :self.length]
            return self.keys, self.values

    return ReservedLayer


def _reserve(states_B_H_T_D: Any, capacity: int) -> Any:
    batch, heads, _, dim = states_B_H_T_D.shape
    return states_B_H_T_D.new_empty((batch, heads, capacity, dim))


def _next_logits(model: Any, input_ids: Any, attention: Any, positions: Any, cache: Any) -> Any:
    """fp32 logits of the token after each row's last one; the lm_head runs on that position only."""
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float()


def pick_tokens(logits_B_V: Any, temperature: float, top_p: float) -> Any:
    """Argmax at temperature 0, else a sample from `candidates`."""
    import torch

    if temperature == 0:
        return logits_B_V.argmax(-1)
    probs_B_K, ids_B_K = candidates(logits_B_V, temperature, top_p)
    return ids_B_K.gather(-1, torch.multinomial(probs_B_K, 1)).squeeze(-1)


def candidates(logits_B_V: Any, temperature: float, top_p: float) -> tuple[Any, Any]:
    """The sampling distribution after transformers' warpers, in their order: temperature, the TOP_K
    most likely tokens, then the nucleus `top_p`. Returns (unnormalized probs, token ids), [B, K]."""
    top_B_K, ids_B_K = (logits_B_V / temperature).topk(min(TOP_K, logits_B_V.shape[-1]), dim=-1)
    probs_B_K = top_B_K.softmax(-1)
    if top_p < 1.0:  # a token goes once the more likely ones already hold top_p (TopPLogitsWarper)
        probs_B_K = probs_B_K.masked_fill(probs_B_K.cumsum(-1) - probs_B_K >= top_p, 0.0)
    return probs_B_K, ids_B_K


class RegexStop:
    """A row is done once its newly generated text matches `pattern`. Only the last `window` tokens
    are decoded each step, so the check costs little next to a forward."""

    def __init__(self, tokenizer: Any, pattern: str, window: int = 24) -> None:
        import re

        self.tokenizer, self.pattern, self.window = tokenizer, re.compile(pattern), window

    def matches(self, rows: list[list[int]]) -> list[bool]:
        tails = self.tokenizer.batch_decode([row[-self.window:] for row in rows], skip_special_tokens=True)
        return [bool(self.pattern.search(tail)) for tail in tails]


def _length(item: Any) -> int:
    return len(item) if isinstance(item, list) else len(item[0]) + len(item[1])
