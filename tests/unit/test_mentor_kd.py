"""Mentor-KD (METHODS A3) as its two shipped configs, configs/methods/mentor_kd_stage1.yaml and
mentor_kd.yaml, built as the loop builds them with generators that reply with token ids of their
own: stage 1 trains the mentor on the teacher's verified rationales and saves it where stage 2
reads it; stage 2's frozen mentor samples n rationales at T = 1.3, the verified ones are the
student's sft targets and the mentor's scores of those same targets its kd lessons; kd is forward
KL at τ = 2 on both sides with no τ² factor, weighted 0.3 against sft's 0.7. The tiny model is only
a tokenizer here, except where a saved adapter is checked."""

import asyncio
import math
from pathlib import Path

import pytest
import torch
from method_helpers import TokenGenerator, ids, method_config

from tutorloop.agents import Agent, build_agents, check_models
from tutorloop.config import AgentConfig
from tutorloop.envs import build_env
from tutorloop.envs.prompts import student_attempt
from tutorloop.errors import UserError
from tutorloop.objectives import REGISTRY, TokenInputs
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Problem, SamplingParams

PROBLEM = Problem(id="p1", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                  solution="6 + 23 = 29.\nThe answer is 29.")
RIGHT, WRONG = "6 + 23 = 29. The answer is 29.", "6 + 23 = 28. The answer is 28."
ALSO_RIGHT = "23 + 6 = 29.\nThe answer is 29."


def _stage2(tiny_tokenizer_dir, overrides=()):
    return method_config("mentor_kd", tiny_tokenizer_dir, overrides)


def test_stage_one_trains_the_mentor_on_verified_teacher_rationales_and_saves_it_where_stage_two_reads_it(
        tiny_tokenizer_dir, tiny_tokenizer):
    """Stage 1 is Fine-tune-CoT with the mentor as the learner: the teacher's verified rationales
    become SFT lessons addressed to the learner `mentor`, whose adapter the loop saves at
    <run_dir>/mentor; stage 2's mentor agent loads exactly that directory and has no learner (it is
    frozen). Catches: stage 1 training a student instead of the mentor (lessons to another learner),
    the two configs pointing at different directories, the mentor trained in stage 2."""
    stage1 = method_config("mentor_kd_stage1", tiny_tokenizer_dir)
    assert set(stage1.learner_configs) == {"mentor"} and stage1.learner_configs["mentor"].agent == "mentor"
    assert stage1.learner_configs["mentor"].lora is not None  # saved as a peft adapter
    env = build_env(stage1)
    teacher = TokenGenerator([RIGHT, WRONG, ALSO_RIGHT, WRONG])
    agents = {"mentor": Agent("mentor", TokenGenerator(["unused"]), SamplingParams()),
              "teacher": Agent("teacher", teacher, SamplingParams())}
    lessons = env.lessons([asyncio.run(env.run(PROBLEM, agents))])
    encode = TokenEncoder(tiny_tokenizer)
    assert teacher.calls == [(4, 0.7)]
    assert [(x.objective, x.learner, x.target_ids) for x in lessons] == [
        ("sft", "mentor", encode.text(RIGHT)), ("sft", "mentor", encode.text(ALSO_RIGHT))]
    stage2 = _stage2(tiny_tokenizer_dir)
    assert stage2.agents["mentor"].adapter == str(Path(stage1.run_dir) / "mentor")
    assert stage2.env.teacher == "mentor" and stage2.learner_of("mentor") is None
    assert set(stage2.learner_configs) == {"student"}


