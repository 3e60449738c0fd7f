"""The one agent handle: a name from the config bound to a generator and sampling defaults.

An agent only talks (`sample`) and judges tokens (`score`); what it is asked and what its replies
mean belong to the env that uses it (ARCHITECTURE §7). The generator may be shared with other
agents of identical model settings, or be a Ray actor handle: every call is awaited either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tutorloop.agents.protocol import Generator
from tutorloop.types import Completion, Message, SamplingParams, TokenScores


class Agent:
    provenance = "model"
    """Who writes this agent's text, recorded on its turns (a person at the terminal: "human")."""

    def __init__(self, name: str, generator: Generator, sampling: SamplingParams) -> None:
        self.name, self.generator, self.sampling = name, generator, sampling

    async def sample(self, messages: Sequence[Message], n: int = 1,
                     sampling: SamplingParams | None = None) -> list[Completion]:
        """n completions of one prompt, under `sampling` (default: this agent's own)."""
        params = dataclasses.replace(sampling or self.sampling, n=n)
        return await self.generator.generate([tuple(messages)], params)

    async def score(self, context_messages: Sequence[Message], target_ids: Sequence[int], top_k: int,
                    temperature: float = 1.0) -> TokenScores:
        """Teacher-forced log-probs (and top-k) of `target_ids` after the context, aligned to the ids."""
        if temperature != 1.0:  # log-softmax at T needs every logit; generators return top-k only
            raise ValueError(f"score: temperature {temperature} is not supported; generators score at 1.0")
        (scores,) = await self.generator.score([tuple(context_messages)], [tuple(target_ids)], top_k)
        return scores

    def with_sampling(self, **changes: object) -> Agent:
        """The same agent and generator with other sampling defaults (e.g. greedy for evaluation)."""
        return Agent(self.name, self.generator, dataclasses.replace(self.sampling, **changes))
