"""MAPD / FAIR as configs/methods/mapd.yaml builds it (METHODS B2), with generators that reply by what
they are asked: the student's wrong items only go to the committee of three teachers, each writes
feedback and a rationale, each rationale is scored by the two other teachers and accepted iff the
mean of its valid scores is > 3, and one feedback and one accepted rationale become a critique
lesson (weight α) and a solve lesson (weight 1 − α). The tiny model is only a tokenizer here.

The loss the weighted lessons give, L = (α Σ nll(critique) + (1 − α) Σ nll(solve)) / tokens, is the
trainer's per-lesson weight, reused from distill_step_by_step and checked by hand in
tests/integration/test_trainer.py::test_lesson_weight_scales_its_tokens."""

import asyncio

import pytest
from method_helpers import TokenGenerator, ids, method_config

from tutorloop.agents import Agent
from tutorloop.envs import build_env
from tutorloop.envs.peer_review import accepted, critique_prompt, parse_score
from tutorloop.envs.prompts import student_attempt
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Completion, Problem, SamplingParams

APPLES = Problem(id="a", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                 solution="6 + 23 = 29.\nThe answer is 29.")
PLUMS = Problem(id="b", prompt="Ana has 3 bags of 4 plums. How many plums?", answer="12",
                solution="3 * 4 = 12.\nThe answer is 12.")
WRONG_ATTEMPT = "3 + 4 = 7. The answer is 7."
RATIONALES = {"teacher_a": "3 * 4 = 12. The answer is 12.", "teacher_b": "4 * 3 = 12. The answer is 12.",
              "teacher_c": "3 + 4 = 7. The answer is 7."}
FEEDBACK = {name: f"{name}: the bags were added, not multiplied." for name in RATIONALES}
REVIEWS = {  # reviewer → {author → reply}: a's rationale gets [3], [4] (3.5, accepted); b's [3], [3]
    # (3.0, rejected); c's (wrong, but the reviewers like it) [5] and no score (5, accepted)
    "teacher_a": {"teacher_b": "Sound. [3]", "teacher_c": "[5]"},
    "teacher_b": {"teacher_a": "Score: [3]", "teacher_c": "I cannot tell."},
    "teacher_c": {"teacher_a": "Correct and clear. [4]", "teacher_b": "[3/5]"},
}


class Teacher:
    """A teacher that replies by what it is asked: feedback on the student's answer, its rationale,
    or a review of another teacher's rationale (recorded as (kind, author) in `asked`)."""

    def __init__(self, name: str) -> None:
        self.name, self.prompts, self.asked = name, [], []

    async def generate(self, prompts, params):
        messages = prompts[0]
        self.prompts.append(messages)
        ask = messages[-1]["content"]
        if ask.startswith("Imagine you are a reviewer"):
            (author,) = [a for a, text in RATIONALES.items() if f"Rationale: {text}\n" in ask]
            kind, text = ("review", author), REVIEWS[self.name][author]
        elif ask.startswith("Imagine you are a teacher"):
            kind, text = ("feedback", None), FEEDBACK[self.name]
        else:
            kind, text = ("rationale", None), RATIONALES[self.name]
        self.asked.append(kind)
        return [Completion(text, ids(text), (-0.5,) * len(ids(text)))] * params.n


def _round(overrides=(), tokenizer_dir=None, problems=((APPLES, "6 + 23 = 29. The answer is 29."),
                                                       (PLUMS, WRONG_ATTEMPT))):
    cfg = method_config("mapd", tokenizer_dir, overrides)
    env = build_env(cfg)
    teachers = {name: Teacher(name) for name in cfg.env.teachers}
    episodes = []
    for problem, reply in problems:
        agents = {"student": Agent("student", TokenGenerator([reply]), SamplingParams())}
        agents |= {name: Agent(name, t, SamplingParams(temperature=0.8)) for name, t in teachers.items()}
        episodes.append(asyncio.run(env.run(problem, agents)))
    return env, episodes, teachers


def test_only_wrong_items_go_to_three_teachers_that_each_give_feedback_and_a_rationale(tiny_tokenizer_dir):
    """MAPD's committee (METHODS B2 steps 1-2): a right exam item calls no teacher; for the wrong one
    each of the three teachers writes feedback, seeing the question, the student's wrong answer and
    the correct answer as a hint, and a rationale of its own (the student's bare prompt, with the
    reference solution: env.privileged). Catches: the wrong-item gate removed (teachers called for
    the right item), a teacher left out of the committee, feedback that is not shown the mistake or
    the hint, a rationale asked of the student's attempt instead of the question."""
    cfg = method_config("mapd", tiny_tokenizer_dir)
    assert cfg.env.teachers == ("teacher_a", "teacher_b", "teacher_c") and cfg.env.privileged
    env, (right,), teachers = _round(tokenizer_dir=tiny_tokenizer_dir, problems=((APPLES, "The answer is 29."),))
    assert [t.role for t in right.turns] == ["student"] and all(not t.prompts for t in teachers.values())
    env, (right, wrong), teachers = _round(tokenizer_dir=tiny_tokenizer_dir)
    assert [t.role for t in right.turns] == ["student"] and right.turns[0].correct
    for name, teacher in teachers.items():
        assert sorted(k for k, _ in teacher.asked) == ["feedback", "rationale", "review", "review"]
        feedback_ask = next(p for p, (k, _) in zip(teacher.prompts, teacher.asked) if k == "feedback")[-1]["content"]
        assert WRONG_ATTEMPT in feedback_ask and "The correct answer should be 12." in feedback_ask
        assert PLUMS.prompt in feedback_ask
        rationale_prompt = next(p for p, (k, _) in zip(teacher.prompts, teacher.asked) if k == "rationale")
        assert rationale_prompt[-1] == student_attempt(PLUMS)[-1] and "3 * 4 = 12" in rationale_prompt[0]["content"]
        assert WRONG_ATTEMPT not in str(rationale_prompt)
    by_part = {env.parts[t.role]: t for t in wrong.turns if t.kind in ("feedback", "rationale")}
    assert len([t for t in wrong.turns if t.kind == "feedback"]) == 3
    assert {name: t.text for name, t in by_part.items() if t.kind == "rationale"} == RATIONALES