def test_the_frozen_mentor_samples_n_at_t_1_3_and_scores_the_verified_ones_as_the_students_kd_targets(
        tiny_tokenizer_dir, tiny_tokenizer):
    """Stage 2's defining step: the mentor samples n = 3 rationales in one call at T = 1.3 on the
    student's bare prompt; only the verified ones become sft lessons (the student's ids, ending with
    EOS), and each of those same (prompt, target) pairs is scored by the mentor with kd's top-k and
    becomes a kd lesson carrying exactly those scores, never stale. Catches: the verifier filter
    removed, kd lessons on other sequences than the sft targets (GKD's gated reference or the
    student's sample), the mentor's own sampled ids as targets, the reference solution in the
    mentor's context, n or T not reaching the mentor's call, a kd lesson without the mentor's scores."""
    cfg = _stage2(tiny_tokenizer_dir)
    env = build_env(cfg)
    student, mentor = TokenGenerator(["unused"]), TokenGenerator([RIGHT, WRONG, ALSO_RIGHT])
    agents = {"student": Agent("student", student, SamplingParams()), "mentor": Agent("mentor", mentor, SamplingParams())}
    episode = asyncio.run(env.run(PROBLEM, agents))
    assert mentor.calls == [(3, 1.3)] and student.calls == []
    assert mentor.prompts == [student_attempt(PROBLEM)]  # the bare prompt it was trained on in stage 1
    encode = TokenEncoder(tiny_tokenizer)
    prompt, targets = encode.prompt(student_attempt(PROBLEM)), [encode.text(RIGHT), encode.text(ALSO_RIGHT)]
    top_k = cfg.learner_configs["student"].objectives["kd"].top_k
    assert mentor.scored == [(student_attempt(PROBLEM), t, top_k) for t in targets]
    lessons = env.lessons([episode])
    sft = [x for x in lessons if x.objective == "sft"]
    kd = [x for x in lessons if x.objective == "kd"]
    assert len(lessons) == 4 and {x.learner for x in lessons} == {"student"}
    assert [(x.prompt_ids, x.target_ids) for x in sft] == [(prompt, t) for t in targets]
    assert [(x.prompt_ids, x.target_ids) for x in kd] == [(prompt, t) for t in targets]
    assert ids(RIGHT) not in {x.target_ids for x in lessons}
    assert all(x.teacher is not None and len(x.teacher.logprobs) == len(x.target_ids) for x in kd)
    assert {len(x.teacher.topk_ids[0]) for x in kd} == {top_k} and {x.policy_version for x in kd} == {None}
    assert env.metrics([episode])["distill/demonstrations"] == 3  # the scored copies are not counted twice


def test_the_shipped_loss_is_0_7_ce_plus_0_3_forward_kl_at_tau_2_without_tau_squared(tiny_tokenizer_dir):
    """Mentor-KD's loss L = (1 - λ) CE + λ KL(softmax(z_M/τ) || softmax(z_S/τ)), λ = 0.3, τ = 2, the KL
    a per-token mean with no τ² factor (METHODS A3, F2), through the shipped kd parameters and the
    registry's kd loss, against a hand-derived value. Two target positions over a 2-token vocabulary,
    the mentor's full distribution given (top-k = V, so no tail is left):
      t1: z_M = (2 ln 3, 0), z_S = (0, 0): at τ = 2, p_M = (3/4, 1/4), p_S = (1/2, 1/2);
      t2: z_M = (0, 0), z_S = (2 ln 3, 0): p_M = (1/2, 1/2), p_S = (3/4, 1/4).
    KL1 + KL2 = 3/4 ln(3/2) + 1/4 ln(1/2) + 1/2 ln(2/3) + 1/2 ln 2 = (ln 3) / 4, so the per-token
    mean is ln(3) / 8 ≈ 0.1373; Hinton's τ² version would be 4x that, ln(3) / 2. Catches: a τ²
    factor, τ applied to one side only or not at all (ln(10/9)-like values), reverse KL (β ≠ 0), a
    shipped λ or τ other than the paper's."""
    objectives = _stage2(tiny_tokenizer_dir).learner_configs["student"].objectives
    kd = objectives["kd"]
    assert (objectives["sft"].weight, kd.weight, kd.beta, kd.temperature) == (0.7, 0.3, 0.0, 2.0)
    two_ln3 = 2 * math.log(3)
    mentor_logits = torch.tensor([[[two_ln3, 0.0], [0.0, 0.0]]])
    student_logits = torch.tensor([[[0.0, 0.0], [two_ln3, 0.0]]])
    teacher_logp = torch.log_softmax(mentor_logits, -1)  # what a scorer serves: log-probs at τ = 1
    x = TokenInputs(logits_B_T_V=student_logits, logp_B_T=torch.zeros(1, 2), mask_B_T=torch.ones(1, 2),
                    teacher_logp_B_T=teacher_logp[..., 0], teacher_topk_ids_B_T_K=torch.tensor([[[0, 1], [0, 1]]]),
                    teacher_topk_logp_B_T_K=teacher_logp)
    loss_sum, _ = REGISTRY["kd"].loss(x, kd)
    per_token = loss_sum.item() / 2  # the trainer divides by the step's target-token count
    assert per_token == pytest.approx(math.log(3) / 8, rel=1e-5)
    assert per_token == pytest.approx((math.log(3) / 2) / kd.temperature ** 2, rel=1e-5)  # 1/4 of the τ² version


