"""Correction episodes → lessons for the mentor, judged by what its feedback led to.

A feedback turn followed (next turn) by the student's revision is one outcome. It is good when the
revision was accepted and the feedback did not state the answer (not redacted); bad when the
revision was wrong or the feedback leaked the answer (redacted), whatever the revision did. SFT:
every good feedback. Pairs (dpo, redi): every good feedback is preferred over every bad one sampled
for the same prompt ("accepted>wrong", or "accepted>leaked" when the bad one stated the answer);
with `env.feedback_candidates` > 1 each mistake gets several feedbacks for one prompt.

Targets are the mentor's token ids as it sampled them, never re-encoded: a leaked feedback is
rejected as it was said, answer included, not as the student read it. Feedback without sampled ids
(a scripted or human mentor) is skipped. A cut reply (`truncated`: its ids are not what the student
read) or one with undecodable bytes (its text cannot be checked) is never a chosen side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tutorloop.graders import Verdict, undecodable
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Messages, Problem, Turn

Verifier = Callable[[Problem, str], Verdict]
PAIR_OBJECTIVES = ("dpo", "redi")
PromptKey = tuple[tuple[tuple[str, str], ...], ...]


def feedback_branches(turns: Iterable[Turn]) -> list[tuple[Turn, Turn]]:
    """(feedback, revision): every mentor feedback turn whose next turn is a student revision."""
    turns = tuple(turns)
    return [(a, b) for a, b in zip(turns, turns[1:]) if a.kind == "feedback" and b.kind == "revision"]


def to_mentor_lessons(episodes: Iterable[Episode], encode: TokenEncoder, *, objectives: set[str],
                      learner: str = "mentor", verify: Verifier | None = None) -> list[Lesson]:
    """The mentor's lessons, in the mentor's token ids (`encode`: its tokenizer). Pairs match equal
    prompts across all the episodes given. `verify`: grade each revision again on its text
    (default: trust the env's verdict, `Turn.correct`)."""
    good: dict[PromptKey, list[Turn]] = {}  # by prompt, in order of first appearance
    bad: dict[PromptKey, list[Turn]] = {}
    for episode in episodes:
        for feedback, revision in feedback_branches(episode.turns):
            if not feedback.token_ids:
                continue
            accepted = revision.correct if verify is None else verify(episode.problem, revision.text).correct
            key = _key(feedback.prompt)
            if feedback.provenance == "redacted" or accepted is False:
                bad.setdefault(key, []).append(feedback)
            elif accepted and not feedback.truncated and not undecodable(feedback.text):
                good.setdefault(key, []).append(feedback)
    lessons: list[Lesson] = []
    pairs = [name for name in PAIR_OBJECTIVES if name in objectives]
    for key, chosen in good.items():
        prompt_ids = encode.prompt(chosen[0].prompt)
        if "sft" in objectives:
            lessons += [Lesson("sft", prompt_ids, g.token_ids, learner=learner, policy_version=g.policy_version,
                               provenance="mentor:accepted") for g in chosen]
        lessons += [Lesson(name, prompt_ids, g.token_ids, rejected_ids=b.token_ids, learner=learner,
                           policy_version=g.policy_version, provenance=_pair_provenance(b))
                    for g in chosen for b in bad.get(key, ()) for name in pairs]
    return lessons


def _key(prompt: Messages) -> PromptKey:
    """A prompt as a dict key (its messages are dicts)."""
    return tuple(tuple(m.items()) for m in prompt)


def _pair_provenance(rejected: Turn) -> str:
    return "accepted>leaked" if rejected.provenance == "redacted" else "accepted>wrong"
