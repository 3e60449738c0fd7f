"""Shared fixtures: a tiny byte-level tokenizer with a chat template and tiny random-init Llama
models saved like real checkpoints. Nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read once, when transformers is imported

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_tokenizer():
    """Byte-level BPE with no merges: 256 byte tokens + 3 specials, SmolLM2-style chat markup."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + len(SPECIALS), special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["0123456789 abc"], trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<|im_start|>",
                                 eos_token="<|im_end|>", model_max_length=2048)
    hf.chat_template = CHAT_TEMPLATE
    return hf


def save_tiny_lm(path: Path, seed: int, layers: int = 2, hidden: int = 32) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_answering_lm(path: Path, answers: tuple[str, ...] = ("1", "2"), steps: int = 80) -> Path:
    """A tiny model taught to reply "The answer is X." (X one of `answers`, about equally often) to
    any chat prompt: its replies decode, and about 1/len(answers) of them are right on problems
    whose answer is among `answers`, so envs whose lessons need some right and some wrong replies
    (the mentor's outcomes) have both. Seconds of full fine-tuning on the CPU, in one batch."""
    import random

    import torch
    from transformers import AutoModelForCausalLM

    save_tiny_lm(path, seed=2)
    tok, model = build_tiny_tokenizer(), AutoModelForCausalLM.from_pretrained(path)
    rng, rows = random.Random(0), []
    for i in range(48):
        words = " ".join(rng.choice(["Solve", "the", "problem", "feedback", "wrong", "revise", "Tom", "has", "3", "+"])
                         for _ in range(rng.randrange(2, 30)))
        messages = [{"role": "system", "content": words[: len(words) // 2]}, {"role": "user", "content": words}]
        prompt = tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                     add_special_tokens=False).input_ids
        target = tok(f"The answer is {answers[i % len(answers)]}.<|im_end|>", add_special_tokens=False).input_ids
        rows.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x, _ in rows])
    labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in rows])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in rows])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(path)
    return path


def write_gsm8k_rows(directory: Path, n: int) -> Path:
    """A GSM8K-format file (question, answer ending "#### n") of n problems, ids gsm8k-1..n by line."""
    import json

    path = directory / "g.jsonl"
    rows = [{"question": f"Q{i}: what is {i} plus 7?", "answer": f"{i} + 7 = {i + 7}\n#### {i + 7}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_ones_and_twos(directory: Path, n: int) -> Path:
    """A JSONL task file of n problems whose answers are 1 or 2, with reference solutions: the
    problems `save_answering_lm`'s model is right on about half the time."""
    import json

    path = directory / "ones_and_twos.jsonl"
    rows = [{"id": f"d{i}", "prompt": f"What is {i % 2} + 1?", "answer": str(i % 2 + 1),
             "solution": f"{i % 2} + 1 = {i % 2 + 1}. The answer is {i % 2 + 1}."} for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def tiny_answering_lm_dir(tmp_path_factory) -> Path:
    """A tiny model that replies "The answer is 1." or "... 2." about equally (`save_answering_lm`)."""
    return save_answering_lm(tmp_path_factory.mktemp("tiny_answering"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """The tiny tokenizer saved like a model directory (config.json, no weights): enough where only
    text is encoded (an env's lessons from a shipped config), without a model's setup time."""
    import json

    path = tmp_path_factory.mktemp("tiny_tokenizer")
    build_tiny_tokenizer().save_pretrained(path)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return path


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """The student: 2 layers, hidden 32, random init (seed 0)."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_student"), seed=0)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A different random model with the same tokenizer (seed 1)."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_teacher"), seed=1)


@pytest.fixture(scope="session")
def gsm8k_train() -> Path:
    path = SHARED_DATA / "gsm8k" / "train.jsonl"
    if not path.exists():
        pytest.skip("shared GSM8K data not present")
    return path


@pytest.fixture
def captured_generators(monkeypatch):
    """The generators `loop.run` builds, by agent name, filled in as the run builds them."""
    from tutorloop import loop

    captured = {}
    real = loop.build_agents

    def spy(*args, **kwargs):
        agents = real(*args, **kwargs)
        captured.update({name: agent.generator for name, agent in agents.items()})
        return agents

    monkeypatch.setattr(loop, "build_agents", spy)
    return captured
