"""The distill env as configs/methods/fine_tune_cot.yaml, gkd.yaml and distill_step_by_step.yaml
build it, with generators that reply with token ids of their own: Fine-tune-CoT's D teacher samples
at T, filtered by the verifier into the student's SFT targets; GKD's λ gate between the student's
scored sample and the scored reference solution; step-by-step's label and rationale lessons and its
label-only evaluation. The tiny model is only a tokenizer here."""

import asyncio

import pytest
from method_helpers import TokenGenerator, ids, method_config

from tutorloop.agents import Agent
from tutorloop.envs import build_env
from tutorloop.envs.distill import DistillEnv, on_policy
from tutorloop.envs.prompts import student_attempt, task_prefixed
from tutorloop.errors import UserError
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Problem, SamplingParams

PROBLEM = Problem(id="p1", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                  solution="6 + 23 = 29.\nThe answer is 29.")
RIGHT, WRONG = "6 + 23 = 29. The answer is 29.", "6 + 23 = 28. The answer is 28."
ALSO_RIGHT = "23 + 6 = 29.\nThe answer is 29."


def _agents(student, teacher):
    return {"student": Agent("student", student, SamplingParams(temperature=0.9)),
            "teacher": Agent("teacher", teacher, SamplingParams(temperature=0.7))}


def test_fine_tune_cot_trains_on_the_verified_ones_of_d_teacher_samples_at_t(tiny_tokenizer_dir, tiny_tokenizer):
    """Fine-tune-CoT's defining step: D teacher samples at temperature T in one call, and only the
    verified ones become the student's SFT targets, in the student's token ids ending with EOS,
    under the student's bare prompt. Catches: the verifier filter removed (the wrong sample becomes
    a target), the teacher's own ids kept as targets (they are not the student's), env.samples or
    env.temperature not reaching the teacher's call, a target under the teacher's prompt."""
    cfg = method_config("fine_tune_cot", tiny_tokenizer_dir, ("env.samples=3", "env.temperature=1.3"))
    env = build_env(cfg)
    student, teacher = TokenGenerator(["unused"]), TokenGenerator([RIGHT, WRONG, ALSO_RIGHT])
    episode = asyncio.run(env.run(PROBLEM, _agents(student, teacher)))
    assert teacher.calls == [(3, 1.3)] and student.calls == []  # one call, n = D, at T; the student is not asked
    assert [t.correct for t in episode.turns] == [True, False, True]
    lessons = env.lessons([episode])
    encode = TokenEncoder(tiny_tokenizer)
    assert [(x.objective, x.learner) for x in lessons] == [("sft", "student")] * 2
    assert [x.target_ids for x in lessons] == [encode.text(RIGHT), encode.text(ALSO_RIGHT)]
    assert {x.target_ids[-1] for x in lessons} == {tiny_tokenizer.eos_token_id}
    assert ids(RIGHT) not in {x.target_ids for x in lessons}
    assert {x.prompt_ids for x in lessons} == {encode.prompt(student_attempt(PROBLEM))}
    metrics = env.metrics([episode])
    assert metrics["distill/demonstrations"] == 3 and metrics["distill/verified_rate"] == pytest.approx(2 / 3)


def test_the_teacher_sees_the_reference_only_when_privileged():
    for privileged in (True, False):
        teacher = TokenGenerator([RIGHT])
        asyncio.run(DistillEnv(samples=1, privileged=privileged).run(PROBLEM, _agents(TokenGenerator(["x"]), teacher)))
        assert ("Reference solution" in teacher.prompts[0][0]["content"]) is privileged


def _problems(n):
    return [Problem(id=f"q{i}", prompt=f"What is {i} + 1?", answer=str(i + 1),
                    solution=f"{i} + 1 = {i + 1}.\nThe answer is {i + 1}.") for i in range(n)]


def _gkd_round(env, problems):
    student, teacher = TokenGenerator(["The answer is 3."], version=4), TokenGenerator([])

    async def go():
        return await asyncio.gather(*(env.run(p, _agents(student, teacher)) for p in problems))

    episodes = asyncio.run(go())
    return episodes, env.lessons(episodes), student, teacher


def test_gkd_puts_lambda_of_the_problems_on_policy_and_the_rest_on_the_reference_solution(tiny_tokenizer_dir,
                                                                                          tiny_tokenizer):
    """GKD's λ gate (on_policy_fraction = 0.25 over 400 problems): a λ share of the kd lessons are the
    student's own samples, the rest the reference solutions in the student's ids, every one scored
    by the teacher with kd's top-k. The gate is the seeded coin `on_policy(seed, problem id, λ)`.
    Catches: the gate removed or ignoring λ (all one side: share 0 or 1), dataset targets that are
    not the reference solution's ids (the student's sample, the teacher's text), dataset lessons
    that could go stale (a policy version), a side the teacher does not score."""
    cfg = method_config("gkd", tiny_tokenizer_dir, ("env.on_policy_fraction=0.25",))
    kd = cfg.learner_configs["student"].objectives["kd"]
    assert (kd.beta, kd.temperature) == (0.5, 0.9)  # TRL GKDTrainer's defaults
    problems = _problems(400)
    episodes, lessons, student, teacher = _gkd_round(build_env(cfg), problems)
    assert len(lessons) == 400 and {(x.objective, x.learner) for x in lessons} == {("kd", "student")}
    on = [x for x in lessons if x.provenance == "student:on_policy"]
    share = len(on) / 400
    assert abs(share - 0.25) < 0.065  # 3 sd of Binomial(400, 0.25) / 400
    gated = {e.problem.id for e in episodes if any(t.role == "student" for t in e.turns)}
    assert gated == {p.id for p in problems if on_policy(cfg.seed, p.id, 0.25)} and len(student.calls) == len(on)
    assert {x.target_ids for x in on} == {ids("The answer is 3.")} and {x.policy_version for x in on} == {4}
    encode = TokenEncoder(tiny_tokenizer)
    dataset = [x for x in lessons if x.provenance == "reference"]
    references = sorted(encode.text(p.solution) for p in problems if p.id not in gated)
    assert sorted(x.target_ids for x in dataset) == references
    assert {x.policy_version for x in dataset} == {None} and all(not x.behavior_logprobs for x in dataset)
    assert len(teacher.scored) == 400 and {k for *_, k in teacher.scored} == {kd.top_k}
    assert all(len(x.teacher.logprobs) == len(x.target_ids) for x in lessons)
    assert build_env(cfg).metrics(episodes)["distill/on_policy_share"] == share


