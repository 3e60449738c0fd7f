"""λ (env.telling_penalty) reaches the tutor's gradient through `pg`: two successful dialogues, one
in which the student found the answer and one in which the tutor told it, go through the dialogue
env's rewards and lessons into the real trainer on a tiny random model."""

import asyncio

import pytest
import torch

from tutorloop.envs.dialogue import DialogueEnv, opening
from tutorloop.envs.prompts import sim_student_turn, tutor_turn
from tutorloop.generators.hf import HFGenerator
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.trainers.online import OnlineTrainer
from tutorloop.types import Problem, Turn

pytestmark = pytest.mark.integration

PROBLEM = Problem("p1", "Ana has 3 bags of 4 plums. How many plums?", answer="12",
                  solution="3 * 4 = 12.\nThe answer is 12.", incorrect_solution="3 + 4 = 7.\nThe answer is 7.",
                  persona="Rina is a 7th grade student who adds too quickly.")
GUIDED = ("Why 3 + 4? Look at one bag.", "Oh, 3 x 4 = 12.")  # success without telling: reward 1
TOLD = ("It is 3 x 4 = 12.", "Ok, 12.")                       # success, told: reward 1 - λ


@pytest.fixture(scope="module")
def transcripts(tiny_lm_dir, tiny_tokenizer):
    """Both dialogues' turns; each tutor turn's ids and behaviour log-probs are the tiny model's own
    (scored, so the ratio is 1 and nothing is clipped), as if it had sampled them."""
    encode, scorer = TokenEncoder(tiny_tokenizer), HFGenerator(str(tiny_lm_dir))
    out = []
    for tutor, student in (GUIDED, TOLD):
        turns = [opening(PROBLEM)]
        turns.append(Turn("sim_student", "I added: 7.", sim_student_turn(PROBLEM, turns), kind="utterance"))
        prompt, ids = tutor_turn(PROBLEM, turns), encode.text(tutor)
        (scores,) = asyncio.run(scorer.score([prompt], [ids], top_k=0))
        turns.append(Turn("tutor", tutor, prompt, kind="utterance", token_ids=ids, logprobs=scores.logprobs))
        turns.append(Turn("sim_student", student, sim_student_turn(PROBLEM, turns), kind="utterance"))
        out.append(turns)
    return out


@pytest.fixture(scope="module")
def trainer(tiny_lm_dir):
    return OnlineTrainer(str(tiny_lm_dir), objectives={"pg": 1.0}, lr=1e-2, lora=None)


def pg_gradient(trainer, transcripts, tiny_tokenizer, telling_penalty):
    """The pg gradient of one round made of these two dialogues under λ = telling_penalty."""
    env = DialogueEnv(max_turns=3, telling_penalty=telling_penalty, objectives=frozenset({"pg"}),
                      encode=TokenEncoder(tiny_tokenizer))
    lessons = env.lessons([env.episode(PROBLEM, turns) for turns in transcripts])
    assert [x.objective for x in lessons] == ["pg", "pg"]
    trainer.model.zero_grad(set_to_none=True)
    metrics = trainer.accumulate(lessons)
    assert metrics["pg/clipped_tokens"] == 0
    return torch.cat([p.grad.flatten() for p in trainer.params])


def test_telling_penalty_changes_the_tutor_gradient(trainer, transcripts, tiny_tokenizer):
    zero = pg_gradient(trainer, transcripts, tiny_tokenizer, 0.0)
    assert torch.count_nonzero(zero) == 0  # λ = 0: both rewards 1, both advantages 0
    one = pg_gradient(trainer, transcripts, tiny_tokenizer, 1.0)
    assert one.abs().max() > 1e-4  # λ = 1: advantages +1/2 (guided) and -1/2 (told)
    half = pg_gradient(trainer, transcripts, tiny_tokenizer, 0.5)
    assert not torch.allclose(half, one)
    # At ratio 1 the gradient is linear in the advantages, here ±λ/2: λ = 0.5 gives half of λ = 1's.
    torch.testing.assert_close(2 * half, one)
