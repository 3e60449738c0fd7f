"""The tutoring env's control flow with scripted agents, and Episode → lessons. No model needed."""

import asyncio

from tutorloop.agents import Agent
from tutorloop.envs.correction import CorrectionEnv
from tutorloop.envs.moves import redact_number
from tutorloop.envs.to_examples import to_lessons
from tutorloop.generators.scripted import ScriptedGenerator
from tutorloop.graders import verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Problem, SamplingParams, StopReason, TokenScores

PROBLEM = Problem(id="p1", prompt="Sara has 6 apples and buys 23 more. How many?", answer="29",
                  solution="6 + 23 = 29.\nThe answer is 29.")
PARAMS = SamplingParams()


def _agents(student, teacher, mentor):
    return {name: Agent(name, ScriptedGenerator(replies), PARAMS)
            for name, replies in (("student", student), ("teacher", teacher), ("mentor", mentor))}


def _lessons(tokenizer, episodes, objectives):
    """Lessons by objective, as `to_lessons` makes them with this tokenizer."""
    lessons = to_lessons(episodes, verify, TokenEncoder(tokenizer), objectives=objectives)
    return {name: [x for x in lessons if x.objective == name] for name in ("sft", "dpo", "redi", "kd", "opd_pg")}


def _run(agents, max_rounds=1, k=1):
    return asyncio.run(CorrectionEnv(max_rounds=max_rounds, num_candidates=k).run(PROBLEM, agents))


def test_wrong_attempt_gets_correction_feedback_and_revision():
    agents = _agents(["6 + 23 = 11. The answer is 11.", "6 + 23 = 29. The answer is 29."],
                     ["Mistake: 6 + 23 is not 11.\nSolution: 6 + 23 = 29. The answer is 29."],
                     ["Check your addition of 6 and 23."])
    episode = _run(agents)
    assert [t.role for t in episode.turns] == ["student", "teacher", "mentor", "student"]
    assert [t.kind for t in episode.turns] == ["attempt", "correction", "feedback", "revision"]
    assert episode.stop is StopReason.SOLVED
    assert episode.rewards["first_try"] == 0.0 and episode.rewards["final"] == 1.0
    assert episode.rewards["corrections_accepted"] == 1.0
    revision_prompt = episode.turns[3].prompt
    assert "Check your addition" in revision_prompt[-1]["content"]
    assert revision_prompt[-2] == {"role": "assistant", "content": "6 + 23 = 11. The answer is 11."}


def test_right_first_try_ends_at_once():
    episode = _run(_agents(["The answer is 29."], ["x"], ["y"]))
    assert len(episode.turns) == 1 and episode.stop is StopReason.SOLVED


def test_teacher_keeps_the_first_verified_candidate():
    agents = _agents(["The answer is 11."], ["Mistake: a\nSolution: The answer is 12.",
                                             "Mistake: b\nSolution: 6 + 23 = 29. The answer is 29."], ["hint"])
    episode = _run(agents, k=2)
    correction = episode.turns[1]
    assert correction.correct and correction.provenance == "model" and "Mistake: b" in correction.text


def test_reference_solution_stands_in_when_no_candidate_verifies():
    agents = _agents(["The answer is 11."], ["Mistake: you added wrong\nSolution: The answer is 30."], ["hint"])
    correction = _run(agents).turns[1]
    assert correction.provenance == "reference" and correction.correct
    assert PROBLEM.solution in correction.text and "you added wrong" in correction.text


def test_reference_targets_false_keeps_only_text_a_model_wrote(tiny_tokenizer):
    """The reference stands in (no teacher candidate verifies) and the student's revision is right:
    by default both are SFT targets; `reference_targets=False` trains on the revision alone, and
    DPO's chosen is the revision either way."""
    agents = _agents(["The answer is 11.", "6 + 23 = 29. The answer is 29."], ["Solution: The answer is 30."], ["hint"])
    episode = _run(agents)
    assert episode.turns[1].provenance == "reference"
    encode = TokenEncoder(tiny_tokenizer)
    both = to_lessons([episode], verify, encode, objectives={"sft", "dpo"})
    own = to_lessons([episode], verify, encode, objectives={"sft", "dpo"}, reference_targets=False)
    assert sorted(x.provenance for x in both if x.objective == "sft") == ["revision", "teacher:reference"]
    assert [x.provenance for x in own if x.objective == "sft"] == ["revision"]
    revision = encode.text("6 + 23 = 29. The answer is 29.")
    assert [x.target_ids for x in own if x.objective == "dpo"] == [revision]
    assert [x.target_ids for x in both if x.objective == "dpo"] == [revision]


def test_mentor_never_passes_the_answer_on():
    agents = _agents(["The answer is 11.", "The answer is 11."], ["Solution: The answer is 29."],
                     ["The answer is 29, so fix 6 + 23."])
    episode = _run(agents)
    feedback = episode.turns[2]
    assert "29" not in feedback.text and feedback.provenance == "redacted" and episode.rewards["hint_leaks"] == 1.0
    assert redact_number("It is 1,200 or 1200 but not 12000.", "1200") == "It is … or … but not 12000."


