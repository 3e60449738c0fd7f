"""What the method tests share: a shipped method config on the tiny model, and generators that
reply with token ids of their own and score as a teacher would. No model is loaded by these."""

from __future__ import annotations

from pathlib import Path

from tutorloop.config import RunConfig, load_config
from tutorloop.types import Completion, TokenScores

METHODS = Path(__file__).resolve().parents[2] / "configs" / "methods"


def method_config(name: str, model_dir: Path, overrides: tuple[str, ...] = ()) -> RunConfig:
    """configs/methods/<name>.yaml with every agent on the tiny model (its tokenizer is what the
    env's lessons are encoded with), plus `overrides`."""
    path = METHODS / f"{name}.yaml"
    agents = load_config(path).agents
    return load_config(path, [f"agents.{a}.model={model_dir}" for a in agents] + list(overrides))


def ids(text: str) -> tuple[int, ...]:
    """What a scripted model 'sampled' for a text: ids outside the tiny tokenizer's vocabulary, so a
    target re-encoded from the text would show."""
    return tuple(1000 + b for b in text.encode()) + (7,)


class TokenGenerator:
    """Replies in turn with `ids(text)` and log-probs, recording each call's (n, temperature) and
    prompt; scores any target with one log-prob per token and a top-k of that size."""

    def __init__(self, replies=(), version: int = 0) -> None:
        self.replies, self.version, self.calls, self.prompts, self.scored = tuple(replies), version, [], [], []
        self.served = 0

    async def generate(self, prompts, params):
        self.calls.append((params.n, params.temperature))
        self.prompts.append(prompts[0])
        out = []
        for _ in range(params.n):
            text = self.replies[self.served % len(self.replies)]
            self.served += 1
            out.append(Completion(text, ids(text), (-0.5,) * len(ids(text)), policy_version=self.version))
        return out

    async def score(self, prompts, target_ids, top_k):
        self.scored.append((prompts[0], tuple(target_ids[0]), top_k))
        n = len(target_ids[0])
        return [TokenScores(logprobs=(-0.25,) * n, topk_ids=((1,) * top_k,) * n, topk_logprobs=((-0.25,) * top_k,) * n)]
