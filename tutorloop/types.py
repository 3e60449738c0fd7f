"""The nouns that cross boundaries: problems, turns, episodes and the lessons made from them.

Every record is frozen and slotted; changing one means building a new one with
`dataclasses.replace`. Tuples rather than lists keep them hashable and safe to share between
coroutines (and, later, Ray actors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Role = str
"""The part a turn's speaker plays in its env ("student", "teacher", "tutor", ...): what lessons and
metrics read. Agents have free names from the config; the env's config says who plays which part."""
Move = Literal["focus", "probing", "telling", "generic"]
MOVES: tuple[Move, ...] = ("focus", "probing", "telling", "generic")
"""MathDial's teacher moves (Macina et al. 2023): steer attention, draw out reasoning, reveal,
or talk (greetings, encouragement)."""
AnswerFormat = Literal["number", "latex"]
Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
Messages = tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    id: str
    prompt: str
    answer: str | None = None
    """Gold final answer. Graders and the teacher read it; the student never sees it."""
    solution: str | None = None
    """Step-by-step reference solution (privileged context for the teacher)."""
    difficulty: int = 0
    source: str = ""
    incorrect_solution: str | None = None
    """Tutoring only: the simulated student's own wrong solution, which it believes (MathDial)."""
    persona: str | None = None
    """Tutoring only: who the simulated student is, e.g. "Kim is a 7th grade student who ..."."""
    answer_format: AnswerFormat = "number"
    """How the answer is graded: `number` (the reply's final number, "The answer is N.") or `latex`
    (the reply's last \\boxed{...}, compared with math-verify, for MATH-style answers)."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 128
    n: int = 1
    """Samples per prompt; a generator returns them consecutively."""
    stop_regex: str | None = None
    """Stop a sequence once its text matches this pattern (e.g. after the final-answer line)."""


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    """Log-prob of each sampled token under the generating policy at temperature 1 (raw logits,
    as vLLM's default `raw_logprobs`), so it is comparable with teacher scores."""
    finish_reason: str = "stop"  # "stop" | "length"
    policy_version: int = 0


@dataclass(frozen=True, slots=True)
class TokenScores:
    """Teacher-forced scores of a target span under some context, aligned to the span's ids."""

    logprobs: tuple[float, ...]
    """log p(target_t | context, target_<t) for each target token."""
    topk_ids: tuple[tuple[int, ...], ...] = ()
    """Per target position, the scorer's top-k token ids (empty when top_k = 0)."""
    topk_logprobs: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    text: str
    prompt: Messages
    """Exactly what the agent saw, so any turn can be replayed as training data."""
    kind: str = "attempt"  # attempt | correction | feedback | revision
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    policy_version: int = 0
    """Student weights that produced this turn; the trainer drops on-policy lessons that are stale."""
    correct: bool | None = None
    """The verifier's verdict on this turn's final answer (None: not graded)."""
    answer: str | None = None
    """The final answer the verifier extracted, if any."""
    provenance: str = "model"
    """Who wrote the text: "model", or "reference" when the reference solution stood in."""
    teacher_scores: TokenScores | None = None
    """The teacher's scores of this turn's tokens under its privileged context (OPD)."""
    truncated: bool = False
    """The reply was longer than `env.max_reply_chars` and was cut there before anyone read it."""
    move: str | None = None
    """Tutor turns: the MathDial move the tagger gave it (focus | probing | telling | generic)."""
    alternatives: tuple[str, ...] = ()
    """Other replies the agent sampled for the same prompt and did not say (tutor DPO rejects)."""


class StopReason(StrEnum):
    SOLVED = "solved"
    MAX_ROUNDS = "max_rounds"


@dataclass(frozen=True, slots=True)
class Episode:
    problem: Problem
    turns: tuple[Turn, ...]
    rewards: dict[str, float] = field(default_factory=dict)
    stop: StopReason = StopReason.MAX_ROUNDS


@dataclass(frozen=True, slots=True)
class Lesson:
    """One unit of training data for one objective of one learner, in the trained model's token ids
    (never re-encoded text). Which optional fields an objective reads is the registry's `needs`."""

    objective: str
    """A key of `tutorloop.objectives.REGISTRY`."""
    prompt_ids: tuple[int, ...]
    """The context, rendered with the trained model's chat template, ending with its assistant header."""
    target_ids: tuple[int, ...]
    """The trained span (a pair's chosen side): sampled ids where the model sampled them."""
    token_weights: tuple[float, ...] = ()
    """Per target token; () means 1 on each. 0 on tokens another agent or the env wrote."""
    policy_version: int | None = 0
    """The policy that sampled the target; on-policy objectives drop stale lessons. None: no policy
    sampled it (a dataset target a teacher scored, GKD's off-policy half), so it never goes stale."""
    weight: float = 1.0
    """Scales this lesson in its objective's loss."""
    learner: str = "student"
    rejected_ids: tuple[int, ...] = ()
    """Pairs: the rejected side, the ids that were sampled (no EOS the model never emitted)."""
    behavior_logprobs: tuple[float, ...] = ()
    """Log-prob of each target token under the policy that sampled it."""
    teacher: TokenScores | None = None
    """The teacher's scores of each target token under its own context."""
    advantage: float | None = None
    """Sequence advantage for policy-gradient objectives."""
    off_policy: bool = False
    """Policy-gradient lessons: no policy sampled the target (a teacher's solution in the group,
    AMPO), so it has no behaviour log-probs; `pg` trains it with the shaped term of METHODS F7."""
    provenance: str = ""
