"""Canned replies, in turn, for tests and examples. It has no model, so it cannot score tokens."""

from __future__ import annotations

from typing import Sequence

from tutorloop.errors import UserError
from tutorloop.types import Completion, Message, SamplingParams, TokenScores


class ScriptedGenerator:
    def __init__(self, replies: Sequence[str]) -> None:
        self.replies, self.calls = tuple(replies), 0
        self.version = 0

    async def generate(self, prompts: Sequence[Sequence[Message]], params: SamplingParams) -> list[Completion]:
        out = []
        for _ in range(len(prompts) * params.n):
            out.append(Completion(text=self.replies[self.calls % len(self.replies)], token_ids=(), logprobs=(),
                                  policy_version=self.version))
            self.calls += 1
        return out

    async def score(self, prompts: Sequence[Sequence[Message]], target_ids: Sequence[Sequence[int]],
                    top_k: int) -> list[TokenScores]:
        raise UserError("a scripted generator cannot score tokens; use a model generator for OPD")

    async def load_weights(self, weights: object, version: int | None = None) -> int:
        self.version = weights[0] if version is None else version  # type: ignore[index]
        return self.version

    async def stats(self) -> dict[str, float]:
        return {}

    async def sampling_state(self) -> dict[str, int]:
        return {"calls": self.calls}

    async def load_sampling_state(self, state: dict[str, int]) -> None:
        self.calls = int(state["calls"])
