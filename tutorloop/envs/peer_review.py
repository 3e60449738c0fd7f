"""The peer-review env: MAPD / FAIR, mistake-aware peer-review distillation (Li, Ji, Meng, He, ACL
Findings 2025, "Learning from Committee: Reasoning Distillation from a Mixture of Teachers with
Peer-Review"; code zhuochunli/Learn-from-Committee; METHODS B2).

The student answers each training question once and the verifier grades it. Only the wrong items
go to the committee of teachers; each teacher writes, concurrently:

- feedback: the mistakes in the student's answer, given the question, the answer and the correct
  answer as a hint (the paper's `teacher_model_feedback_prompt`);
- a rationale of its own for the question (the student's bare prompt; `privileged`: with the
  reference solution in context, the embedded teachers' only edge).

Peer review: each rationale is scored 1-5 by every OTHER teacher (`teacher_model_peer_review_prompt`:
question, rationale, hint; the score in square brackets). `parse_score` reads it as the paper's
`check_score` does; anything outside 1-5 is no valid score. A rationale is accepted iff the mean of
its valid scores is > `accept_above` (3); with no valid score it is rejected. Review turns are
recorded under the reviewer's part with kind "review:<author part>".

Per wrong question, the paper's "mixed" mode draws one teacher's feedback and one accepted rationale
at random (here a generator seeded by (run seed, problem id), like `distill.on_policy`); a question
with no accepted rationale, or no usable feedback, teaches nothing. The pair becomes two SFT
lessons in the student's tokenizer: the critique task (`critique_prompt`: "as a teacher, point out
the mistakes", input question + student answer [+ hint]) → the feedback, weight α; the solve task
(the student's bare "step by step" prompt, which is also what evaluation asks) → the rationale,
weight 1 − α. L = α CE(critique) + (1 − α) CE(solve) through the lesson weights, with the sft
objective's one token count over both tasks as the denominator (the paper averages each task apart).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

from tutorloop.agents.protocol import AgentHandle
from tutorloop.config import PeerReviewEnvConfig, RunConfig
from tutorloop.envs import moves
from tutorloop.envs.correction import reply_counts
from tutorloop.envs.evaluation import SolvesBareProblems
from tutorloop.envs.learning import learner_kwargs
from tutorloop.envs.prompts import student_attempt
from tutorloop.graders import undecodable, verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Messages, Problem, StopReason, Turn

TEACHER_ROLE = ("Imagine you are a teacher, I will give you one student's incorrect answer to a question. "
                "You should point out the mistakes in the student's answer.")
MISTAKE_INPUT = "Question: {problem}\nStudent's Answer: {attempt}"
HINT = "\nHint: The correct answer should be {answer}."
REVIEW_ASK = ("Imagine you are a reviewer, I will give you one submission about the rationale for a question. "
              "You should simulate the peer-review process by evaluating the rationale based on its correctness "
              "and soundness. Let's think step by step, but your final answer should only be one number, ranging "
              "from 1-5 (the higher the score is, the more possible you think the rationale is correct). The score "
              "should be wrapped by square brackets, such as: [5].\nQuestion: {problem}\nRationale: {rationale}")
"""The paper's prompts (all_prompts.py), the hint line shared; the hint is the gold final answer."""

_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_NUMBER = re.compile(r"\d+")


def parse_score(reply: str) -> int | None:
    """The reviewer's score as the paper's `check_score` reads it: the last [...] group ("[4/5]" → 4,
    else its last number), or without brackets the reply's last number; None unless it is 1-5."""
    groups = _BRACKETED.findall(reply)
    numbers = _NUMBER.findall(groups[-1].split("/")[0] if groups else reply)
    score = int(numbers[-1]) if numbers else 0
    return score if 1 <= score <= 5 else None


def accepted(scores: Sequence[int | None], above: float = 3.0) -> bool:
    """Peer review's verdict: the mean of the valid scores is strictly above `above`; none: rejected."""
    valid = [s for s in scores if s is not None]
    return bool(valid) and sum(valid) / len(valid) > above


def hinted(problem: Problem, text: str) -> str:
    return text + HINT.format(answer=problem.answer)


def feedback_prompt(problem: Problem, attempt: str) -> Messages:
    ask = hinted(problem, MISTAKE_INPUT.format(problem=problem.prompt, attempt=attempt))
    return ({"role": "user", "content": f"{TEACHER_ROLE}\n{ask}"},)


def review_prompt(problem: Problem, rationale: str) -> Messages:
    return ({"role": "user", "content": hinted(problem, REVIEW_ASK.format(problem=problem.prompt, rationale=rationale))},)


