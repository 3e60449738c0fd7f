"""The correction env: attempt → verify → (teacher correction, mentor feedback, student revision →
verify) for up to `max_rounds`, stopping as soon as the student is right.

The env owns the control flow between agents and the verdicts; agents only talk. When on-policy
distillation is on, the teacher scores every student attempt right after it is sampled, so the
scores belong to the policy version that produced the tokens. Its config names the agent that
plays each part (student, teacher, mentor); the student is the one that learns.

With `feedback_candidates` > 1 the mentor samples several feedbacks for the same prompt and the
student revises after each. Every branch is kept in the episode's turns as a (feedback, revision)
pair, the branches whose revision was wrong first and an accepted one last: `turns[-1]` is always
the revision the episode continues from (and what the "final" reward grades).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace

from tutorloop.agents.protocol import AgentHandle
from tutorloop.config import CorrectionEnvConfig, RunConfig
from tutorloop.envs import moves
from tutorloop.envs.prompts import split_correction
from tutorloop.envs.learning import Learning, learner_kwargs, learning_parts
from tutorloop.envs.mentor_lessons import to_mentor_lessons
from tutorloop.envs.to_examples import to_lessons
from tutorloop.envs.evaluation import SolvesBareProblems
from tutorloop.envs.mentor_lessons import feedback_branches
from tutorloop.graders import undecodable, verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Problem, StopReason, Turn

COLUMNS = (("round", "round", "{:.0f}"), ("first try", "episodes/first_try_acc", "{:.2f}"),
           ("after feedback", "episodes/after_feedback_acc", "{:.2f}"),
           ("corrections ok", "episodes/corrections_accepted_rate", "{:.2f}"),
           ("sft", "loss/sft", "{:.3f}"), ("dpo", "loss/dpo", "{:.3f}"), ("kd", "loss/kd", "{:.3f}"),
           ("KL t-s", "kl/teacher_student", "{:.3f}"), ("gen tok/s", "gen/student_tokens_per_s", "{:.0f}"),
           ("s", "round/seconds", "{:.1f}"))
"""The console's per-round table as (title, metric key, format)."""


