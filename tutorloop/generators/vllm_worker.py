"""The vllm generator's worker extension: full weights into every vLLM worker, sent as plain bytes.

`LLM.collective_rpc` in vLLM 0.33 crosses from the `LLM` process to the engine core process as
msgpack (`vllm/v1/serial_utils.py`). Its encoder writes a torch tensor as a (dtype, shape, buffer)
triple that only a typed decoder turns back into a tensor, and utility calls are decoded untyped
(`EngineCoreProc._handle_client_request`), so tensors passed to `collective_rpc("reload_weights")`
would arrive as lists. Bytes, strings and lists survive, so each tensor travels as
(name, dtype, shape, raw bytes) and is rebuilt here, inside the worker, before the model runner's
own in-place reload (`GPUWorker.reload_weights` -> `vllm/model_executor/model_loader/reload/inplace.py`).

vLLM mixes this class into its worker class (`worker_extension_cls`, `vllm/v1/worker/worker_base.py`),
so its method names must not clash with the worker's: they start with `tutorloop_`.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Sequence

WORKER_EXTENSION = "tutorloop.generators.vllm_worker.WeightReceiver"
"""The qualified name `vllm.LLM(worker_extension_cls=...)` resolves in each worker process."""

Encoded = tuple[str, str, list[int], bytes]


def encode_tensors(tensors: Iterable[tuple[str, Any]]) -> list[Encoded]:
    """(name, dtype name, shape, bytes) per tensor: msgpack-native, so it survives vLLM's RPC."""
    import torch

    out = []
    for name, tensor in tensors:
        flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # bf16 has no numpy dtype
        out.append((name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), flat.numpy().tobytes()))
    return out


def decode_tensors(encoded: Sequence[Sequence[Any]]) -> list[tuple[str, Any]]:
    import torch

    out = []
    with warnings.catch_warnings():  # read-only bytes: load_weights only copies out of them
        warnings.simplefilter("ignore", UserWarning)
        for name, dtype, shape, raw in encoded:
            flat = torch.frombuffer(raw, dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
            out.append((name, flat.view(getattr(torch, dtype)).reshape(shape)))
    return out


class WeightReceiver:
    """Mixed into vLLM's GPU worker; `self` is that worker."""

    def tutorloop_load_weights(self, encoded: list[Encoded]) -> int:
        """Load checkpoint-format (HF-named) weights in place; returns how many tensors came."""
        weights = decode_tensors(encoded)
        self.reload_weights(weights_iterator=weights, is_checkpoint_format=True)  # type: ignore[attr-defined]
        return len(weights)