def test_each_rationale_is_reviewed_by_exactly_the_two_other_teachers(tiny_tokenizer_dir):
    """Peer review (METHODS B2 step 3): every teacher's rationale is scored by each OTHER teacher once
    (six reviews for three teachers), under the paper's prompt with the hint, never by its author.
    Catches: self-review, a reviewer skipped, a rationale reviewed twice by one teacher, the review
    prompt lacking the rationale or the hint."""
    env, (_, wrong), teachers = _round(tokenizer_dir=tiny_tokenizer_dir)
    reviewed = {name: sorted(a for k, a in t.asked if k == "review") for name, t in teachers.items()}
    assert reviewed == {"teacher_a": ["teacher_b", "teacher_c"], "teacher_b": ["teacher_a", "teacher_c"],
                        "teacher_c": ["teacher_a", "teacher_b"]}
    review_turns = [t for t in wrong.turns if t.kind.startswith("review:")]
    assert len(review_turns) == 6
    assert all(t.role != t.kind.split(":")[1] for t in review_turns)  # a reviewer is never the author
    ask = next(p for p, (k, _) in zip(teachers["teacher_a"].prompts, teachers["teacher_a"].asked) if k == "review")
    assert "The correct answer should be 12." in ask[-1]["content"] and "[5]" in ask[-1]["content"]


@pytest.mark.parametrize("reply, score", [("[4]", 4), ("Sound reasoning. [5]", 5), ("[4/5]", 4), ("[ 2 ]", 2),
                                          ("[1] at first, then [3]", 3), ("[6]", None), ("[0]", None),
                                          ("no score", None), ("[excellent] 4", None), ("I would say 4.", 4),
                                          ("", None)])
def test_the_score_in_brackets_is_read_as_the_papers_check_score_reads_it(reply, score):
    """The reviewer's score (the paper's check_score): the last [...] group, its numerator for "[4/5]",
    else the reply's last number; anything outside 1-5, or no number, is no valid score rather than
    an error. Catches: the first bracket read instead of the last, "[4/5]" read as 5, a score of 6
    or 0 counted, a reply without a score raising."""
    assert parse_score(reply) == score


def test_a_rationale_is_accepted_iff_the_mean_of_its_valid_scores_is_above_3(tiny_tokenizer_dir):
    """The acceptance rule (collect_teacher_res.py L224-250): mean of the valid scores > 3, strictly;
    an unparseable score is left out of the mean; no valid score at all rejects. In the round: a's
    [3], [4] → 3.5 accepted, b's [3], [3/5] → 3 rejected, c's [5] and no score → 5 accepted (peer
    review alone decides, though c's answer is wrong; env.verify_rationales=true drops it). Catches:
    >= 3 instead of > 3, an unparseable score counted as 0 (c rejected), no valid score accepted,
    the verify_rationales knob ignored."""
    assert accepted([3, 4]) and not accepted([3, 3]) and accepted([5, None]) and not accepted([None, None])
    assert not accepted([]) and accepted([4, 4], above=3.5) and not accepted([3, 4], above=3.5)
    env, (_, wrong), _ = _round(tokenizer_dir=tiny_tokenizer_dir)
    assert [t.text for t in env.accepted_rationales(PLUMS, wrong.turns)] == [RATIONALES["teacher_a"], RATIONALES["teacher_c"]]
    assert env.scores(wrong.turns, "teacher2") == [3, 3] and env.scores(wrong.turns, "teacher3") == [5, None]
    env, (_, wrong), _ = _round(("env.verify_rationales=true",), tiny_tokenizer_dir)
    assert [t.text for t in env.accepted_rationales(PLUMS, wrong.turns)] == [RATIONALES["teacher_a"]]


