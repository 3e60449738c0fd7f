"""The first-error env: SuperCorrect's Stage 2, cross-model DPO on the first wrong step (Yang et al.,
ICLR 2025, "SuperCorrect: Advancing Small LLM Reasoning with Thought Template Distillation and
Self-Correction"; METHODS B3).

The student attempts the bare problem; a wrong attempt goes to the teacher, who sees the problem,
the reference solution and the attempt as numbered steps (one step = one line of the attempt), and
replies `Step k: <the corrected step k>` for the FIRST wrong step k. Each such reply gives one pair:

    context  = the student's bare prompt + the student's steps 1..k-1 (the shared correct prefix)
    chosen   = the teacher's corrected step k
    rejected = the student's own step k

so both sides are scored conditioned on the prefix and only the diverging step is compared (F3 with a
prefix-conditioned x). The paper's exact pair construction is unverified (METHODS §5): its rejected side
may be the student's self-correction attempt, and it may make one pair per error step; we take the
student's wrong step and the first error only, the reading the brief for this env fixes.

Parsing is strict where it matters: the first line of the reply that names a step (`Step k:`, `step k -`,
`<Step3>` ...) is the one read; a reply naming no step, a step outside 1..n, an empty correction, one
equal to the student's step, or one that states a final answer the verifier rejects gives no pair.

Token ids: the prefix and both steps are the student's text encoded in the student's tokenizer. The
sampled ids cannot be cut at a line boundary without decoding token by token (a BPE token may span a
newline), so the split is made on text and each piece is encoded once, with no EOS (neither side ends
the reply).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from tutorloop.agents.protocol import AgentHandle
from tutorloop.config import FirstErrorEnvConfig, RunConfig
from tutorloop.envs import moves
from tutorloop.envs.correction import reply_counts
from tutorloop.envs.evaluation import SolvesBareProblems
from tutorloop.envs.learning import learner_kwargs
from tutorloop.envs.prompts import student_attempt
from tutorloop.envs.to_examples import PAIR_OBJECTIVES
from tutorloop.graders import undecodable, verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Messages, Problem, StopReason, Turn

COLUMNS = (("round", "round", "{:.0f}"), ("first try", "first_error/first_try_acc", "{:.2f}"),
           ("located", "first_error/located_rate", "{:.2f}"), ("step", "first_error/first_error_step_mean", "{:.1f}"),
           ("dpo", "loss/dpo", "{:.3f}"), ("s", "round/seconds", "{:.1f}"))

LOCATE_SYSTEM = "You are a math teacher. Reference solution:\n{solution}"
LOCATE_ASK = ("Problem: {problem}\n\nStudent's attempt, step by step:\n{steps}\n\n"
              "Find the FIRST wrong step. Reply with one line: 'Step k: ' followed by the corrected step k.")
_STEP = re.compile(r"^[^\w\n]*step[ \t]*(\d+)[ \t>\]:.)*\-]*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
"""`Step 2: ...`, `**Step 2** - ...`, `<Step2> ...`: a step number at the start of a line, then the step."""


@dataclass(frozen=True, slots=True)
class Located:
    step: int
    """1-based index of the first wrong step in the attempt's lines."""
    corrected: str


