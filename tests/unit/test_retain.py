"""tasks.retain and objective `kl_ref` (issue 16): texts of another kind than the task's, on which
the student is held at the reference. Each round takes the next `per_round` problems in turn, each
giving its reference solution under the student's prompt and under the chat prompt, in the
student's ids with EOS; no policy sampled them, so they never go stale; the transfer set never
meets them; and config refuses one without the other."""

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import pytest
from conftest import write_gsm8k_rows

from tutorloop.config import validate_config
from tutorloop.envs.prompts import chat_attempt, student_attempt
from tutorloop.envs.retain import Retain, build_retain
from tutorloop.errors import UserError
from tutorloop.graders import ANSWER_STOP
from tutorloop.loop import transfer_set, build_pool
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Completion

BASE = {"agents": {"student": {}, "teacher": {}, "mentor": {}}, "tasks": {"num_train": 20, "num_eval": 6}}


def _gsm8k_file(tmp_path, n):
    return write_gsm8k_rows(tmp_path, n)


def _cfg(tiny_lm_dir, tmp_path, **retain):
    agents = {name: {"model": str(tiny_lm_dir)} for name in ("student", "teacher", "mentor")}
    spec = {"source": "gsm8k", "path": str(_gsm8k_file(tmp_path, 40)), "num": 5} | retain
    return validate_config(BASE | {"agents": agents, "tasks": BASE["tasks"] | {"retain": spec},
                                   "trainer": {"objectives": {"sft": 1.0, "kl_ref": 0.5}}})


def test_each_round_holds_the_next_problems_under_both_prompts(tiny_lm_dir, tmp_path, tiny_tokenizer):
    """Catches: the same problems every round, one prompt only, a target without EOS or in other
    ids than the student's, lessons that could go stale, or ones addressed to another learner."""
    retain = build_retain(_cfg(tiny_lm_dir, tmp_path, per_round=2))
    assert [p.id for p in retain.problems] == [f"gsm8k-{i}" for i in range(36, 41)]  # the file's last 5
    encode = TokenEncoder(tiny_tokenizer)
    rounds = [asyncio.run(retain.lessons(r, {})) for r in range(3)]
    assert [[x.provenance for x in lessons] for lessons in rounds] == [["retain"] * 4] * 3
    first = rounds[0]
    p0, p1 = retain.problems[0], retain.problems[1]
    assert [x.prompt_ids for x in first] == [encode.prompt(student_attempt(p0)), encode.prompt(student_attempt(p1)),
                                             encode.prompt(chat_attempt(p0)), encode.prompt(chat_attempt(p1))]
    assert first[0].target_ids == encode.text(p0.solution) and first[0].target_ids[-1] == tiny_tokenizer.eos_token_id
    assert {(x.objective, x.policy_version, x.learner) for r in rounds for x in r} == {("kl_ref", None, "student")}
    assert rounds[1][0].prompt_ids == encode.prompt(student_attempt(retain.problems[2]))
    assert rounds[2][1].prompt_ids == encode.prompt(student_attempt(retain.problems[0]))  # 5 problems: wraps


def test_the_transfer_set_never_scores_a_retained_problem(tiny_lm_dir, tmp_path):
    """Catches: a transfer set that counts a problem the student was held on."""
    cfg = _cfg(tiny_lm_dir, tmp_path)
    path = cfg.tasks.retain.path
    cfg = validate_config(cfg.model_dump(exclude_defaults=True) | {
        "eval": {"transfer": {"source": "gsm8k", "path": path, "num": 4}}})
    retained = tuple(replace(p, id=f"gsm8k-{i}") for p, i in zip(build_retain(cfg).problems, (2, 3)))  # the file's 2nd, 3rd
    transfer = transfer_set(cfg, build_pool(cfg), retained)
    assert [p.id for p in transfer.problems] == ["gsm8k-1", "gsm8k-4", "gsm8k-5", "gsm8k-6"]
    assert [p.id for p in transfer_set(cfg, build_pool(cfg)).problems] == [f"gsm8k-{i}" for i in range(1, 5)]


@pytest.mark.parametrize("change, field", [
    ({"trainer": {"objectives": {"sft": 1.0, "kl_ref": 0.5}}}, "trainer.objectives.kl_ref: needs tasks.retain"),
    ({"tasks": BASE["tasks"] | {"retain": {"source": "builtin", "num": 8}}}, "tasks.retain: only objective kl_ref"),
])
def test_kl_ref_and_tasks_retain_come_together(change, field):
    with pytest.raises(UserError, match=field):
        validate_config(BASE | change)


