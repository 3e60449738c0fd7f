"""HFGenerator's own sampling step against transformers' warpers (temperature, top-k 50, top-p), the
distribution `model.generate` sampled from before the generator had its own decode loop."""

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from tutorloop.generators.hf import TOP_K, candidates, pick_tokens


def transformers_probs(logits_B_V, temperature, top_p):
    scores = TemperatureLogitsWarper(temperature)(None, logits_B_V.clone())
    scores = TopKLogitsWarper(TOP_K)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores.softmax(-1)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0), (0.7, 0.9), (1.3, 0.5), (0.5, 0.05)])
def test_candidates_match_transformers_warpers(temperature, top_p):
    torch.manual_seed(0)
    logits_B_V = torch.randn(4, 300) * 3
    probs_B_K, ids_B_K = candidates(logits_B_V, temperature, top_p)
    ours_B_V = torch.zeros_like(logits_B_V).scatter(-1, ids_B_K, probs_B_K / probs_B_K.sum(-1, keepdim=True))
    torch.testing.assert_close(ours_B_V, transformers_probs(logits_B_V, temperature, top_p), atol=1e-6, rtol=1e-5)


def test_greedy_is_argmax_and_samples_stay_among_the_candidates():
    torch.manual_seed(1)
    logits_B_V = torch.randn(3, 500)
    assert torch.equal(pick_tokens(logits_B_V, 0.0, 1.0), logits_B_V.argmax(-1))
    allowed_B_K = candidates(logits_B_V, 0.8, 0.9)
    picks = torch.stack([pick_tokens(logits_B_V, 0.8, 0.9) for _ in range(200)], dim=1)
    for row, (probs_K, ids_K) in enumerate(zip(*allowed_B_K)):
        assert set(picks[row].tolist()) <= set(ids_K[probs_K > 0].tolist())
