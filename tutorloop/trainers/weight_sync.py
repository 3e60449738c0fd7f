"""Push the trainer's weights to the student's generator, so the next round samples the new policy.

With LoRA only the adapter tensors travel (a few MB for SmolLM2 instead of 540). The generator
stamps every later completion with the returned version, which is how stale lessons are found.
"""

from __future__ import annotations

from typing import Any


async def sync_weights(trainer: Any, generator: Any) -> int:
    version, tensors = await trainer.weights()
    await generator.load_weights(tensors, version)
    return version
