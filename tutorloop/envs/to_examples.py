"""Episodes → `Lesson`s, one per objective that trains on them: the only place where what the agents
said becomes training data, in the trained model's token ids. Pairs feed `dpo` and `redi`; the
student's own samples with the teacher's scores feed `kd` (on-policy distillation) and `opd_pg`;
the tutor's own samples with their dialogue's advantage feed `pg`; a teacher's verified
demonstrations feed `sft`, and reference solutions or those same demonstrations the teacher scored
feed `kd` (distill env).

The rule that matters: no text becomes an SFT target or a DPO "chosen" unless the verifier accepts
its final answer, checked here again on the exact text that will be trained on. Text that shows
undecodable bytes (U+FFFD) is never trained on: its text cannot be checked, nor re-encoded as what
the model wrote (such replies are counted in `episodes/invalid_utf8_replies`). Every target is
trained under the student's bare attempt prompt, because that is what the student sees at test time.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from dataclasses import replace

from tutorloop.envs.prompts import answer_line, split_correction, student_attempt, task_prefixed
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Problem, Turn

from tutorloop.envs.tutoring_metrics import outcome
from tutorloop.graders import Verdict, contains_number, undecodable

Verifier = Callable[[Problem, str], Verdict]
PAIR_OBJECTIVES = {"dpo", "redi"}
SCORED_OBJECTIVES = {"kd", "opd_pg"}


def to_lessons(episodes: Iterable[Episode], verify: Verifier, encode: TokenEncoder, *,
               objectives: set[str], reference_targets: bool = True) -> list[Lesson]:
    """The student's lessons from correction episodes, in the student's token ids (`encode`).
    reference_targets=False: a reference solution that stood in for the teacher is no target."""
    lessons: list[Lesson] = []
    pairs, scored = objectives & PAIR_OBJECTIVES, objectives & SCORED_OBJECTIVES
    for episode in episodes:
        accepted = [a for a in accepted_targets(episode, verify) if reference_targets or a[2].provenance != "reference"]
        first = episode.turns[0]
        prompt_ids = encode.prompt(first.prompt)
        targets = [(target_ids(encode, text, turn), source) for text, source, turn in accepted]
        if "sft" in objectives:
            lessons += [Lesson("sft", prompt_ids, ids, provenance=source) for ids, source in targets]
        if pairs and accepted and first.correct is False and not undecodable(first.text):
            ids, source = targets[-1] if targets[-1][1] == "revision" else targets[0]
            rejected = first.token_ids or encode.text(first.text, eos=False)  # what was sampled, as sampled
            lessons += [Lesson(name, prompt_ids, ids, rejected_ids=rejected, provenance=f"{source}>attempt")
                        for name in sorted(pairs)]
        if scored:
            lessons += [replace(scored_lesson(encode, t), objective=name) for name in sorted(scored)
                        for t in episode.turns if t.role == "student" and t.teacher_scores and t.token_ids]
    return lessons


def group_pair_lessons(episodes: Iterable[Episode], verify: Verifier, encode: TokenEncoder, *,
                       objectives: set[str]) -> list[Lesson]:
    """Pairs within one problem's group of samples (REDI, METHODS B5, with the student's own failed
    attempts as the negatives): the i-th verified sample is preferred over the i-th failed one,
    each sample in at most one pair, so a group gives min(verified, failed) pairs per objective.
    Both sides are the ids as sampled, under the prompt they were sampled for. A chosen sample is
    verified again on its exact text; a sample whose text does not decode is on neither side."""
    lessons: list[Lesson] = []
    for episode in episodes:
        sampled = [t for t in episode.turns if t.role == "student" and t.token_ids and not undecodable(t.text)]
        chosen = [t for t in sampled if t.correct and verify(episode.problem, t.text).correct]
        failed = [t for t in sampled if t.correct is False]
        lessons += [Lesson(name, encode.prompt(good.prompt), good.token_ids, rejected_ids=bad.token_ids,
                           policy_version=good.policy_version, provenance="verified>failed")
                    for good, bad in zip(chosen, failed) for name in sorted(objectives & PAIR_OBJECTIVES)]
    return lessons


def demonstration_lessons(episodes: Iterable[Episode], verify: Verifier, encode: TokenEncoder) -> list[Lesson]:
    """SFT lessons from a teacher's demonstrations (Fine-tune-CoT, METHODS A1): every one the
    verifier accepted, checked again on its exact text, encoded once in the student's ids ending
    with EOS (the teacher's own ids are in its vocabulary), under the student's bare prompt."""
    lessons: list[Lesson] = []
    for episode in episodes:
        prompt_ids = encode.prompt(student_attempt(episode.problem))
        lessons += [Lesson("sft", prompt_ids, encode.text(t.text), provenance=f"teacher:{t.provenance}")
                    for t in verified_demonstrations(episode, verify)]
    return lessons


def step_by_step_lessons(episodes: Iterable[Episode], verify: Verifier, encode: TokenEncoder, *,
                         label_weight: float) -> list[Lesson]:
    """Distilling step-by-step's two tasks (METHODS A2) from each demonstration the verifier accepts:
    "[label] <problem>" → its answer line at weight α, "[rationale] <problem>" → the whole rationale
    at weight 1 − α. The label is the verified answer, so the teacher's label is the gold one."""
    lessons: list[Lesson] = []
    for episode in episodes:
        problem = episode.problem
        for turn in verified_demonstrations(episode, verify):
            label = answer_line(problem, verify(problem, turn.text).answer or "")
            source = f"teacher:{turn.provenance}"
            lessons += [Lesson("sft", encode.prompt(task_prefixed(problem, "label")), encode.text(label),
                               weight=label_weight, provenance=f"{source}:label"),
                        Lesson("sft", encode.prompt(task_prefixed(problem, "rationale")), encode.text(turn.text),
                               weight=1.0 - label_weight, provenance=f"{source}:rationale")]
    return lessons


def verified_demonstrations(episode: Episode, verify: Verifier) -> list[Turn]:
    """The teacher's demonstrations the verifier accepted, re-checked on their exact, decodable text."""
    return [t for t in episode.turns if t.role == "teacher" and t.kind == "demonstration" and t.correct
            and not undecodable(t.text) and verify(episode.problem, t.text).correct]


def tailored_lessons(episodes: Iterable[Episode], verify: Verifier, encode: TokenEncoder, *, prefix_weight: float,
                     objectives: set[str]) -> list[Lesson]:
    """Tailored learning's lessons (METHODS B1) from each exam item the student got wrong: every
    teacher rationale for that mistake whose solution the verifier accepts, under the student's bare
    prompt. SFT trains the prompt too at `prefix_weight` (Learn-to-Reason's mle_w: CE on all
    tokens, the prefix's scaled): the prompt becomes the target's head, its first token the context
    (nothing precedes it to predict it from). Pair objectives prefer the rationale over the wrong
    attempt as sampled (METHODS B1's DPO variant)."""
    lessons: list[Lesson] = []
    for episode in episodes:
        attempt = episode.turns[0]
        if attempt.correct is not False:
            continue
        prompt_ids = encode.prompt(attempt.prompt)
        for turn in episode.turns[1:]:
            text = split_correction(turn.text)[1]
            if turn.role != "teacher" or not turn.correct or undecodable(text):
                continue
            if not verify(episode.problem, text).correct:  # re-checked on the exact text trained on
                continue
            rationale, source = encode.text(text), f"teacher:{turn.provenance}"
            if "sft" in objectives:
                lessons.append(prefixed_sft(prompt_ids, rationale, prefix_weight, source))
            if attempt.token_ids and not undecodable(attempt.text):
                lessons += [Lesson(name, prompt_ids, rationale, rejected_ids=attempt.token_ids,
                                   provenance=f"{source}>attempt") for name in sorted(objectives & PAIR_OBJECTIVES)]
    return lessons


def prefixed_sft(prompt_ids: tuple[int, ...], target: tuple[int, ...], prefix_weight: float, source: str) -> Lesson:
    """SFT on prompt and target, the prompt's tokens at `prefix_weight` (0: the prompt stays context)."""
    if not prefix_weight or len(prompt_ids) < 2:
        return Lesson("sft", prompt_ids, target, provenance=source)
    head = prompt_ids[1:]
    weights = (prefix_weight,) * len(head) + (1.0,) * len(target)
    return Lesson("sft", prompt_ids[:1], head + target, token_weights=weights, provenance=source)


def gkd_lessons(episodes: Iterable[Episode], encode: TokenEncoder) -> list[Lesson]:
    """`kd` lessons of GKD's λ gate (METHODS C1): the student's own sample scored by the teacher
    (on-policy), or the reference solution in the student's ids scored by the teacher (the dataset
    side, policy_version None: no policy sampled it, so the buffer never finds it stale)."""
    lessons = []
    for turn in (t for e in episodes for t in e.turns if t.teacher_scores and t.token_ids):
        if turn.role == "student":
            lessons.append(replace(scored_lesson(encode, turn), provenance="student:on_policy"))
        elif turn.role == "reference":
            lessons.append(replace(scored_lesson(encode, turn), policy_version=None, provenance="reference"))
    return lessons


def soft_label_lessons(episodes: Iterable[Episode], verify: Verifier, encode: TokenEncoder) -> list[Lesson]:
    """`kd` lessons of Mentor-KD's soft labels (METHODS A3): each verified demonstration its teacher
    scored as the student's target, on the prompt and target ids of its SFT lesson
    (`demonstration_lessons`), checked again on its exact text. policy_version None: the student's
    policy sampled none of it, so the buffer never finds it stale."""
    return [Lesson("kd", encode.prompt(t.prompt), t.token_ids, teacher=t.teacher_scores, policy_version=None,
                   provenance=f"teacher:{t.provenance}:soft_label")
            for e in episodes for t in e.turns
            if t.kind == "soft_label" and t.teacher_scores and t.token_ids and t.correct
            and not undecodable(t.text) and verify(e.problem, t.text).correct]


def target_ids(encode: TokenEncoder, text: str, turn: Turn) -> tuple[int, ...]:
    """The student's own revision as it sampled it; a teacher's text encoded once, ending with EOS."""
    if turn.role == "student" and turn.token_ids:
        return turn.token_ids
    return encode.text(text)


def accepted_targets(episode: Episode, verify: Verifier) -> list[tuple[str, str, Turn]]:
    """(text, provenance, turn) of every verified teacher correction and accepted student revision."""
    out = []
    for turn in episode.turns:
        if turn.role == "teacher" and turn.correct:
            text, source = split_correction(turn.text)[1], f"teacher:{turn.provenance}"
        elif turn.role == "student" and turn.kind == "revision" and turn.correct:
            text, source = turn.text, "revision"
        else:
            continue
        if text and verify(episode.problem, text).correct and not undecodable(text):
            out.append((text, source, turn))
    return out


def scored_lesson(encode: TokenEncoder, turn: Turn) -> Lesson:
    """A student turn with the teacher's scores of its tokens (kd, opd_pg)."""
    assert turn.teacher_scores is not None
    return Lesson("kd", encode.prompt(turn.prompt), turn.token_ids, behavior_logprobs=turn.logprobs,
                  teacher=turn.teacher_scores, policy_version=turn.policy_version)


# --- tutoring dialogues → lessons for the tutor --------------------------------------------------


def to_tutor_lessons(dialogues: Iterable[Episode], encode: TokenEncoder, *, objectives: set[str]) -> list[Lesson]:
    """Lessons for the tutor from dialogues (simulated or recorded), under the prompt the tutor saw.

    SFT: every tutor turn of a dialogue in which the student reached the answer without being told.
    DPO: in such a dialogue, each spoken tutor turn is preferred over every alternative the tutor
    sampled for the same prompt that states the answer (a turn that led to success over one that
    told). The env's fixed opening is nobody's choice and never a target. Tutor texts are cut to
    one utterance after sampling, so they are encoded (no EOS on the rejected side).
    PG: every sampled tutor turn of every dialogue, with the dialogue's advantage (`tutor_pg_lessons`).
    """
    dialogues = list(dialogues)  # read twice with pg: its baseline is the mean over all of them
    lessons = [lesson for dialogue in dialogues for lesson in success_lessons(dialogue, encode, objectives)]
    if "pg" in objectives:
        lessons += tutor_pg_lessons(dialogues, encode)
    return lessons


def success_lessons(dialogue: Episode, encode: TokenEncoder, objectives: set[str]) -> list[Lesson]:
    """SFT and DPO lessons of one dialogue: none unless the student succeeded without being told."""
    success, telling = outcome(dialogue.turns, dialogue.problem.answer)
    if not success or telling:
        return []
    lessons: list[Lesson] = []
    pairs = objectives & PAIR_OBJECTIVES
    for turn in dialogue.turns:
        if turn.role != "tutor" or turn.provenance == "env" or not turn.text:
            continue
        prompt_ids, chosen = encode.prompt(turn.prompt), encode.text(turn.text)
        if "sft" in objectives:
            lessons.append(Lesson("sft", prompt_ids, chosen, provenance=f"tutor:{turn.provenance}"))
        lessons += [Lesson(name, prompt_ids, chosen, rejected_ids=encode.text(alt, eos=False),
                           provenance="success>telling")
                    for alt in turn.alternatives if contains_number(alt, dialogue.problem.answer or "")
                    for name in sorted(pairs)]
    return lessons


def tutor_pg_lessons(dialogues: Sequence[Episode], encode: TokenEncoder) -> list[Lesson]:
    """`pg` lessons: how the reward success − λ·telling (`dialogue_rewards`, λ = env.telling_penalty)
    reaches the tutor's gradient. Every tutor turn the model sampled, in every dialogue (successful
    or not), is a lesson with the dialogue's advantage A = reward − mean reward of `dialogues`.

    The baseline is the batch's: the env passes one round's dialogues per call, so A compares a
    dialogue with the others of its round; every dialogue passed counts in it, also one without a
    sampled turn. With a single dialogue A = 0 and the lessons teach nothing. All turns of a dialogue share its A (the reward is the whole dialogue's). The env's
    opening was not sampled, and recorded dialogues (MathDial) have no token ids or behaviour
    log-probs: neither becomes a lesson. Targets are the ids as sampled, which the behaviour
    log-probs are aligned with (the text was cut to one utterance afterwards; the ids were not).
    """
    if not dialogues:
        return []
    baseline = sum(d.rewards["reward"] for d in dialogues) / len(dialogues)
    return [Lesson("pg", encode.prompt(turn.prompt), turn.token_ids, behavior_logprobs=turn.logprobs,
                   policy_version=turn.policy_version, advantage=dialogue.rewards["reward"] - baseline,
                   provenance="tutor:reward")
            for dialogue in dialogues for turn in dialogue.turns if sampled_tutor_turn(turn)]


def sampled_tutor_turn(turn: Turn) -> bool:
    """A tutor turn the trained model sampled, with what a policy gradient needs of it."""
    return turn.role == "tutor" and turn.provenance != "env" and bool(turn.token_ids) and bool(turn.logprobs)
