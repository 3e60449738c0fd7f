"""The embedded SmolLM2 through HFGenerator's own decode loop gives what `model.generate` gives:
the same greedy tokens, row by row in a batch whose rows stop at different lengths."""

import asyncio

import pytest
import torch

from tutorloop.generators.hf import HFGenerator
from tutorloop.models import render_prompt_ids
from tutorloop.types import SamplingParams

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPTS = [({"role": "user", "content": "What is 2 + 3? Answer with a number only."},),
           ({"role": "user", "content": "Write a long poem about the sea."},),
           ({"role": "user", "content": "Say hi."},)]


def test_greedy_decode_matches_model_generate():
    gen = HFGenerator("embedded:smollm2-135m-instruct", dtype="float32")
    tokenizer, eos = gen.tokenizer, gen.tokenizer.eos_token_id
    ours = asyncio.run(gen.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=40)))
    for prompt, completion in zip(PROMPTS, ours):
        ids = torch.tensor([render_prompt_ids(tokenizer, prompt)])
        with torch.no_grad():
            out = gen.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=40, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        expected = out[0, ids.shape[1]:].tolist()
        assert list(completion.token_ids) == expected
        assert completion.finish_reason == ("stop" if expected[-1] == eos else "length")
