"""Text to the trained model's token ids, once, where lessons are made (torch-free: envs use it).

Targets are token ids: sampled ids are never re-tokenized from text. Text targets (a teacher's
correction, a reference solution) are encoded with the trained model's tokenizer and end with its
end token; the rejected side of a pair is the ids that were sampled, with no end token added.
"""

from __future__ import annotations

from typing import Any

from tutorloop.models import render_prompt_ids
from tutorloop.types import Messages


class TokenEncoder:
    """The trained model's tokenizer for lesson makers: chat prompts (each rendered once) and texts."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self._prompts = tokenizer, {}

    def prompt(self, messages: Messages) -> tuple[int, ...]:
        key = tuple(tuple(m.items()) for m in messages)
        if key not in self._prompts:
            self._prompts[key] = tuple(render_prompt_ids(self.tokenizer, messages))
        return self._prompts[key]

    def text(self, text: str, *, eos: bool = True) -> tuple[int, ...]:
        """`text`'s ids; `eos`: a text target ends with the end token, as a model would end it."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return tuple(ids) + ((self.tokenizer.eos_token_id,) if eos else ())
