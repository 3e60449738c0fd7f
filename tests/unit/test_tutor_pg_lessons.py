"""The tutor's `pg` lessons from dialogues: every sampled tutor turn, with its dialogue's reward
success − λ·telling minus the mean over the dialogues passed; never the env's opening, never a
recorded dialogue. (That λ changes the gradient: tests/integration/test_tutor_pg.py.)"""

import json
from dataclasses import replace

import pytest

from tutorloop.envs.dialogue import opening
from tutorloop.envs.mathdial import load_mathdial
from tutorloop.envs.prompts import sim_student_turn, tutor_turn
from tutorloop.envs.to_examples import to_tutor_lessons
from tutorloop.envs.tutoring_metrics import dialogue_rewards
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Problem, Turn

PROBLEM = Problem("p1", "Ana has 3 bags of 4 plums. How many plums?", answer="12",
                  solution="3 * 4 = 12.\nThe answer is 12.", incorrect_solution="3 + 4 = 7.\nThe answer is 7.",
                  persona="Rina is a 7th grade student who adds too quickly.")


def dialogue(exchanges, telling_penalty, version=3):
    """The opening, the student's explanation, then (tutor, student) exchanges; each tutor turn
    carries made-up sampled ids and log-probs, as a model's sample would."""
    turns = [opening(PROBLEM)]
    turns.append(Turn("sim_student", "I added: 7.", sim_student_turn(PROBLEM, turns), kind="utterance"))
    for i, (tutor, student) in enumerate(exchanges):
        ids = tuple(range(10 + i, 13 + i))
        turns.append(Turn("tutor", tutor, tutor_turn(PROBLEM, turns), kind="utterance", token_ids=ids,
                          logprobs=(-0.5, -1.0, -1.5), policy_version=version))
        turns.append(Turn("sim_student", student, sim_student_turn(PROBLEM, turns), kind="utterance"))
    return Episode(PROBLEM, tuple(turns), rewards=dialogue_rewards(turns, PROBLEM.answer, telling_penalty))


GUIDED = [("Why 3 + 4?", "Oh, 12.")]                                 # success, no telling: reward 1
TOLD = [("It is 12.", "Ok, 12.")]                                    # success, told: reward 1 - λ
FAILED = [("Look again.", "Still 7."), ("Count one bag.", "4, so 7.")]  # no success: reward 0


@pytest.fixture
def encode(tiny_tokenizer):
    return TokenEncoder(tiny_tokenizer)


def pg_lessons(dialogues, encode, objectives=frozenset({"pg"})):
    return [x for x in to_tutor_lessons(dialogues, encode, objectives=set(objectives)) if x.objective == "pg"]


@pytest.mark.parametrize("telling_penalty, advantages", [
    (0.5, [0.5, 0.0, -0.5, -0.5]),          # rewards 1, 0.5, 0: mean 0.5
    (1.0, [2 / 3, -1 / 3, -1 / 3, -1 / 3]),  # rewards 1, 0, 0: mean 1/3
])
def test_advantage_is_the_reward_minus_the_mean_over_the_dialogues(encode, telling_penalty, advantages):
    dialogues = [dialogue(d, telling_penalty) for d in (GUIDED, TOLD, FAILED)]
    lessons = pg_lessons(dialogues, encode)
    assert [x.advantage for x in lessons] == pytest.approx(advantages)  # FAILED's two turns share its A
    assert {x.provenance for x in lessons} == {"tutor:reward"}


def test_a_lesson_is_the_turn_as_sampled_under_the_prompt_the_tutor_saw(encode):
    told = dialogue(TOLD, 0.5, version=7)
    lesson = pg_lessons([told, dialogue(GUIDED, 0.5)], encode)[0]
    turn = told.turns[2]
    assert lesson.prompt_ids == encode.prompt(turn.prompt)
    assert lesson.target_ids == turn.token_ids == (10, 11, 12)  # the sampled ids, not the text re-encoded
    assert lesson.behavior_logprobs == turn.logprobs and lesson.policy_version == 7
    assert lesson.advantage == pytest.approx(-0.25)  # rewards 0.5 and 1


def test_one_dialogue_has_advantage_zero(encode):
    (lesson,) = pg_lessons([dialogue(TOLD, 1.0)], encode)
    assert lesson.advantage == 0.0


def test_the_opening_is_never_a_pg_lesson_even_with_ids(encode):
    told = dialogue(TOLD, 0.5)
    sampled_looking = replace(told.turns[0], token_ids=(1, 2), logprobs=(-0.1, -0.2))  # still the env's
    lessons = pg_lessons([replace(told, turns=(sampled_looking, *told.turns[1:])), dialogue(GUIDED, 0.5)], encode)
    assert [x.target_ids for x in lessons] == [(10, 11, 12), (10, 11, 12)]
    assert len(lessons) == 2  # one tutor turn each; the opening of neither


def test_turns_without_ids_or_logprobs_give_no_pg_lesson(encode):
    told = dialogue(TOLD, 0.5)

    def without(**empty):
        return replace(told, turns=(*told.turns[:2], replace(told.turns[2], **empty), *told.turns[3:]))

    lessons = pg_lessons([without(logprobs=()), without(token_ids=()), dialogue(GUIDED, 0.5)], encode)
    # Only GUIDED's turn; the baseline is still the mean over all three dialogues passed: (0.5 + 0.5 + 1) / 3.
    assert [x.advantage for x in lessons] == pytest.approx([1 / 3])


def test_recorded_mathdial_dialogues_give_sft_but_no_pg_lessons(encode, tmp_path):
    row = {"qid": "q1", "question": PROBLEM.prompt, "ground_truth": "3 x 4 = 12 plums.\\n 12",
           "student_incorrect_solution": "3 + 4 = 7 plums.\\n 7", "student_profile": "Rina is a student.",
           "conversation": "Teacher: (generic)Hi Rina?|EOM|Rina: I got 7.|EOM|Teacher: (probing)Why add?|EOM|"
                           "Rina: Oh, 3 x 4 = 12."}
    (tmp_path / "mathdial.jsonl").write_text(json.dumps(row) + "\n")
    recorded = load_mathdial(tmp_path / "mathdial.jsonl", telling_penalty=0.5).dialogues
    lessons = to_tutor_lessons(recorded, encode, objectives={"sft", "pg"})
    assert recorded[0].rewards["reward"] == 1.0 and lessons  # a success without telling ...
    assert {x.objective for x in lessons} == {"sft"}          # ... but nothing the tutor sampled


def test_sft_and_dpo_lessons_are_unchanged_by_pg(encode):
    dialogues = [dialogue(d, 0.5) for d in (GUIDED, TOLD, FAILED)]
    dialogues[0] = replace(dialogues[0], turns=(*dialogues[0].turns[:2],
                                                replace(dialogues[0].turns[2], alternatives=("It is 12.",)),
                                                *dialogues[0].turns[3:]))
    without = to_tutor_lessons(dialogues, encode, objectives={"sft", "dpo"})
    with_pg = to_tutor_lessons(iter(dialogues), encode, objectives={"sft", "dpo", "pg"})  # any iterable
    assert {x.objective for x in without} == {"sft", "dpo"}
    assert [x for x in with_pg if x.objective != "pg"] == without
    assert len([x for x in with_pg if x.objective == "pg"]) == 4
