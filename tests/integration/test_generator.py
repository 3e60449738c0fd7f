"""HFGenerator on a tiny random model: batched generation, log-probs that agree with scoring,
and weight loading."""

import asyncio

import pytest
import torch

from tutorloop.generators.hf import HFGenerator
from tutorloop.types import SamplingParams

pytestmark = pytest.mark.integration

PROMPTS = [({"role": "user", "content": "1 + 2 ="},), ({"role": "user", "content": "a much longer prompt, 40 + 2 ="},)]


def test_sampled_logprobs_equal_teacher_forced_scores(tiny_lm_dir):
    """METHODS 4.11.3: scoring a sample under the context that produced it returns its own log-probs."""
    gen = HFGenerator(str(tiny_lm_dir), seed=1)
    outs = asyncio.run(gen.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=12)))
    scores = asyncio.run(gen.score(PROMPTS, [o.token_ids for o in outs], top_k=5))
    for out, score in zip(outs, scores):
        assert len(out.token_ids) == len(out.logprobs) == len(score.logprobs) > 0
        torch.testing.assert_close(torch.tensor(score.logprobs), torch.tensor(out.logprobs), atol=1e-4, rtol=1e-4)
        assert all(len(row) == 5 for row in score.topk_ids)
        assert all(a >= b for row in score.topk_logprobs for a, b in zip(row, row[1:]))


def test_batched_scores_equal_each_sequence_scored_alone(tiny_lm_dir):
    """One padded forward for rows of different context and target lengths (an empty target too)
    gives each row what a plain teacher-forced pass over that sequence alone, unpadded, gives."""
    from tutorloop.models import render_prompt_ids

    gen, top_k = HFGenerator(str(tiny_lm_dir)), 7
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], ({"role": "user", "content": "9"},)]
    targets = [(40, 41, 42, 43, 44, 45, 46, 47, 48), (50,), (), (60, 61, 62, 63)]
    scores = asyncio.run(gen.score(prompts, targets, top_k=top_k))
    for prompt, target, score in zip(prompts, targets, scores):
        context = render_prompt_ids(gen.tokenizer, prompt)
        with torch.no_grad():
            logits = gen.model(input_ids=torch.tensor([context + list(target)])).logits[0]
        logp_T_V = torch.log_softmax(logits[len(context) - 1:-1].float(), -1)  # position t predicts target[t]
        assert len(score.logprobs) == len(score.topk_ids) == len(score.topk_logprobs) == len(target)
        if not target:
            continue
        expected = logp_T_V.gather(-1, torch.tensor(target)[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(score.logprobs), expected, atol=1e-5, rtol=1e-5)
        # Values at the returned ids, and the k largest values: near-ties may swap ids, nothing else.
        ids_T_K = torch.tensor(score.topk_ids)
        assert ids_T_K.shape == (len(target), top_k)
        top_logp_T_K = torch.tensor(score.topk_logprobs)
        torch.testing.assert_close(top_logp_T_K, logp_T_V.gather(-1, ids_T_K), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(top_logp_T_K, logp_T_V.topk(top_k, -1).values, atol=1e-5, rtol=1e-5)


def test_greedy_generation_is_the_same_alone_and_in_a_batch(tiny_lm_dir):
    gen = HFGenerator(str(tiny_lm_dir))
    greedy = SamplingParams(temperature=0.0, max_new_tokens=10)
    batched = asyncio.run(gen.generate(PROMPTS, greedy))
    alone = [asyncio.run(gen.generate([p], greedy))[0] for p in PROMPTS]
    assert [o.token_ids for o in batched] == [o.token_ids for o in alone]


def test_n_samples_per_prompt_and_stats(tiny_lm_dir):
    gen = HFGenerator(str(tiny_lm_dir))
    outs = asyncio.run(gen.generate(PROMPTS[:1], SamplingParams(temperature=1.0, max_new_tokens=6, n=3)))
    assert len(outs) == 3
    stats = asyncio.run(gen.stats())
    assert stats["gen_tokens"] == sum(len(o.token_ids) for o in outs)
    assert asyncio.run(gen.stats())["gen_tokens"] == 0


def test_load_weights_changes_samples_and_version(tiny_lm_dir):
    gen = HFGenerator(str(tiny_lm_dir))
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    before = asyncio.run(gen.generate(PROMPTS[:1], greedy))[0]
    noisy = [(name, t + torch.randn_like(t)) for name, t in gen.model.state_dict().items()]
    asyncio.run(gen.load_weights(noisy, version=3))
    after = asyncio.run(gen.generate(PROMPTS[:1], greedy))[0]
    assert after.policy_version == 3 and after.token_ids != before.token_ids