def test_stage_two_without_stage_one_stops_at_once_naming_the_adapter_and_stage_one(tiny_tokenizer_dir, tiny_lm_dir,
                                                                                    tmp_path):
    """Run before stage 1, stage 2 fails at the start with one line naming agents.mentor.adapter and
    the config to run first; a full model directory or an adapter without safetensors weights is
    refused as such. Catches: a missing adapter found only deep in peft (or the base model served
    silently as the mentor)."""
    missing = tmp_path / "nothing_here"
    cfg = method_config("mentor_kd", tiny_lm_dir, (f"agents.mentor.adapter={missing}",))
    with pytest.raises(UserError, match=r"agents.mentor.adapter: no saved adapter at .*mentor_kd_stage1.yaml") as err:
        check_models(cfg, tuple(cfg.agents))
    assert "\n" not in str(err.value)
    cfg = method_config("mentor_kd", tiny_lm_dir, (f"agents.mentor.adapter={tiny_lm_dir}",))
    with pytest.raises(UserError, match="agents.mentor.adapter: .* no adapter_config.json .*full model"):
        check_models(cfg, tuple(cfg.agents))
    (tmp_path / "adapter_config.json").write_text("{}")
    cfg = method_config("mentor_kd", tiny_lm_dir, (f"agents.mentor.adapter={tmp_path}",))
    with pytest.raises(UserError, match="agents.mentor.adapter: .* no adapter_model.safetensors"):
        check_models(cfg, tuple(cfg.agents))


def test_an_adapter_is_for_a_frozen_model_agent_and_a_mentor_with_one_gets_its_own_generator(tiny_tokenizer_dir):
    """A saved adapter loads only on a frozen hf or vllm agent, and it is part of the agent's model
    settings: a mentor with an adapter never shares the generator of a same-model agent without it
    (that would serve the base model as the mentor, or the mentor as the teacher). Catches: the
    adapter left out of the sharing key or of the spawned generator's arguments, a learner on an
    agent with an adapter (its trainer would start from the base model), an adapter on a scripted agent."""
    with pytest.raises(UserError, match="agents.mentor.adapter: only a frozen agent loads a saved adapter"):
        method_config("mentor_kd", tiny_tokenizer_dir, ("env.student=mentor", "env.teacher=student"))
    with pytest.raises(UserError, match="agents.mentor: adapter: loads over local weights"):
        method_config("mentor_kd", tiny_tokenizer_dir, ("agents.mentor.generator={kind: scripted, replies: [x]}",))

    class Recorder:
        def spawn(self, cls, *args, resources=None, **kwargs):
            return (args, kwargs["adapter"])

    plain, mentor = AgentConfig(model="m"), AgentConfig(model="m", adapter="runs/stage1/mentor")
    agents = build_agents(Recorder(), {"teacher": plain, "mentor": mentor, "peer": plain}, trained={}, seed=0)
    assert agents["mentor"].generator == (("m",), "runs/stage1/mentor")
    assert agents["teacher"].generator == (("m",), None) and agents["teacher"].generator is agents["peer"].generator


def test_soft_labels_need_demonstrations_and_plain_targets(tiny_tokenizer_dir):
    with pytest.raises(UserError, match="score_demonstrations: .* env.samples is 0"):
        _stage2(tiny_tokenizer_dir, ("env.samples=0",))
    with pytest.raises(UserError, match="score_demonstrations: .* step_by_step"):
        _stage2(tiny_tokenizer_dir, ("env.step_by_step=true",))