def steps(text: str) -> list[str]:
    """The attempt's steps: its non-empty lines, stripped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def locate_prompt(problem: Problem, attempt_text: str) -> Messages:
    numbered = "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps(attempt_text), 1))
    solution = problem.solution or f"The answer is {problem.answer}."
    return ({"role": "system", "content": LOCATE_SYSTEM.format(solution=solution)},
            {"role": "user", "content": LOCATE_ASK.format(problem=problem.prompt, steps=numbered)})


def parse_located(reply: str, attempt_steps: Sequence[str], problem: Problem,
                  verifier: moves.Verifier = verify) -> Located | None:
    """The first step the reply names, if it names a valid one with a usable correction (module doc)."""
    match = _STEP.search(reply)
    if match is None:
        return None
    k, corrected = int(match.group(1)), match.group(2).strip()
    if not 1 <= k <= len(attempt_steps) or not corrected or corrected == attempt_steps[k - 1]:
        return None
    verdict = verifier(problem, corrected)
    if verdict.answer is not None and verdict.correct is False:  # a corrected step that states a wrong answer
        return None
    return Located(k, corrected)


class FirstErrorEnv(SolvesBareProblems):
    columns = COLUMNS

    def __init__(self, parts: Mapping[str, str] | None = None, *, max_reply_chars: int = 4000,
                 objectives: frozenset[str] = frozenset(), verifier: moves.Verifier = verify,
                 encode: TokenEncoder | None = None, learner: str = "student") -> None:
        """parts: student, teacher → agent names; objectives: the pair objectives to make lessons for,
        encoded by `encode` (the student's tokenizer) and addressed to `learner`."""
        self.parts = dict(parts or {"student": "student", "teacher": "teacher"})
        self.max_reply_chars, self.objectives, self.verifier = max_reply_chars, objectives, verifier
        self.encode, self.learner = encode, learner

    @classmethod
    def from_config(cls, cfg: RunConfig) -> FirstErrorEnv:
        env = cfg.env
        assert isinstance(env, FirstErrorEnvConfig)
        return cls(env.parts(), max_reply_chars=env.max_reply_chars, **learner_kwargs(cfg, "student"))

    async def run(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> Episode:
        attempt = moves.verify(await moves.attempt(agents[self.parts["student"]], problem), problem, self.verifier)
        turns = [attempt]
        if attempt.correct is False and steps(attempt.text):
            turns.append(await self._locate(agents[self.parts["teacher"]], problem, attempt))
        located = self._located(problem, turns)
        return Episode(problem=problem, turns=tuple(turns),
                       stop=StopReason.SOLVED if attempt.correct else StopReason.MAX_ROUNDS,
                       rewards={"first_try": float(bool(attempt.correct)), "wrong": float(attempt.correct is False),
                                "located": float(located is not None),
                                "first_error_step": float(located.step if located else 0)})

    def lessons(self, episodes: Sequence[Episode]) -> list[Lesson]:
        """One prefix-conditioned pair per located first error, for each active pair objective."""
        names = sorted(self.objectives & PAIR_OBJECTIVES)
        if not names:
            return []
        assert self.encode is not None, "lessons need the student's tokenizer (encode=)"
        out: list[Lesson] = []
        for episode in episodes:
            located = self._located(episode.problem, list(episode.turns))
            if located is None:
                continue
            out += [replace(lesson, objective=name) for lesson in [self._pair(episode, located)] for name in names]
        return out

    def metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        n = max(len(episodes), 1)
        total = {k: sum(e.rewards.get(k, 0.0) for e in episodes) for k in ("first_try", "wrong", "located", "first_error_step")}
        return {"first_error/first_try_acc": total["first_try"] / n,
                "first_error/located_rate": total["located"] / max(total["wrong"], 1.0),
                "first_error/first_error_step_mean": total["first_error_step"] / max(total["located"], 1.0),
                } | reply_counts(episodes)

    async def _locate(self, teacher: AgentHandle, problem: Problem, attempt: Turn) -> Turn:
        prompt = locate_prompt(problem, attempt.text)
        (out,) = await teacher.sample(prompt)
        text = out.text[:self.max_reply_chars]
        return Turn(role="teacher", text=text, prompt=prompt, kind="diagnosis", provenance=teacher.provenance,
                    truncated=len(out.text) > self.max_reply_chars)

    def _located(self, problem: Problem, turns: Sequence[Turn]) -> Located | None:
        attempt, diagnosis = turns[0], next((t for t in turns if t.kind == "diagnosis"), None)
        if diagnosis is None or undecodable(attempt.text) or undecodable(diagnosis.text):
            return None
        return parse_located(diagnosis.text, steps(attempt.text), problem, self.verifier)

    def _pair(self, episode: Episode, located: Located) -> Lesson:
        """The pair under the bare prompt plus the shared prefix (steps before the wrong one)."""
        assert self.encode is not None
        attempt_steps = steps(episode.turns[0].text)
        prefix = "".join(f"{s}\n" for s in attempt_steps[:located.step - 1])
        prompt_ids = self.encode.prompt(student_attempt(episode.problem))
        prompt_ids += self.encode.text(prefix, eos=False) if prefix else ()
        return Lesson("dpo", prompt_ids, self.encode.text(located.corrected, eos=False),
                      rejected_ids=self.encode.text(attempt_steps[located.step - 1], eos=False),
                      policy_version=episode.turns[0].policy_version, provenance=f"teacher>student:step{located.step}",
                      learner=self.learner)
