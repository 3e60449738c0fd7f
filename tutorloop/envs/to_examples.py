"""Episode → SFT examples, preference pairs and OPD examples: the only place where what the
agents said becomes training data.

The rule that matters: no text becomes an SFT target or a DPO "chosen" unless the verifier accepts
its final answer, checked here again on the exact text that will be trained on. Text that shows
undecodable bytes (U+FFFD) is never trained on: re-tokenized, it would teach the replacement mark
instead of what the model wrote (such replies are counted in `episodes/invalid_utf8_replies`). Every target is
trained under the student's bare attempt prompt, because that is what the student sees at test time.
"""

from __future__ import annotations

from typing import Callable, Iterable

from tutorloop.envs.prompts import split_correction
from tutorloop.types import Episode, OPDExample, PreferencePair, Problem, SFTExample, TrainBatch, Turn

from tutorloop.envs.tutoring_metrics import outcome
from tutorloop.graders import Verdict, contains_number, undecodable

Verifier = Callable[[Problem, str], Verdict]


def to_train_batch(episodes: Iterable[Episode], verify: Verifier, *, objectives: set[str]) -> TrainBatch:
    sft: list[SFTExample] = []
    dpo: list[PreferencePair] = []
    opd: list[OPDExample] = []
    for episode in episodes:
        accepted = accepted_targets(episode, verify)
        first = episode.turns[0]
        if "sft" in objectives:
            sft += [SFTExample(prompt=first.prompt, completion=text, provenance=source) for text, source in accepted]
        if "dpo" in objectives and accepted and first.correct is False and not undecodable(first.text):
            text, source = accepted[-1] if accepted[-1][1] == "revision" else accepted[0]
            dpo.append(PreferencePair(prompt=first.prompt, chosen=text, rejected=first.text,
                                      provenance=f"{source}>attempt"))
        if "opd" in objectives:
            opd += [opd_example(t) for t in episode.turns if t.role == "student" and t.teacher_scores and t.token_ids]
    return TrainBatch(sft=tuple(sft), dpo=tuple(dpo), opd=tuple(opd))


def accepted_targets(episode: Episode, verify: Verifier) -> list[tuple[str, str]]:
    """(text, provenance) of every verified teacher correction and accepted student revision."""
    out = []
    for turn in episode.turns:
        if turn.role == "teacher" and turn.correct:
            text, source = split_correction(turn.text)[1], f"teacher:{turn.provenance}"
        elif turn.role == "student" and turn.kind == "revision" and turn.correct:
            text, source = turn.text, "revision"
        else:
            continue
        if text and verify(episode.problem, text).correct and not undecodable(text):
            out.append((text, source))
    return out


def opd_example(turn: Turn) -> OPDExample:
    assert turn.teacher_scores is not None
    return OPDExample(prompt=turn.prompt, completion_ids=turn.token_ids, behavior_logprobs=turn.logprobs,
                      teacher=turn.teacher_scores, policy_version=turn.policy_version)


# --- tutoring dialogues → lessons for the tutor --------------------------------------------------


def to_tutor_batch(dialogues: Iterable[Episode], *, objectives: set[str]) -> TrainBatch:
    """Lessons for the tutor from dialogues (simulated or recorded), under the prompt the tutor saw.

    SFT: every tutor turn of a dialogue in which the student reached the answer without being told.
    DPO: in such a dialogue, each spoken tutor turn is preferred over every alternative the tutor
    sampled for the same prompt that states the answer (a turn that led to success over one that
    told). The env's fixed opening is nobody's choice and never a target.
    """
    sft: list[SFTExample] = []
    dpo: list[PreferencePair] = []
    for dialogue in dialogues:
        success, telling = outcome(dialogue.turns, dialogue.problem.answer)
        if not success or telling:
            continue
        for turn in dialogue.turns:
            if turn.role != "tutor" or turn.provenance == "env" or not turn.text:
                continue
            if "sft" in objectives:
                sft.append(SFTExample(prompt=turn.prompt, completion=turn.text, provenance=f"tutor:{turn.provenance}"))
            if "dpo" in objectives:
                dpo += [PreferencePair(prompt=turn.prompt, chosen=turn.text, rejected=alt, provenance="success>telling")
                        for alt in turn.alternatives if contains_number(alt, dialogue.problem.answer or "")]
    return TrainBatch(sft=tuple(sft), dpo=tuple(dpo))
