"""Generation backends by name. One plain dict of import paths keeps optional backends (vLLM) out of
the import path until chosen (verl `_ROLLOUT_REGISTRY`)."""

from __future__ import annotations

import importlib
from typing import Any

GENERATORS = {
    "hf": "tutorloop.agents.generators.hf:HFGenerator",
    "vllm": "tutorloop.agents.generators.vllm:VLLMGenerator",  # needs the [vllm] extra and a GPU
    "openai": "tutorloop.agents.generators.openai:OpenAIGenerator",
    "scripted": "tutorloop.agents.generators.scripted:ScriptedGenerator",
}


def generator_class(name: str) -> Any:
    module, _, attr = GENERATORS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