class CorrectionEnv(SolvesBareProblems):
    columns = COLUMNS

    def __init__(self, parts: Mapping[str, str] | None = None, *, max_rounds: int, num_candidates: int = 1,
                 feedback_candidates: int = 1, max_reply_chars: int = 4000, score_top_k: int = 0,
                 reference_targets: bool = True, objectives: frozenset[str] = frozenset(), verifier: moves.Verifier = verify,
                 encode: TokenEncoder | None = None, learner: str = "student", mentor: Learning | None = None) -> None:
        """parts: part (student, teacher, mentor) → agent name (default: the part's own). score_top_k > 0: the teacher scores
        student attempts with that many top-k log-probs (OPD); 0: no scoring. feedback_candidates:
        mentor feedbacks per mistake, each followed by its own revision. max_reply_chars:
        teacher and mentor replies are cut there. objectives: the lessons `lessons` makes, with text
        targets encoded by `encode` (the student's tokenizer), addressed to `learner`. mentor: how the
        mentor learns, if it does. reference_targets: a reference solution that stood in for the
        teacher's correction is a training target too."""
        self.parts = dict(parts or {p: p for p in ("student", "teacher", "mentor")})
        self.max_rounds, self.num_candidates, self.feedback_candidates = max_rounds, num_candidates, feedback_candidates
        self.max_reply_chars, self.score_top_k, self.objectives = max_reply_chars, score_top_k, objectives
        self.verifier, self.encode, self.learner, self.mentor = verifier, encode, learner, mentor
        self.reference_targets = reference_targets

    @classmethod
    def from_config(cls, cfg: RunConfig) -> CorrectionEnv:
        env = cfg.env
        assert isinstance(env, CorrectionEnvConfig)
        learning = learning_parts(cfg)
        student = learning.get("student")
        return cls(env.parts(), max_rounds=env.max_rounds, num_candidates=env.num_candidates,
                   feedback_candidates=env.feedback_candidates, max_reply_chars=env.max_reply_chars,
                   reference_targets=env.reference_targets, score_top_k=student.top_k if student else 0, mentor=learning.get("mentor"),
                   **learner_kwargs(cfg, "student"))

    async def run(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> Episode:
        student, teacher, mentor = (agents[self.parts[p]] for p in ("student", "teacher", "mentor"))
        turns = [await self._student_turn(problem, student, teacher, ())]
        for _ in range(self.max_rounds):
            if turns[-1].correct:
                break
            correction = self._bounded(problem, await moves.demonstrate(
                teacher, problem, turns[-1].text, num_candidates=self.num_candidates, verifier=self.verifier))
            turns.append(correction)  # fix it
            turns += await self._advise(problem, student, teacher, mentor, tuple(turns))  # feedback, revise
        stop = StopReason.SOLVED if turns[-1].correct else StopReason.MAX_ROUNDS
        return Episode(problem=problem, turns=tuple(turns), rewards=rewards(turns), stop=stop)

    def lessons(self, episodes: Sequence[Episode]) -> list[Lesson]:
        """The student's: SFT on verified corrections and revisions, DPO revision > attempt, OPD on
        scored attempts. The mentor's, when it learns: its feedback judged by the revision after it."""
        out: list[Lesson] = []
        if self.objectives:
            assert self.encode is not None, "lessons need the student's tokenizer (encode=)"
            out += [replace(x, learner=self.learner) for x in
                    to_lessons(episodes, self.verifier, self.encode, objectives=set(self.objectives),
                               reference_targets=self.reference_targets)]
        if self.mentor is not None:
            out += to_mentor_lessons(episodes, self.mentor.encode, objectives=set(self.mentor.objectives),
                                     learner=self.mentor.learner, verify=self.verifier)
        return out

    def metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        return episode_metrics(episodes)

    def _bounded(self, problem: Problem, turn: Turn) -> Turn:
        """The reply cut to max_reply_chars, so a runaway teacher or mentor (an endpoint, a large
        max_new_tokens) cannot overflow the next prompt. A cut correction is verified again on what
        is left. Student replies are bounded by their max_new_tokens, and their text must match
        their token ids."""
        if len(turn.text) <= self.max_reply_chars:
            return turn
        text = turn.text[:self.max_reply_chars]
        if turn.role != "teacher":
            return replace(turn, text=text, truncated=True)
        verdict = self.verifier(problem, split_correction(text)[1])
        return replace(turn, text=text, truncated=True, correct=verdict.correct, answer=verdict.answer)

    async def _advise(self, problem: Problem, student: AgentHandle, teacher: AgentHandle, mentor: AgentHandle,
                      history: tuple[Turn, ...]) -> list[Turn]:
        """Mentor feedback on the latest attempt (`history[-2]`) from its correction (`history[-1]`),
        then the student's revision after it: [feedback, revision], or one such pair per feedback
        candidate (`_branches`)."""
        if self.feedback_candidates > 1:
            return await self._branches(problem, student, teacher, mentor, history)
        feedback = self._bounded(problem, await moves.review(mentor, problem, history[-2].text, history[-1]))
        # awaited directly, not gathered: a task switch here would reorder scripted replies across episodes
        return [feedback, await self._student_turn(problem, student, teacher, (*history, feedback))]

    async def _branches(self, problem: Problem, student: AgentHandle, teacher: AgentHandle, mentor: AgentHandle,
                        history: tuple[Turn, ...]) -> list[Turn]:
        """feedback_candidates feedbacks sampled in one call, the student revising after each
        (concurrently), as (feedback, revision) pairs: wrong revisions first, accepted ones last, each
        group in sample order, so the last pair is the one the episode continues from."""
        candidates = await moves.reviews(mentor, problem, history[-2].text, history[-1], self.feedback_candidates)
        feedback = [self._bounded(problem, turn) for turn in candidates]
        revisions = await asyncio.gather(*(self._student_turn(problem, student, teacher, (*history, turn))
                                           for turn in feedback))
        branches = sorted(zip(feedback, revisions), key=lambda branch: branch[1].correct is True)
        return [turn for branch in branches for turn in branch]

    async def _student_turn(self, problem: Problem, student: AgentHandle, teacher: AgentHandle,
                            history: tuple[Turn, ...]) -> Turn:
        turn = moves.verify(await moves.attempt(student, problem, history), problem, self.verifier)
        if self.score_top_k and turn.token_ids and turn.kind == "attempt":
            turn = replace(turn, teacher_scores=await moves.score(teacher, problem, turn, self.score_top_k))
        return turn


def rewards(turns: list[Turn]) -> dict[str, float]:
    student = [t for t in turns if t.role == "student"]
    corrections = [t for t in turns if t.role == "teacher"]
    return {
        "first_try": float(bool(student[0].correct)),
        "final": float(bool(student[-1].correct)),
        "corrections": float(len(corrections)),
        "corrections_accepted": float(sum(t.correct is True and t.provenance == "model" for t in corrections)),
        "reference_fallbacks": float(sum(t.provenance == "reference" for t in corrections)),
        "hint_leaks": float(sum(t.provenance == "redacted" for t in turns if t.role == "mentor")),
    }


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    n = max(len(episodes), 1)
    total = {key: sum(e.rewards.get(key, 0.0) for e in episodes) for key in
             ("first_try", "final", "corrections", "corrections_accepted", "reference_fallbacks", "hint_leaks")}
    return {
        "episodes/first_try_acc": total["first_try"] / n,
        "episodes/after_feedback_acc": total["final"] / n,
        "episodes/corrections": total["corrections"],
        "episodes/corrections_accepted_rate": total["corrections_accepted"] / max(total["corrections"], 1.0),
        "episodes/reference_fallbacks": total["reference_fallbacks"],
        "episodes/hint_leaks": total["hint_leaks"],
        "episodes/turns_mean": sum(len(e.turns) for e in episodes) / n,
    } | feedback_counts(episodes) | reply_counts(episodes)


def feedback_counts(episodes: Sequence[Episode]) -> dict[str, float]:
    """Every mentor feedback by its outcome, the revision right after it: with feedback_candidates > 1
    after_feedback_acc is the best of the branches, this is each feedback's own rate."""
    branches = [b for e in episodes for b in feedback_branches(e.turns)]
    accepted = sum(revision.correct is True for _, revision in branches)
    return {"episodes/feedbacks": float(len(branches)),
            "episodes/feedback_accepted_rate": accepted / max(len(branches), 1)}


def reply_counts(episodes: Sequence[Episode]) -> dict[str, float]:
    """Model replies that were handled rather than trusted, per round: an empty or answerless student
    reply grades wrong, a cut reply is re-verified, an undecodable one never becomes a target."""
    turns = [t for e in episodes for t in e.turns]
    student = [t for t in turns if t.role == "student"]
    return {"episodes/empty_replies": float(sum(not t.text.strip() for t in student)),
            "episodes/no_answer": float(sum(bool(t.text.strip()) and t.answer is None for t in student)),
            "episodes/truncated_replies": float(sum(t.truncated for t in turns)),
            "episodes/invalid_utf8_replies": float(sum(undecodable(t.text) for t in turns))}