def test_unverified_text_never_becomes_a_target(tiny_tokenizer):
    wrong_everything = _agents(["The answer is 11.", "The answer is 12."], ["Solution: The answer is 30."],
                               ["hint"])
    problem_without_reference = Problem(id="p2", prompt=PROBLEM.prompt, answer="29")
    episode = asyncio.run(CorrectionEnv(max_rounds=1).run(problem_without_reference, wrong_everything))
    assert to_lessons([episode], verify, TokenEncoder(tiny_tokenizer), objectives={"sft", "dpo", "kd"}) == []


def test_lessons_from_a_corrected_episode(tiny_tokenizer):
    agents = _agents(["6 + 23 = 11. The answer is 11.", "6 + 23 = 29. The answer is 29."],
                     ["Mistake: bad sum\nSolution: 6 + 23 = 29. The answer is 29."], ["Check the sum."])
    episode = _run(agents)
    batch = _lessons(tiny_tokenizer, [episode], {"sft", "dpo", "redi"})
    encode = TokenEncoder(tiny_tokenizer)
    good = encode.text("6 + 23 = 29. The answer is 29.")
    assert good[-1] == tiny_tokenizer.eos_token_id  # a text target ends as the model would end it
    assert [e.target_ids for e in batch["sft"]] == [good] * 2
    assert {e.provenance for e in batch["sft"]} == {"teacher:model", "revision"}
    attempt_ids = encode.prompt(episode.turns[0].prompt)
    assert all(e.prompt_ids == attempt_ids for e in batch["sft"])  # trained under the bare problem prompt
    (pair,), (redi,) = batch["dpo"], batch["redi"]
    assert pair.target_ids == good and redi.target_ids == good
    assert pair.rejected_ids == encode.text("6 + 23 = 11. The answer is 11.", eos=False)  # the scripted
    assert batch["kd"] == []                                                             # attempt has no ids
    assert _lessons(tiny_tokenizer, [episode], {"sft"})["dpo"] == []


def test_the_rejected_side_is_the_sampled_ids_without_eos(tiny_tokenizer):
    """A model's wrong attempt is rejected as it was sampled: its ids, no end token added."""
    from dataclasses import replace

    from tutorloop.types import Episode

    agents = _agents(["6 + 23 = 11. The answer is 11.", "6 + 23 = 29. The answer is 29."],
                     ["Mistake: bad sum\nSolution: 6 + 23 = 29. The answer is 29."], ["Check the sum."])
    episode = _run(agents)
    sampled = replace(episode.turns[0], token_ids=(40, 41, 42))
    revision = replace(episode.turns[-1], token_ids=(50, 51, tiny_tokenizer.eos_token_id))
    episode = Episode(PROBLEM, (sampled, *episode.turns[1:-1], revision))
    (pair,) = _lessons(tiny_tokenizer, [episode], {"dpo"})["dpo"]
    assert pair.rejected_ids == (40, 41, 42) and pair.target_ids == (50, 51, tiny_tokenizer.eos_token_id)


def test_distillation_lessons_carry_tokens_scores_and_version(tiny_tokenizer):
    from dataclasses import replace

    from tutorloop.types import Episode

    agents = _agents(["The answer is 29."], ["x"], ["y"])
    episode = _run(agents)
    scored = replace(episode.turns[0], token_ids=(5, 6), logprobs=(-1.0, -2.0), policy_version=4,
                     teacher_scores=TokenScores(logprobs=(-0.5, -0.7)))
    batch = _lessons(tiny_tokenizer, [Episode(PROBLEM, (scored,))], {"kd", "opd_pg"})
    (example,), (pg,) = batch["kd"], batch["opd_pg"]
    assert example.target_ids == (5, 6) and example.policy_version == 4
    assert example.teacher.logprobs == (-0.5, -0.7) and example.behavior_logprobs == (-1.0, -2.0)
    assert pg.target_ids == (5, 6) and pg.objective == "opd_pg"


def test_agents_satisfy_the_protocol():
    from tutorloop.agents.protocol import AgentHandle, Generator
    from tutorloop.envs import ENVS, Env

    agents = _agents(["a"], ["b"], ["c"])
    assert all(isinstance(a, AgentHandle) for a in agents.values())
    knobs = {"correction": {"max_rounds": 1}, "dialogue": {"max_turns": 1, "telling_penalty": 0.0},
             "rollouts": {"group_size": 2}, "distill": {"samples": 2},
             "tailored": {"num_candidates": 2}, "first_error": {}, "rlt": {"group_size": 2}, "peer_review": {},
             "intervention": {"budget": 0.4}, "ampo": {"group_size": 4}}
    assert set(ENVS) == set(knobs) and all(isinstance(cls(**knobs[name]), Env) for name, cls in ENVS.items())
    assert isinstance(ScriptedGenerator(["a"]), Generator)
