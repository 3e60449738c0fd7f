"""Online trainer: one optimizer step over lessons for any mix of registered objectives.

Each objective (`objectives/__init__.py`) is summed over its units (tokens, pairs or sequences)
and divided by its own global unit count in the step before its weight applies, so a weight of
0.5 means "half the gradient scale" whatever the batch composition, and splitting the same batch
into more micro-batches leaves the gradient unchanged (TRL issue #4719 is the bug this avoids). A
weight of 0 skips that objective's forward pass. The reference (DPO, PG's KL) is the frozen
initial student: with LoRA, the same model with adapters disabled; with full fine-tuning, a copy.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import Any, Mapping, Sequence

import torch

from tutorloop.errors import UserError
from tutorloop.hardware import autocast_dtype
from tutorloop.models import (FP32_ATTENTION, attention_in_fp32, forward_targets, load_causal_lm, load_tokenizer,
                              resolve_model)
from tutorloop.objectives import losses
from tutorloop.trainers import data_parallel
from tutorloop import objectives as registry
from tutorloop.trainers.batching import (Encoded, SharedPromptRows, chunks, encode_lessons, lesson_tensors,
                                         shared_prompt_rows, token_weights)
from tutorloop.trainers.weight_sync import PackedWeights, SharedSegment, SharedWeights, pack
from tutorloop.types import Lesson


class OnlineTrainer:
    def __init__(self, model: str, *, objectives: Mapping[str, Any], lr: float, weight_decay: float = 0.0,
                 lora: dict[str, Any] | None = None, micro_batch_size: int = 8, max_grad_norm: float = 1.0,
                 max_seq_len: int = 768, dtype: str = "float32", autocast: str = "off", seed: int = 0,
                 world_size: int = 1, trust_remote_code: bool = False) -> None:
        """objectives: name -> weight, or parameters as `trainer.objectives` takes them (the registry's
        parameter models too). world_size > 1: one of several data-parallel workers; `join` them
        before the first step. autocast: "off", "bfloat16" or "auto" (`hardware.autocast_dtype`)."""
        torch.manual_seed(seed)
        self.objectives = registry.parse(objectives)
        path = resolve_model(model)
        self.tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        self.model = load_causal_lm(path, dtype, trust_remote_code=trust_remote_code)
        disable_dropout(self.model)
        self.autocast = autocast_dtype(autocast)
        if self.autocast is not None:
            attention_in_fp32(self.model)
        self.reference: Any = None
        if lora is not None:
            self.model = _with_lora(self.model, lora, self.autocast)
        elif any(p.uses_reference for p in registry.active(self.objectives).values()):
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.lora = lora is not None
        self.micro_batch_size, self.max_grad_norm, self.max_seq_len = micro_batch_size, max_grad_norm, max_seq_len
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # fused: one kernel per tensor instead of ~10 per-tensor ops; on CPU (where torch's default
        # is that per-tensor Python loop) it cut the step of a 0.6M-parameter student by ~4 ms.
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay, fused=True)
        self.version, self.world_size = 0, world_size

    async def step(self, batch: Sequence[Lesson], weights: Mapping[str, float] | None = None) -> dict[str, float]:
        """One optimizer step over everything in `batch`; returns metrics. `weights`: this round's
        weights of the scheduled objectives (`objectives.at_round`)."""
        began = time.perf_counter()
        self.model.train()
        metrics = self.accumulate(batch, registry.with_weights(self.objectives, weights))
        if not any(v for k, v in metrics.items() if k.endswith("/units")):
            return metrics | {"train/skipped_empty": 1.0}
        if self.world_size > 1:
            metrics = data_parallel.reduce(self.params, metrics)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm))
        # A NaN or inf anywhere would poison AdamW's moments for good: skip the whole step instead.
        finite = math.isfinite(grad_norm) and all(math.isfinite(v) for k, v in metrics.items() if k.startswith("loss/"))
        if finite:
            self.optimizer.step()
            self.version += 1
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - began
        tokens = sum(v for k, v in metrics.items() if k.endswith("/tokens"))
        return metrics | {"train/grad_norm": grad_norm, "train/nonfinite_skipped": float(not finite),
                          "train/seconds": seconds, "train/tokens_per_s": tokens / max(seconds, 1e-9),
                          "policy_version": float(self.version)}

    def accumulate(self, batch: Sequence[Lesson], objectives: Mapping[str, registry.Params] | None = None) -> dict[str, float]:
        """Forward and backward every objective with a positive weight (`objectives`: these weights
        instead of the trainer's own); gradients stay in `.grad`. Each objective is divided by its
        unit count over the whole step (all workers)."""
        active = {name: p for name, p in registry.active(self.objectives if objectives is None else objectives).items()
                  if p.weight > 0}
        lessons = {name: [x for x in batch if x.objective == name] for name in active}
        encoded = {name: encode_lessons(lessons[name], self.max_seq_len,
                                        pairs=registry.REGISTRY[name].unit == "pairs") for name in active}
        units = {name: registry.unit_count(name, [len(_target(e)) for e in encoded[name]]) for name in active}
        if self.world_size > 1:
            units = data_parallel.sum_counts(units)
        metrics: dict[str, float] = {}
        for name, params in active.items():
            objective = registry.REGISTRY[name]
            if encoded[name]:
                run = self._pairs if objective.unit == "pairs" else self._tokens
                metrics |= run(objective, params, lessons[name], encoded[name], units[name])
            metrics[f"{name}/units"] = units[name]
        return metrics

    def _tokens(self, objective: registry.Objective, params: registry.Params, lessons: Sequence[Any],
                encoded: list[Encoded], units: int) -> dict[str, float]:
        """A token- or sequence-unit objective, one micro-batch at a time."""
        sums: dict[str, float] = {}
        for idx in chunks(list(range(len(lessons))), self.micro_batch_size):
            chunk = [encoded[i] for i in idx]
            logits, labels, mask = self._forward(chunk)
            inputs = self._token_inputs(objective, params, [lessons[i] for i in idx], chunk, logits, labels, mask)
            loss_sum, extra = objective.loss(inputs, params)
            (params.weight * loss_sum / units).backward()
            _add(sums, {"loss": loss_sum} | extra)
        tokens = sum(len(target) for _, target in encoded)
        return _named(objective.name, sums, units) | {f"{objective.name}/tokens": tokens,
                                                      f"{objective.name}/examples": len(lessons)}

    def _token_inputs(self, objective: registry.Objective, params: registry.Params, lessons: Sequence[Any],
                      chunk: Sequence[Encoded], logits: torch.Tensor, labels: torch.Tensor,
                      mask: torch.Tensor) -> registry.TokenInputs:
        lengths = [len(t) for _, t in chunk]
        weight_B_T = torch.tensor([lesson.weight for lesson in lessons], device=logits.device).unsqueeze(-1)
        if (per_token := token_weights(lessons, lengths, labels.shape[1])) is not None:
            weight_B_T = weight_B_T * torch.from_numpy(per_token).to(logits.device)
        extra: dict[str, Any] = {}
        if objective.needs:
            extra = lesson_tensors(lessons, lengths, labels.shape[1], logits.device, objective.needs)
        if params.uses_reference:
            with torch.no_grad(), self._reference() as reference:
                ref_logits, _, _ = self._forward(chunk, reference)
                extra["ref_logp_B_T"] = losses.token_logprobs(ref_logits, labels)
                if params.reads_ref_logits:  # the KL anchor reads whole distributions
                    extra["ref_logits_B_T_V"] = ref_logits
        return registry.TokenInputs(logits, losses.token_logprobs(logits, labels), mask * weight_B_T, **extra)

    def _pairs(self, objective: registry.Objective, params: registry.Params, pairs: Sequence[Any],
               encoded: list[tuple[Encoded, Encoded]], units: int) -> dict[str, float]:
        sums: dict[str, float] = {}
        for idx in chunks(list(range(len(pairs))), max(1, self.micro_batch_size // 2)):
            chunk, n = [encoded[i] for i in idx], len(idx)
            policy_B, ref_B = self._pair_logps(chunk, reference=params.uses_reference)
            refs = (ref_B[:n], ref_B[n:]) if ref_B is not None else (None, None)
            columns = [[len(c[1]) for c, _ in chunk], [len(r[1]) for _, r in chunk], [pairs[i].weight for i in idx]]
            chosen_len_B, rejected_len_B, weight_B = torch.tensor(columns, dtype=policy_B.dtype, device=policy_B.device)
            inputs = registry.PairInputs(policy_B[:n], policy_B[n:], chosen_len_B, rejected_len_B, weight_B, *refs)
            loss_sum, extra = objective.loss(inputs, params)
            (params.weight * loss_sum / units).backward()
            _add(sums, {"loss": loss_sum} | extra)
        tokens = sum(len(c[1]) + len(r[1]) for c, r in encoded)
        return _named(objective.name, sums, units) | {f"{objective.name}/tokens": tokens}

    def _forward(self, chunk: Sequence[Encoded], model: Any = None) -> tuple[torch.Tensor, ...]:
        contexts, targets = zip(*chunk)
        with self._mixed_precision():
            return forward_targets(model or self.model, contexts, targets, self.tokenizer.pad_token_id)

    def _mixed_precision(self) -> contextlib.AbstractContextManager:
        """The forward under bf16 autocast when `autocast` chose it; backward follows its dtypes."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(next(self.model.parameters()).device.type, dtype=self.autocast)

    def _pair_logps(self, chunk: Sequence[tuple[Encoded, Encoded]], *,
                    reference: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Summed completion log-probs [chosen..., rejected...] under the policy (with grad) and,
        if `reference`, the reference (without). Pairs that share their prompt run packed, the
        prompt once per pair; otherwise chosen then rejected rows in one forward. Packing needs
        sdpa: its boolean 4D mask is a mask there, while eager attention adds it to the scores
        (+1 / +0) and flash attention ignores it."""
        sdpa = getattr(self.model.config, "_attn_implementation", None) in ("sdpa", FP32_ATTENTION)
        packed = shared_prompt_rows(chunk, self.tokenizer.pad_token_id) if sdpa else None
        if packed is None:
            rows = [c for c, _ in chunk] + [r for _, r in chunk]
            policy_B = self._sequence_logps(rows)
            if not reference:
                return policy_B, None
            with torch.no_grad(), self._reference() as model:
                return policy_B, self._sequence_logps(rows, model)
        policy_B = self._packed_logps(packed, self.model)
        if not reference:
            return policy_B, None
        with torch.no_grad(), self._reference() as model:
            return policy_B, self._packed_logps(packed, model)

    def _sequence_logps(self, rows: Sequence[Encoded], model: Any = None) -> torch.Tensor:
        logits, labels, mask = self._forward(rows, model)
        return losses.sequence_logps(losses.token_logprobs(logits, labels), mask)

    def _packed_logps(self, rows: SharedPromptRows, model: Any) -> torch.Tensor:
        device = next(model.parameters()).device
        with self._mixed_precision():
            logits = model(input_ids=rows.input_ids_B_W.to(device), attention_mask=rows.attention_B_1_W_W.to(device),
                           position_ids=rows.positions_B_W.to(device), logits_to_keep=rows.keep,
                           use_cache=False).logits
        logps = [losses.sequence_logps(losses.indexed_logprobs(logits, at.to(device), labels.to(device)),
                                       labels.to(device) != losses.IGNORE_INDEX)
                 for at, labels in ((rows.chosen_at_B_N, rows.chosen_B_N), (rows.rejected_at_B_N, rows.rejected_B_N))]
        return torch.cat(logps)

    @contextlib.contextmanager
    def _reference(self):
        """The frozen initial student: adapters disabled (LoRA) or the frozen copy (full)."""
        if self.lora:
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.reference

    async def weights(self, shared: bool = False) -> tuple[int, PackedWeights | SharedWeights]:
        """(version, tensors) for the student's generator: the adapter only with LoRA. `shared`:
        the generator is on this node, so the tensors go through a shared-memory segment."""
        if shared:
            self._segment = getattr(self, "_segment", None) or SharedSegment()
            if (handle := self._segment.write(self._sync_tensors())) is not None:
                return self.version, handle
        self._packed = pack(self._sync_tensors(), reuse=getattr(self, "_packed", None))
        return self.version, self._packed

    def _sync_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """LoRA: the adapter tensors named as peft's get_peft_model_state_dict names them (without
        the adapter name), read straight from the parameters: that helper walks the whole state_dict
        and costs ~80 ms per sync on SmolLM2. Full fine-tuning: the state_dict."""
        if not self.lora:
            return list(self.model.state_dict().items())
        if not hasattr(self, "_adapter_tensors"):  # the optimizer updates these in place: walk once
            adapter = f".{self.model.active_adapter}"
            self._adapter_tensors = [(n.replace(adapter, ""), p.detach()) for n, p in self.model.named_parameters()
                                     if "lora_" in n]
        return self._adapter_tensors

    async def rendezvous(self) -> tuple[str, int, str]:
        """(host, free port, node id) where worker 0 can host the process group."""
        return data_parallel.rendezvous()

    async def join(self, url: str, rank: int, loopback: bool) -> None:
        """Enter the data-parallel group (gloo on CPU, nccl on GPU) as `rank`."""
        data_parallel.join(url, rank, self.world_size, loopback=loopback)
        data_parallel.broadcast_params(self.model)  # all start from worker 0's init (LoRA A is random)

    async def checkpoint_state(self) -> dict[str, Any]:
        """What training needs to continue exactly: trainable tensors by name, optimizer state, version."""
        weights = {name: p.detach() for name, p in self.model.named_parameters() if p.requires_grad}
        return {"weights": weights, "optimizer": self.optimizer.state_dict(), "version": self.version}

    async def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        params = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        if params.keys() != state["weights"].keys():
            raise UserError(f"the checkpoint's trainable tensors do not match this student "
                            f"(e.g. {sorted(params.keys() ^ state['weights'].keys())[:2]})")
        with torch.no_grad():
            for name, tensor in state["weights"].items():
                params[name].copy_(tensor)
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = state["version"]

    async def save(self, path: str) -> None:
        """HF / peft format: safetensors weights (or the adapter) plus the tokenizer."""
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)


def _with_lora(model: Any, lora: dict[str, Any], autocast: torch.dtype | None) -> Any:
    """`model` with peft LoRA adapters (kept fp32). Under autocast the frozen base is stored in the
    dtype its matmuls run in, so no forward casts it, and peft's upcast of each layer's input to the
    adapter's dtype is turned off, so autocast alone decides."""
    from peft import LoraConfig, get_peft_model

    if autocast is not None:
        model.to(autocast)
    model = get_peft_model(model, LoraConfig(**lora))
    if autocast is not None:
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
    return model


def disable_dropout(model: Any) -> None:
    """Dropout off in the trained model, as TRL's `disable_dropout_in_model` (its default for DPO
    and GKD): log-prob ratios against a reference or a behaviour policy are only meaningful
    without it. HF attention dropout is a float read in training mode, not a module, so it is zeroed
    too; peft's `lora_dropout` does not exist yet and stays what `trainer.lora.dropout` says."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def _target(encoded: Any) -> list[int]:
    """The trained target of an encoded lesson (a pair's chosen side)."""
    return encoded[0][1] if isinstance(encoded[0], tuple) else encoded[1]


def _add(sums: dict[str, float], values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        sums[key] = sums.get(key, 0.0) + float(value.detach() if isinstance(value, torch.Tensor) else value)


def _named(name: str, sums: Mapping[str, float], units: int) -> dict[str, float]:
    """Per-unit metrics: `loss/<name>`, `<name>/<key>`, or the key itself when it names its group."""
    return {("loss/" + name if key == "loss" else key if "/" in key else f"{name}/{key}"): value / units
            for key, value in sums.items()}