def test_kl_ref_at_weight_0_leaves_the_texts_unread(tiny_lm_dir, tmp_path):
    """An objective is switched off by its weight (an efficacy arm does so): no lessons, no error."""
    cfg = _cfg(tiny_lm_dir, tmp_path)
    off = validate_config(cfg.model_dump(exclude_defaults=True) | {"trainer": {"objectives": {"sft": 1.0, "kl_ref": 0.0}}})
    assert build_retain(cfg) is not None and build_retain(off) is None


def test_without_the_file_built_in_word_problems_stand_in(tiny_lm_dir, tmp_path):
    retain = build_retain(_cfg(tiny_lm_dir, tmp_path, path=str(tmp_path / "absent.jsonl"), num=6))
    assert len(retain.problems) == 6 and all(p.id.startswith("mix-") and p.solution for p in retain.problems)
    assert "not found" in retain.note and "held at the reference (kl_ref)" in retain.note


class Answers:
    """A frozen agent's generator that records what it was asked: each reply names its prompt's kind."""

    def __init__(self):
        self.calls = []

    async def generate(self, prompts, params):
        self.calls.append((len(prompts), params))
        kind = "chat" if params.stop_regex is None else "run"
        return [Completion(text=f"{kind} reply {i}", token_ids=(), logprobs=(), finish_reason=("length" if i else "stop"))
                for i in range(len(prompts))]


def test_answered_by_holds_the_student_on_a_frozen_agents_greedy_replies(tiny_lm_dir, tmp_path, tiny_tokenizer):
    """LwF on the old model's own outputs: with answered_by, each text is that agent's greedy reply
    under the same prompt (the run's prompt stopping where the eval's does, the chat prompt at the
    token limit), the end token only on a reply that ended by itself.
    Catches: reference solutions used anyway, sampled (non-greedy) replies, a chat reply cut at the
    answer pattern, an EOS after a truncated reply, or the replies paired with the wrong prompt."""
    cfg = _cfg(tiny_lm_dir, tmp_path, per_round=2, answered_by="teacher", max_new_tokens=33)
    retain, answers = build_retain(cfg), Answers()
    lessons = asyncio.run(retain.lessons(0, {"teacher": SimpleNamespace(generator=answers)}))
    encode = TokenEncoder(tiny_tokenizer)
    assert [(n, p.temperature, p.max_new_tokens, p.stop_regex) for n, p in answers.calls] == [
        (2, 0.0, 33, ANSWER_STOP), (2, 0.0, 33, None)]
    p0 = retain.problems[0]
    assert [x.prompt_ids for x in lessons[::2]] == [encode.prompt(student_attempt(p0)), encode.prompt(chat_attempt(p0))]
    assert [x.target_ids for x in lessons] == [encode.text("run reply 0"), encode.text("run reply 1", eos=False),
                                               encode.text("chat reply 0"), encode.text("chat reply 1", eos=False)]
    assert "as agent 'teacher' answers them" in retain.note


def test_replies_under_one_prompt_keep_the_solutions_under_the_other(tiny_lm_dir, tmp_path, tiny_tokenizer):
    """The embedded default: reference solutions after the run's prompt, the frozen agent's own
    replies after the chat prompt. Catches: replies generated (and paid for) under a prompt that
    keeps its solutions, or the two kinds of text swapped between the prompts."""
    cfg = _cfg(tiny_lm_dir, tmp_path, per_round=2, answered_by="teacher", replies_under=["chat"])
    retain, answers = build_retain(cfg), Answers()
    lessons = asyncio.run(retain.lessons(0, {"teacher": SimpleNamespace(generator=answers)}))
    encode = TokenEncoder(tiny_tokenizer)
    assert [params.stop_regex for _, params in answers.calls] == [None]  # one call: the chat prompt's
    p0, p1 = retain.problems[:2]
    assert [x.target_ids for x in lessons] == [encode.text(p0.solution), encode.text(p1.solution),
                                               encode.text("chat reply 0"), encode.text("chat reply 1", eos=False)]
    assert "under the chat prompt" in retain.note and "student prompt" not in retain.note


@pytest.mark.parametrize("replies_under", [[], ["chat", "chat"], ["system"]])
def test_replies_under_names_each_prompt_once(tiny_lm_dir, tmp_path, replies_under):
    with pytest.raises(UserError, match="tasks.retain.*replies_under"):
        _cfg(tiny_lm_dir, tmp_path, answered_by="teacher", replies_under=replies_under)


@pytest.mark.parametrize("who, message", [
    ("tutor", "tasks.retain.answered_by: names agent 'tutor', which `agents` lacks"),
    ("student", "tasks.retain.answered_by: agent 'student' trains"),
])
def test_answered_by_names_a_frozen_agent(tiny_lm_dir, tmp_path, who, message):
    """Catches: replies from an agent that does not exist, or from one whose weights change each
    round (its texts would drift, and a resumed run would make other ones)."""
    with pytest.raises(UserError, match=message):
        _cfg(tiny_lm_dir, tmp_path, answered_by=who)
