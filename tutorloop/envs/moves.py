"""The steps envs are made of, as small async functions of an agent handle and the problem: attempt,
verify, demonstrate, review (or reviews, n candidates) and score for the correction env;
demonstrations (n at a temperature) for the distill env; speak and tag for dialogues.

A move builds the prompt (`prompts`), samples from the agent it is given and returns a Turn under
the part that agent plays (`part`: "student", "teacher", ...; lessons and metrics read parts, never
agent names). Where a reply must stop is the move's business too: an answer stops after its final
line, a dialogue reply where a model starts writing the other side's.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

from tutorloop.agents.protocol import AgentHandle
from tutorloop.envs import prompts
from tutorloop.graders import ANSWER_STOP, Verdict, contains_number
from tutorloop.types import MOVES, Completion, Messages, Problem, SamplingParams, TokenScores, Turn

Verifier = Callable[[Problem, str], Verdict]
_MOVE_WORD = re.compile(rf"\b({'|'.join(MOVES)})\b", re.IGNORECASE)


def stopping(agent: AgentHandle, stop: str | None) -> SamplingParams:
    return dataclasses.replace(agent.sampling, stop_regex=stop)


def _turn(part: str, out: Completion, prompt: Messages, kind: str, agent: AgentHandle, text: str | None = None) -> Turn:
    return Turn(role=part, text=out.text if text is None else text, prompt=prompt, kind=kind,
                token_ids=out.token_ids, logprobs=out.logprobs, policy_version=out.policy_version,
                provenance=agent.provenance)


# --- correction: attempt, verify, demonstrate, review, score -------------------------------------


async def attempt(agent: AgentHandle, problem: Problem, history: Sequence[Turn] = (), *, part: str = "student") -> Turn:
    """The student's first attempt, or (after feedback) its revision of the latest attempt."""
    attempts = [t for t in history if t.role == part]
    feedback = [t for t in history if t.role == "mentor"]
    if attempts:  # revise the latest attempt in the light of the latest feedback
        prompt, kind = prompts.student_revision(problem, attempts[-1].text, feedback[-1].text if feedback else ""), "revision"
    else:
        prompt, kind = prompts.student_attempt(problem), "attempt"
    (out,) = await agent.sample(prompt, sampling=stopping(agent, ANSWER_STOP))
    return _turn(part, out, prompt, kind, agent)


async def attempts(agent: AgentHandle, problem: Problem, n: int, *, part: str = "student") -> list[Turn]:
    """n attempts at the bare problem, sampled in one call (a group: same prompt, same policy)."""
    prompt = prompts.student_attempt(problem)
    outs = await agent.sample(prompt, n=n, sampling=stopping(agent, ANSWER_STOP))
    return [_turn(part, out, prompt, "attempt", agent) for out in outs]


def verify(turn: Turn, problem: Problem, verifier: Verifier) -> Turn:
    """The turn with the verifier's verdict on its final answer."""
    verdict = verifier(problem, turn.text)
    return dataclasses.replace(turn, correct=verdict.correct, answer=verdict.answer)


async def demonstrate(agent: AgentHandle, problem: Problem, attempt_text: str, *, num_candidates: int,
                      verifier: Verifier, part: str = "teacher") -> Turn:
    """A verified correction of the attempt: the first of `num_candidates` whose solution the verifier
    accepts; else the reference solution under the first candidate's diagnosis (provenance
    "reference"), so unverified text never becomes a training target."""
    prompt = prompts.teacher_correction(problem, attempt_text)
    candidates = await agent.sample(prompt, n=num_candidates, sampling=stopping(agent, ANSWER_STOP))
    for out in candidates:
        verdict = verifier(problem, prompts.split_correction(out.text)[1])
        if verdict.correct:
            return Turn(role=part, text=out.text, prompt=prompt, kind="correction", correct=True,
                        answer=verdict.answer, provenance=agent.provenance)
    diagnosis, _ = prompts.split_correction(candidates[0].text) if candidates else ("", "")
    if problem.solution:
        verdict = verifier(problem, problem.solution)
        text = f"Mistake: {diagnosis or prompts.NO_DIAGNOSIS}\nSolution: {problem.solution}"
        return Turn(role=part, text=text, prompt=prompt, kind="correction", correct=verdict.correct,
                    answer=verdict.answer, provenance="reference")
    return Turn(role=part, text=candidates[0].text if candidates else "", prompt=prompt, kind="correction",
                correct=False, provenance=agent.provenance)


