"""Held-out and benchmark evaluation of the student from each problem's bare prompt: pass@1 from one
greedy reply, pass@k from n sampled replies per problem with the unbiased estimator of Chen et al.
2021 ("Evaluating Large Language Models Trained on Code", eq. 1)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from tutorloop.envs.prompts import chat_attempt, student_attempt
from tutorloop.graders import ANSWER_STOP, BOXED_STOP, verify, verify_last_number
from tutorloop.types import Problem, SamplingParams


@dataclass(frozen=True, slots=True)
class ProblemResult:
    id: str
    correct: bool
    """The greedy reply's verdict."""
    answer: str | None
    """The final answer extracted from the greedy reply (a number, or a \\boxed{} body for latex)."""
    reply: str
    """The greedy reply itself, to read what went wrong."""
    sampled_correct: int = 0
    """Sampled replies (of `EvalResult.samples`) that were correct; 0 when pass@k is off."""


@dataclass(frozen=True, slots=True)
class EvalResult:
    records: tuple[ProblemResult, ...]
    k: int = 0
    samples: int = 0
    """n of pass@k: sampled replies per problem (0 when pass@k is off)."""

    @property
    def pass_at_1(self) -> float:
        """Greedy accuracy."""
        return sum(r.correct for r in self.records) / max(len(self.records), 1)

    @property
    def pass_at_k(self) -> float | None:
        if not self.k or not self.records:
            return None
        return sum(pass_at_k(self.samples, r.sampled_correct, self.k) for r in self.records) / len(self.records)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem from n samples of which c are correct: 1 - C(n-c,k)/C(n,k),
    the chance that k of the n drawn without replacement hold at least one correct sample. Python's
    integers are exact, so the binomials never overflow or round before the one division."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


async def evaluate(generator: Any, problems: Sequence[Problem], *, max_new_tokens: int, k: int = 0,
                   samples: int = 0, temperature: float = 0.8) -> EvalResult:
    """Greedy replies for pass@1, then, when k > 0, `samples` (0: k) sampled replies per problem for pass@k."""
    n = samples or k
    greedy = await _replies(generator, problems, SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens,
                                                                stop_regex=stop_regex(problems)))
    sampled_correct = [0] * len(problems)
    if k:
        params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, n=n,
                                stop_regex=stop_regex(problems))
        replies = await _replies(generator, problems, params)
        sampled_correct = [sum(verify(p, text).correct for text in replies[i * n:(i + 1) * n])
                           for i, p in enumerate(problems)]
    records = []
    for problem, reply, c in zip(problems, greedy, sampled_correct):
        verdict = verify(problem, reply)
        records.append(ProblemResult(id=problem.id, correct=verdict.correct, answer=verdict.answer, reply=reply,
                                     sampled_correct=c))
    return EvalResult(records=tuple(records), k=k, samples=n if k else 0)


async def greedy_accuracy(generator: Any, problems: Sequence[Problem], *, max_new_tokens: int) -> dict[str, float]:
    """The training loop's eval before and after the rounds: greedy pass@1 on the held-out split."""
    result = await evaluate(generator, problems, max_new_tokens=max_new_tokens)
    correct = sum(r.correct for r in result.records)
    return {"accuracy": result.pass_at_1, "correct": float(correct), "total": float(len(problems))}


async def accuracy_report(generator: Any, problems: Sequence[Problem], label: str | None, *,
                          max_new_tokens: int) -> tuple[dict[str, float], str]:
    """Greedy accuracy as an env reports it: `eval/accuracy_<label>`, or `eval/accuracy` during
    training (label None), and the line that says it."""
    result = await greedy_accuracy(generator, problems, max_new_tokens=max_new_tokens)
    key = f"eval/accuracy_{label}" if label else "eval/accuracy"
    line = f"{result['accuracy']:.3f} ({result['correct']:.0f}/{result['total']:.0f}, greedy, held-out split)"
    return {key: result["accuracy"]}, f"accuracy {line}"


async def chat_accuracy(generator: Any, problems: Sequence[Problem], *, max_new_tokens: int) -> float:
    """Greedy accuracy under the plain chat prompt that asks for step-by-step reasoning, each reply
    graded on its last number. No stop pattern: the reply ends where the model ends it."""
    if not problems:
        return 0.0
    outs = await generator.generate([chat_attempt(p) for p in problems],
                                    SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens))
    return sum(verify_last_number(p, out.text).correct for p, out in zip(problems, outs)) / len(problems)


async def transfer_report(env: Any, agents: Any, problems: Sequence[Problem], label: str, *, source: str,
                          max_new_tokens: int) -> tuple[dict[str, float], str]:
    """The student on the transfer set under the run's own eval prompt (the env's `evaluate`, renamed
    `eval/transfer_accuracy_<label>`) and under the chat prompt (`eval/transfer_chat_accuracy_<label>`),
    and the line that reports both."""
    train, _ = await env.evaluate(agents, problems, label, max_new_tokens=max_new_tokens)
    metrics = {key.replace("eval/", "eval/transfer_", 1): value for key, value in train.items()}
    chat = await chat_accuracy(agents[env.parts["student"]].generator, problems, max_new_tokens=max_new_tokens)
    metrics[f"eval/transfer_chat_accuracy_{label}"] = chat
    line = (f"transfer {metrics[f'eval/transfer_accuracy_{label}']:.3f} under the run's prompt, {chat:.3f} under "
            f"a step-by-step chat prompt ({len(problems)} problems, {source}, greedy)")
    return metrics, line


def stop_regex(problems: Sequence[Problem]) -> str | None:
    """Where a reply is done: after "The answer is N." for numeric problems, after a closed \\boxed{}
    for latex ones. One generate call takes one pattern, so a mix of the two runs to the token limit."""
    formats = {p.answer_format for p in problems}
    return {frozenset({"number"}): ANSWER_STOP, frozenset({"latex"}): BOXED_STOP}.get(frozenset(formats))


def result_record(result: EvalResult) -> dict[str, Any]:
    """The scores and per-problem records as plain JSON data."""
    return {"num_problems": len(result.records), "pass@1": result.pass_at_1, "k": result.k,
            "samples": result.samples, "pass@k": result.pass_at_k,
            "records": [asdict(r) for r in result.records]}


async def _replies(generator: Any, problems: Sequence[Problem], params: SamplingParams) -> list[str]:
    if not problems:
        return []
    outs = await generator.generate([student_attempt(p) for p in problems], params)
    return [out.text for out in outs]


class SolvesBareProblems:
    """What envs whose student attempts each bare problem share (correction, rollouts): problems as
    they come, no lessons before round 0, and the student's greedy accuracy as the evaluation."""

    parts: dict[str, str]

    def problems(self, pool: Any) -> Any:
        """Every problem as it comes: the student attempts its bare prompt."""
        return pool

    def prelude(self, pool: Any) -> list[Any]:
        """No lessons before round 0."""
        return []

    async def evaluate(self, agents: Any, problems: Sequence[Problem], label: str | None, *,
                       max_new_tokens: int) -> tuple[dict[str, float], str]:
        """Greedy accuracy of the student's bare attempts: `eval/accuracy_<label>`, or `eval/accuracy`
        during training (label None), and the line that reports it."""
        return await accuracy_report(agents[self.parts["student"]].generator, problems, label,
                                     max_new_tokens=max_new_tokens)