def test_the_acceptance_rate_is_logged_per_teacher(tiny_tokenizer_dir):
    """METHODS B2's "log the acceptance rate per teacher": mapd/accept_rate/<agent> over the round's
    wrong items (a 1, b 0, c 1), the committee's mean, each teacher's mean valid score, and a console
    column per teacher. Catches: rates over all items (the right one counted), rates keyed by
    anything but the agent, a missing column."""
    env, episodes, _ = _round(tokenizer_dir=tiny_tokenizer_dir)
    metrics = env.metrics(episodes)
    assert metrics["mapd/exam_accuracy"] == 0.5 and metrics["mapd/wrong_items"] == 1
    assert (metrics["mapd/accept_rate/teacher_a"], metrics["mapd/accept_rate/teacher_b"],
            metrics["mapd/accept_rate/teacher_c"]) == (1.0, 0.0, 1.0)
    assert metrics["mapd/accept_rate"] == pytest.approx(2 / 3) and metrics["mapd/taught_rate"] == 1.0
    assert metrics["mapd/mean_score/teacher_a"] == 3.5 and metrics["mapd/mean_score/teacher_c"] == 5.0
    assert {key for _, key, _ in env.columns} >= {f"mapd/accept_rate/{n}" for n in RATIONALES} | {"loss/sft"}


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_one_feedback_and_one_accepted_rationale_become_critique_and_solve_lessons(tiny_tokenizer_dir,
                                                                                   tiny_tokenizer, alpha):
    """MAPD's lessons (METHODS B2 step 4, loss): per wrong question one teacher's feedback becomes the
    critique task ("as a teacher, point out the mistakes" | question + student answer + hint →
    feedback) at weight α, and one accepted rationale the solve task (the student's bare step-by-step
    prompt → rationale) at weight 1 − α, both SFT for the student, in its ids ending with EOS.
    Catches: α not reaching the weights (0.3 case), the weights swapped, a rejected rationale (b's)
    trained on, the critique prompt missing the student's answer, the teacher's sampled ids kept as
    targets, a shipped α other than 0.5, the right item taught."""
    assert method_config("mapd", tiny_tokenizer_dir).env.critique_weight == 0.5
    env, episodes, _ = _round((f"env.critique_weight={alpha}",), tiny_tokenizer_dir)
    encode = TokenEncoder(tiny_tokenizer)
    critique, solve = env.lessons(episodes)
    assert {(x.objective, x.learner) for x in (critique, solve)} == {("sft", "student")}
    assert (critique.weight, solve.weight) == pytest.approx((alpha, 1 - alpha))
    shown = critique_prompt(PLUMS, WRONG_ATTEMPT, hint=True)
    assert "point out the mistakes" in shown[0]["content"] and WRONG_ATTEMPT in shown[1]["content"]
    assert PLUMS.prompt in shown[1]["content"] and "The correct answer should be 12." in shown[1]["content"]
    assert critique.prompt_ids == encode.prompt(shown)
    assert critique.target_ids in {encode.text(f) for f in FEEDBACK.values()}
    assert solve.prompt_ids == encode.prompt(student_attempt(PLUMS))
    assert solve.target_ids in {encode.text(RATIONALES["teacher_a"]), encode.text(RATIONALES["teacher_c"])}
    assert not {critique.target_ids, solve.target_ids} & {ids(t) for t in (*FEEDBACK.values(), *RATIONALES.values())}
    assert critique.target_ids[-1] == solve.target_ids[-1] == tiny_tokenizer.eos_token_id
    no_hint, _ = build_env(method_config("mapd", tiny_tokenizer_dir, ("env.critique_hint=false",))).lessons(episodes)
    assert no_hint.prompt_ids == encode.prompt(critique_prompt(PLUMS, WRONG_ATTEMPT, hint=False))


def test_the_mixed_pick_draws_every_feedback_and_accepted_rationale_by_a_seeded_coin(tiny_tokenizer_dir):
    """The paper's "mixed" mode: a random teacher's feedback and a random accepted rationale per
    question, from a generator seeded by (run seed, problem id), so a rerun picks alike. Over 40
    questions every teacher's feedback and both accepted rationales are picked, the rejected one
    never; a question without an accepted rationale teaches nothing, not even its critique.
    Catches: always the first teacher, a rejected rationale picked, an unseeded pick, a critique
    lesson made without a rationale."""
    problems = [(Problem(id=f"q{i}", prompt=PLUMS.prompt, answer="12", solution=PLUMS.solution), WRONG_ATTEMPT)
                for i in range(40)]
    env, episodes, _ = _round(tokenizer_dir=tiny_tokenizer_dir, problems=problems)
    pairs = [env.training_pair(e) for e in episodes]
    assert {env.parts[f.role] for f, _ in pairs} == set(RATIONALES)
    assert {r.text for _, r in pairs} == {RATIONALES["teacher_a"], RATIONALES["teacher_c"]}
    assert [(f.text, r.text) for f, r in map(env.training_pair, episodes)] == [(f.text, r.text) for f, r in pairs]
    strict = build_env(method_config("mapd", tiny_tokenizer_dir, ("env.accept_above=4.5",)))
    assert [strict.training_pair(e)[1].text for e in episodes[:3]] == [RATIONALES["teacher_c"]] * 3
    nobody = build_env(method_config("mapd", tiny_tokenizer_dir, ("env.accept_above=5",)))
    assert nobody.lessons(episodes) == []  # no rationale above 5: neither lesson, the critique included