async def demonstrations(agent: AgentHandle, problem: Problem, n: int, *, temperature: float, privileged: bool,
                         verifier: Verifier, part: str = "teacher") -> list[Turn]:
    """n solutions of the problem sampled in one call at `temperature` (diverse reasoning,
    Fine-tune-CoT), each with the verifier's verdict. `privileged`: the reference solution is in the
    agent's context (`prompts.privileged`); else the student's bare prompt."""
    bare = prompts.student_attempt(problem)
    prompt = prompts.privileged(bare, problem) if privileged else bare
    sampling = dataclasses.replace(agent.sampling, temperature=temperature, stop_regex=ANSWER_STOP)
    outs = await agent.sample(prompt, n=n, sampling=sampling)
    return [verify(_turn(part, out, prompt, "demonstration", agent), problem, verifier) for out in outs]


async def tailored_rationales(agent: AgentHandle, problem: Problem, attempt_text: str, n: int, *,
                              verifier: Verifier, part: str = "teacher") -> list[Turn]:
    """n corrections of the student's wrong attempt sampled in one call (Tailored learning's teacher
    feedback: the prompt holds the attempt and the reference solution), each with the verifier's
    verdict on its solution part. Unlike `demonstrate` no reference stands in: only what the teacher
    wrote for this mistake can become a lesson."""
    prompt = prompts.teacher_correction(problem, attempt_text)
    outs = await agent.sample(prompt, n=n, sampling=stopping(agent, ANSWER_STOP))
    turns = []
    for out in outs:
        verdict = verifier(problem, prompts.split_correction(out.text)[1])
        turns.append(dataclasses.replace(_turn(part, out, prompt, "correction", agent), correct=verdict.correct,
                                         answer=verdict.answer))
    return turns


async def review(agent: AgentHandle, problem: Problem, attempt_text: str, correction: Turn | None, *,
                 part: str = "mentor") -> Turn:
    """Feedback on the attempt from the correction's diagnosis, never its solution. A small model
    leaks the answer easily, so whole-number occurrences of it are redacted (provenance "redacted")."""
    prompt = _feedback_prompt(problem, attempt_text, correction)
    (out,) = await agent.sample(prompt)
    text, provenance = _leak_free(problem, out.text, agent.provenance)
    return Turn(role=part, text=text or prompts.NO_DIAGNOSIS, prompt=prompt, kind="feedback", provenance=provenance)


async def reviews(agent: AgentHandle, problem: Problem, attempt_text: str, correction: Turn | None, n: int, *,
                  part: str = "mentor") -> list[Turn]:
    """n feedback candidates for the same prompt, sampled in one call, each redacted for the student
    as `review` redacts. Each keeps its sampled token ids, log-probs and policy version: the mentor's
    own targets, as sampled (a redacted candidate's ids are what it said, answer included)."""
    prompt = _feedback_prompt(problem, attempt_text, correction)
    turns = []
    for out in await agent.sample(prompt, n=n):
        text, provenance = _leak_free(problem, out.text, agent.provenance)
        turn = _turn(part, out, prompt, "feedback", agent, text or prompts.NO_DIAGNOSIS)
        turns.append(dataclasses.replace(turn, provenance=provenance))
    return turns


def _feedback_prompt(problem: Problem, attempt_text: str, correction: Turn | None) -> Messages:
    diagnosis = prompts.split_correction(correction.text)[0] if correction else ""
    return prompts.mentor_feedback(problem, attempt_text, diagnosis or prompts.NO_DIAGNOSIS)