def test_the_gate_is_deterministic_and_monotone_in_lambda():
    problems = [f"q{i}" for i in range(200)]
    assert not any(on_policy(0, p, 0.0) for p in problems) and all(on_policy(0, p, 1.0) for p in problems)
    quarter, half = ({p for p in problems if on_policy(0, p, lam)} for lam in (0.25, 0.5))
    assert quarter < half  # raising λ only moves problems to the on-policy side
    assert quarter == {p for p in problems if on_policy(0, p, 0.25)}  # a resumed run gates alike
    assert quarter != {p for p in problems if on_policy(1, p, 0.25)}  # the run's seed draws the coins


def test_a_distill_env_that_would_make_no_lessons_is_refused(tiny_tokenizer_dir):
    with pytest.raises(UserError, match="env.samples: 0 demonstrations and no kd objective"):
        build_env(method_config("gkd", tiny_tokenizer_dir, ("trainer.objectives={sft: 1.0}",)))
    with pytest.raises(UserError, match="trainer.objectives.kd: env 'distill' has no teacher|env.teacher"):
        method_config("gkd", tiny_tokenizer_dir, ("env.teacher=nobody",))


# --- Distilling step-by-step (configs/methods/distill_step_by_step.yaml) -------------------------


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_step_by_step_makes_a_label_and_a_rationale_lesson_weighted_alpha_and_one_minus_alpha(
        tiny_tokenizer_dir, tiny_tokenizer, alpha):
    """Distilling step-by-step's defining step (METHODS A2): each verified teacher rationale becomes
    two SFT lessons, "[label] <problem>" → the answer line at weight α and "[rationale] <problem>" →
    the rationale at weight 1 − α; a wrong rationale gives neither. Catches: `step_by_step` ignored
    (one Fine-tune-CoT lesson under the bare prompt), the two prefixes swapped or missing, the
    label target being the rationale (or not the verified answer line), α not reaching the lesson
    weights (the 0.3 case), the verifier filter removed, a shipped α other than 0.5."""
    cfg = method_config("distill_step_by_step", tiny_tokenizer_dir, (f"env.label_weight={alpha}",))
    assert cfg.env.step_by_step and cfg.env.samples == 2
    assert method_config("distill_step_by_step", tiny_tokenizer_dir).env.label_weight == 0.5
    env = build_env(cfg)
    teacher = TokenGenerator([RIGHT, WRONG])
    episode = asyncio.run(env.run(PROBLEM, _agents(TokenGenerator(["unused"]), teacher)))
    assert teacher.calls == [(2, 0.7)]
    encode = TokenEncoder(tiny_tokenizer)
    label, rationale = env.lessons([episode])
    assert (label.objective, label.learner, rationale.objective, rationale.learner) == ("sft", "student") * 2
    assert label.prompt_ids == encode.prompt(task_prefixed(PROBLEM, "label"))
    assert rationale.prompt_ids == encode.prompt(task_prefixed(PROBLEM, "rationale"))
    assert task_prefixed(PROBLEM, "label")[1]["content"] == f"[label] {PROBLEM.prompt}"
    assert label.target_ids == encode.text("The answer is 29.") and rationale.target_ids == encode.text(RIGHT)
    assert (label.weight, rationale.weight) == pytest.approx((alpha, 1 - alpha))


def test_step_by_step_evaluates_the_label_task_only(tiny_tokenizer_dir):
    """At test time only the label task runs (METHODS A2): the env's evaluation asks the student on
    the "[label] <problem>" prompt and grades that reply. Catches: the bare or rationale prompt used
    at evaluation (the inherited `SolvesBareProblems.evaluate`)."""
    env = build_env(method_config("distill_step_by_step", tiny_tokenizer_dir))
    student = TokenGenerator(["The answer is 29."])
    metrics, line = asyncio.run(env.evaluate(_agents(student, TokenGenerator([])), [PROBLEM], "after",
                                             max_new_tokens=8))
    assert metrics == {"eval/accuracy_after": 1.0}
    assert student.prompts == [task_prefixed(PROBLEM, "label")]
    fine_tune_cot = build_env(method_config("fine_tune_cot", tiny_tokenizer_dir))
    student = TokenGenerator(["The answer is 29."])
    asyncio.run(fine_tune_cot.evaluate(_agents(student, TokenGenerator([])), [PROBLEM], None, max_new_tokens=8))
    assert student.prompts == [student_attempt(PROBLEM)]  # without step_by_step: the bare prompt
