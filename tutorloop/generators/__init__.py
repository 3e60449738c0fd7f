"""Generation backends by name. One plain dict of import paths keeps optional backends (vLLM) out of
the import path until chosen (verl `_ROLLOUT_REGISTRY`)."""

from __future__ import annotations

import importlib
from typing import Any

GENERATORS = {
    "hf": "tutorloop.generators.hf:HFGenerator",
    "vllm": "tutorloop.generators.vllm:VLLMGenerator",  # needs the [vllm] extra and a GPU
    "openai": "tutorloop.generators.openai:OpenAIGenerator",
    "scripted": "tutorloop.generators.scripted:ScriptedGenerator",
}


def generator_class(name: str) -> Any:
    module, _, attr = GENERATORS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