def _leak_free(problem: Problem, text: str, provenance: str) -> tuple[str, str]:
    """The feedback with the answer redacted, and its provenance ("redacted" if it stated the answer)."""
    if problem.answer and contains_number(text, problem.answer):
        return redact_number(text, problem.answer), "redacted"
    return text, provenance


async def score(agent: AgentHandle, problem: Problem, turn: Turn, top_k: int, *,
                privileged: bool = True) -> TokenScores:
    """The agent's log-probs (and top-k) of a turn's own tokens, with the reference solution added to
    the turn's context (privileged self-distillation; `privileged` false: the turn's context as it
    was). Aligned to the token ids, never re-tokenized."""
    context = prompts.privileged(turn.prompt, problem) if privileged else turn.prompt
    return await agent.score(context, turn.token_ids, top_k)


def redact_number(text: str, number: str) -> str:
    """Replace whole-number occurrences of `number` (with or without thousands commas) by '…'."""
    digits = number.lstrip("-")
    grouped = f"{int(float(digits)):,}" if digits.replace(".", "", 1).isdigit() and "." not in digits else digits
    pattern = rf"(?<![\d.,])(?:{'|'.join(map(re.escape, {digits, grouped}))})(?![\d]|[.,]\d)"
    return re.sub(pattern, "…", text)


# --- dialogue: speak, tag ------------------------------------------------------------------------


async def tutor_says(agent: AgentHandle, problem: Problem, history: Sequence[Turn], *, num_candidates: int = 1) -> Turn:
    """One tutor utterance. `num_candidates` replies are sampled for the same prompt and the first is
    said, so what the student hears is an honest sample; the others are kept as `alternatives`
    (DPO rejects when they give the answer away). Token ids are the spoken sample's as generated;
    its text is cut to one utterance (small models go on to write the student's side too)."""
    prompt = prompts.tutor_turn(problem, history)
    first, *rest = await agent.sample(prompt, n=num_candidates, sampling=stopping(agent, prompts.NEXT_SPEAKER_STOP))
    if first.finish_reason == "quit":
        return _quit("tutor", agent)
    name = prompts.student_name(problem)
    return dataclasses.replace(_turn("tutor", first, prompt, "utterance", agent, prompts.one_utterance(first.text, name)),
                               alternatives=tuple(prompts.one_utterance(out.text, name) for out in rest))


async def student_says(agent: AgentHandle, problem: Problem, history: Sequence[Turn]) -> Turn:
    """The simulated student's reply: its persona and its own wrong solution, which it believes."""
    prompt = prompts.sim_student_turn(problem, history)
    (out,) = await agent.sample(prompt, sampling=stopping(agent, prompts.NEXT_SPEAKER_STOP))
    if out.finish_reason == "quit":
        return _quit("sim_student", agent)
    return _turn("sim_student", out, prompt, "utterance", agent, prompts.one_utterance(out.text, prompts.student_name(problem)))


async def tag(agent: AgentHandle, problem: Problem, history: Sequence[Turn], tutor: Turn) -> str:
    """The MathDial move of the tutor's turn, by asking the agent. A turn that states the gold answer
    is `telling` whatever the model says (exactly what telling@k counts); a reply that names no
    move is `generic`."""
    (out,) = await agent.sample(prompts.tag_move(history, tutor))
    if problem.answer and contains_number(tutor.text, problem.answer):
        return "telling"
    return parse_move(out.text)


def parse_move(reply: str) -> str:
    """The first move word in the reply ("Probing." -> "probing"), else "generic"."""
    match = _MOVE_WORD.search(reply)
    return match.group(1).lower() if match else "generic"


def _quit(part: str, agent: AgentHandle) -> Turn:
    """A person ended the dialogue (/quit or end of input): the env stops; the turn is not kept."""
    return Turn(role=part, text="", prompt=(), kind="quit", provenance=agent.provenance)