def critique_prompt(problem: Problem, attempt: str, *, hint: bool) -> Messages:
    """The critique task the student learns (the paper's train_feedback_prompt): the teacher's
    instruction, then the question and the student's answer, and the hint line when `hint`."""
    given = MISTAKE_INPUT.format(problem=problem.prompt, attempt=attempt)
    return ({"role": "system", "content": TEACHER_ROLE}, {"role": "user", "content": hinted(problem, given) if hint else given})


class PeerReviewEnv(SolvesBareProblems):
    def __init__(self, parts: Mapping[str, str] | None = None, *, accept_above: float = 3.0,
                 critique_weight: float = 0.5, privileged: bool = True, critique_hint: bool = True,
                 verify_rationales: bool = False, max_reply_chars: int = 4000,
                 objectives: frozenset[str] = frozenset(), verifier: moves.Verifier = verify,
                 encode: TokenEncoder | None = None, learner: str = "student", seed: int = 0) -> None:
        """parts: student, teacher1..N → agent names. accept_above: the peer-review threshold.
        critique_weight: α. encode: the student's tokenizer; lessons go to `learner`."""
        self.parts = dict(parts or {"student": "student", "teacher1": "teacher_a", "teacher2": "teacher_b",
                                    "teacher3": "teacher_c"})
        self.teachers = [p for p in self.parts if p != "student"]
        self.accept_above, self.critique_weight, self.privileged = accept_above, critique_weight, privileged
        self.critique_hint, self.verify_rationales, self.max_reply_chars = critique_hint, verify_rationales, max_reply_chars
        self.objectives, self.verifier, self.encode, self.learner, self.seed = objectives, verifier, encode, learner, seed
        # The console's per-round table as (title, metric key, format): one acceptance column per teacher.
        self.columns = (("round", "round", "{:.0f}"), ("exam", "mapd/exam_accuracy", "{:.2f}"),
                        ("accepted", "mapd/accept_rate", "{:.2f}"), ("taught", "mapd/taught_rate", "{:.2f}"),
                        *((f"acc {self.parts[p]}", f"mapd/accept_rate/{self.parts[p]}", "{:.2f}") for p in self.teachers),
                        ("sft", "loss/sft", "{:.3f}"), ("s", "round/seconds", "{:.1f}"))

    @classmethod
    def from_config(cls, cfg: RunConfig) -> PeerReviewEnv:
        env = cfg.env
        assert isinstance(env, PeerReviewEnvConfig)
        return cls(env.parts(), accept_above=env.accept_above, critique_weight=env.critique_weight,
                   privileged=env.privileged, critique_hint=env.critique_hint, verify_rationales=env.verify_rationales,
                   max_reply_chars=env.max_reply_chars, **learner_kwargs(cfg, "student"), seed=cfg.seed)

    async def run(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> Episode:
        """The exam item; if wrong, every teacher's feedback and rationale, then the peer reviews."""
        (attempt,) = await moves.attempts(agents[self.parts["student"]], problem, 1)
        attempt = moves.verify(attempt, problem, self.verifier)
        if attempt.correct is not False:  # right, or ungradable: no mistake to review
            return Episode(problem=problem, turns=(attempt,), rewards={"exam_correct": float(attempt.correct is True)},
                           stop=StopReason.SOLVED if attempt.correct else StopReason.MAX_ROUNDS)
        written = await asyncio.gather(*(self._teach(agents[self.parts[p]], p, problem, attempt.text) for p in self.teachers))
        rationales = [rationale for _, rationale in written]
        reviews = await asyncio.gather(*(self._review(agents[self.parts[q]], q, problem, r)
                                         for r in rationales for q in self.teachers if q != r.role))
        turns = (attempt, *(t for pair in written for t in pair), *reviews)
        return Episode(problem=problem, turns=turns, rewards=self._rewards(problem, turns))

    async def _teach(self, teacher: AgentHandle, part: str, problem: Problem, attempt: str) -> tuple[Turn, Turn]:
        """One teacher's feedback on the attempt and its own rationale, sampled concurrently."""
        prompt = feedback_prompt(problem, attempt)
        (feedback,), (rationale,) = await asyncio.gather(
            teacher.sample(prompt), moves.demonstrations(teacher, problem, 1, temperature=teacher.sampling.temperature,
                                                         privileged=self.privileged, verifier=self.verifier, part=part))
        cut = rationale.text[:self.max_reply_chars]
        return (self._cut(Turn(role=part, text=feedback.text, prompt=prompt, kind="feedback", provenance=teacher.provenance)),
                moves.verify(replace(rationale, kind="rationale", text=cut, truncated=cut != rationale.text),
                             problem, self.verifier))

    async def _review(self, reviewer: AgentHandle, part: str, problem: Problem, rationale: Turn) -> Turn:
        prompt = review_prompt(problem, rationale.text)
        (out,) = await reviewer.sample(prompt)
        return self._cut(Turn(role=part, text=out.text, prompt=prompt, kind=f"review:{rationale.role}",
                              provenance=reviewer.provenance))

    def _cut(self, turn: Turn) -> Turn:
        if len(turn.text) <= self.max_reply_chars:
            return turn
        return replace(turn, text=turn.text[:self.max_reply_chars], truncated=True)

    def scores(self, turns: Sequence[Turn], author: str) -> list[int | None]:
        """The peer scores of `author`'s rationale, one per review (None: no valid score)."""
        return [parse_score(t.text) for t in turns if t.kind == f"review:{author}"]

    def accepted_rationales(self, problem: Problem, turns: Sequence[Turn]) -> list[Turn]:
        """The rationales peer review accepts (and, with `verify_rationales`, the verifier too), in
        committee order; an empty or undecodable one is never trained on."""
        out = []
        for turn in (t for t in turns if t.kind == "rationale"):
            if not accepted(self.scores(turns, turn.role), self.accept_above) or not usable(turn):
                continue
            if self.verify_rationales and not self.verifier(problem, turn.text).correct:
                continue
            out.append(turn)
        return out

    def training_pair(self, episode: Episode) -> tuple[Turn, Turn] | None:
        """The paper's "mixed" pick: a random teacher's feedback and a random accepted rationale,
        drawn by a generator seeded by (run seed, problem id); None when either is missing."""
        if episode.turns[0].correct is not False:
            return None
        feedback = [t for t in episode.turns if t.kind == "feedback" and usable(t)]
        rationales = self.accepted_rationales(episode.problem, episode.turns)
        if not feedback or not rationales:
            return None
        rng = random.Random(f"mapd-{self.seed}-{episode.problem.id}")
        return rng.choice(feedback), rng.choice(rationales)

    def lessons(self, episodes: Sequence[Episode]) -> list[Lesson]:
        """Per taught wrong item: the critique lesson (weight α) and the solve lesson (weight 1 − α)."""
        if "sft" not in self.objectives:
            return []
        assert self.encode is not None, "lessons need the student's tokenizer (encode=)"
        out: list[Lesson] = []
        for episode in episodes:
            if (pair := self.training_pair(episode)) is None:
                continue
            (feedback, rationale), problem = pair, episode.problem
            critique = critique_prompt(problem, episode.turns[0].text, hint=self.critique_hint)
            tasks = ((critique, feedback, self.critique_weight, "feedback"),
                     (student_attempt(problem), rationale, 1.0 - self.critique_weight, "rationale"))
            out += [Lesson("sft", self.encode.prompt(prompt), self.encode.text(turn.text), weight=weight,
                           learner=self.learner, provenance=f"{self.parts[turn.role]}:{task}")
                    for prompt, turn, weight, task in tasks if weight > 0]
        return out

    def _rewards(self, problem: Problem, turns: Sequence[Turn]) -> dict[str, float]:
        """A wrong item's counts: per teacher part, whether its rationale was accepted, and its
        valid peer scores' sum and count (for the mean score)."""
        kept = {t.role for t in self.accepted_rationales(problem, turns)}
        out = {"exam_correct": 0.0, "wrong": 1.0, "taught": float(bool(kept) and any(t.kind == "feedback" and usable(t)
                                                                                     for t in turns))}
        for part in self.teachers:
            valid = [s for s in self.scores(turns, part) if s is not None]
            out |= {f"accepted/{part}": float(part in kept), f"score_sum/{part}": float(sum(valid)),
                    f"scores/{part}": float(len(valid))}
        return out

    def metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """Exam accuracy, and per teacher (by agent name) the share of its rationales peer review
        accepted and its mean valid score, over the round's wrong items."""
        total: dict[str, float] = {}
        for episode in episodes:
            for key, value in episode.rewards.items():
                total[key] = total.get(key, 0.0) + value
        n, wrong = max(len(episodes), 1), total.get("wrong", 0.0)
        out = {"mapd/exam_accuracy": total.get("exam_correct", 0.0) / n, "mapd/wrong_items": wrong}
        if wrong:
            out["mapd/taught_rate"] = total["taught"] / wrong
            out["mapd/accept_rate"] = sum(total[f"accepted/{p}"] for p in self.teachers) / (wrong * len(self.teachers))
            for part in self.teachers:
                name = self.parts[part]
                out[f"mapd/accept_rate/{name}"] = total[f"accepted/{part}"] / wrong
                if total[f"scores/{part}"]:
                    out[f"mapd/mean_score/{name}"] = total[f"score_sum/{part}"] / total[f"scores/{part}"]
        return out | reply_counts(episodes)


def usable(turn: Turn) -> bool:
    """Text that can be a target: non-empty and decodable."""
    return bool(turn.text.strip()) and not undecodable(turn.text)
