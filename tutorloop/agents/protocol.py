"""Who talks: the Generator (messages in; text, tokens and log-probs out) and the agent handle protocol.

Every method that may cross a process boundary is `async`, so the same `await` works on an object
in this process and on a Ray actor handle (issue: Ray runtime). Protocols, not base classes.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from tutorloop.types import Completion, Message, SamplingParams, TokenScores


@runtime_checkable
class Generator(Protocol):
    async def generate(self, prompts: Sequence[Sequence[Message]], params: SamplingParams) -> list[Completion]:
        """`params.n` completions per prompt, consecutively."""
        ...

    async def score(self, prompts: Sequence[Sequence[Message]], target_ids: Sequence[Sequence[int]],
                    top_k: int) -> list[TokenScores]:
        """Teacher-forced log-probs (and top-k) of each target span under its own context."""
        ...

    async def load_weights(self, weights: object, version: int | None = None) -> int:
        """Take new policy weights (LoRA: adapter tensors only): `PackedWeights` or (name, tensor)
        pairs with their version, or a (version, weights) pair as `Trainer.weights()` returns it.
        Later samples carry the version, which is returned."""
        ...

    async def stats(self) -> dict[str, float]:
        """Counters since the last call (tokens generated, seconds), then reset."""
        ...

    async def sampling_state(self) -> dict[str, int]:
        """Where the generator is in its seeded stream of samples (for checkpoints)."""
        ...

    async def load_sampling_state(self, state: dict[str, int]) -> None:
        """Continue from `sampling_state()`'s result: later samples repeat the original run's exactly."""
        ...


@runtime_checkable
class AgentHandle(Protocol):
    """What an env may ask of an agent: `tutorloop.agents.handle.Agent`, or a person (`chat.py`)."""

    name: str
    provenance: str
    sampling: SamplingParams

    async def sample(self, messages: Sequence[Message], n: int = 1,
                     sampling: SamplingParams | None = None) -> list[Completion]: ...

    async def score(self, context_messages: Sequence[Message], target_ids: Sequence[int], top_k: int,
                    temperature: float = 1.0) -> TokenScores: ...
