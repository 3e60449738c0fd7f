"""The intervention env: teacher explanations with Theory of Mind under a budget (Saha, Hase,
Bansal, NeurIPS 2023, "Can Language Models Teach Weaker Agents? Teacher Explanations Improve
Students via Personalization"; code swarnaHub/ExplanationIntervention; METHODS E1, the `top_fraction_by`
gate of §4.7).

A round's problems are ranked together, so this env answers `run_round(problems, agents)`, which
the loop calls in place of one `run` per problem (`protocol.RoundEnv`):

1. The mental model (the teacher agent, told to simulate the student) gives, per problem,
   P_no = P(student correct | no intervention) and P_int = P(student correct | teacher
   explanation), each the mean probability of the gold answer's tokens after "The answer is"
   (the paper's GSM8K rule: averaged answer-digit probabilities; whitespace-only tokens are not
   digits and are skipped), under two prompts: the student's own prompt, and the student's prompt
   with an explanation in it. The utility is U = P_int - P_no (the paper's `mm_both`).
2. The problems are ranked by the `policy` (`utility`: U descending; `random`: a seeded coin per
   problem id; `least_confident`: the student's OWN probability of the gold answer under its bare
   prompt, ascending, the paper's lowest-student-confidence baseline); ties go to the smaller
   problem id, so the ranking is independent of the order problems come in. The first
   floor(b * n) are intervened on (b = `budget`, a cap: never more than the fraction b), no others.
3. For each intervened problem the teacher writes an explanation (with the reference solution in
   its context when `privileged`), which goes into the student's prompt; the teacher is not called
   for the others. The student then answers every problem once: with the explanation if
   intervened, bare otherwise.

Unverified or changed relative to the paper (METHODS §5): the paper's mental model sees 4 examples
of this student's own predictions (and 4 after explanations); here it has a fixed zero-shot prompt
(`SIMULATE_SYSTEM`), because the env keeps no state between rounds. The paper's P_int context holds
the teacher's explanation of that item, which needs an explanation for every item; here the
reference solution stands in for it, so the teacher explains only the items it intervenes on.

Training is our extension (the paper is test-time only): with `sft`, each intervened problem the
student then answered correctly (verified again on its exact text) trains the student's sampled
ids under its BARE prompt, so it learns to give unaided what it gave with the explanation.
A problem without a gold answer has U = 0. `run(problem)` is a round of one (floor(b) = 0 unless b = 1).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tutorloop.agents.protocol import AgentHandle
from tutorloop.config import InterventionEnvConfig, RunConfig
from tutorloop.envs import moves
from tutorloop.envs.correction import reply_counts
from tutorloop.envs.evaluation import SolvesBareProblems
from tutorloop.envs.learning import agent_encoder, learner_kwargs
from tutorloop.envs.prompts import student_attempt
from tutorloop.graders import ANSWER_STOP, undecodable, verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Messages, Problem, StopReason, Turn

COLUMNS = (("round", "round", "{:.0f}"), ("explained", "intervention/share", "{:.2f}"),
           ("acc", "intervention/accuracy", "{:.2f}"), ("acc expl", "intervention/accuracy_explained", "{:.2f}"),
           ("acc bare", "intervention/accuracy_bare", "{:.2f}"), ("U expl", "intervention/utility_explained", "{:.2f}"),
           ("U bare", "intervention/utility_bare", "{:.2f}"), ("sft", "loss/sft", "{:.3f}"),
           ("s", "round/seconds", "{:.1f}"))
"""The console's per-round table as (title, metric key, format)."""

EXPLAIN_SYSTEM = "You are a math teacher. Reference solution:\n{solution}"
EXPLAIN_ASK = "Problem: {problem}\n\nExplain to a student, step by step, how to solve this problem."
EXPLAIN_BARE = "You are a math teacher."
EXPLAINED = "{problem}\n\nA teacher's explanation:\n{explanation}"
SIMULATE_SYSTEM = "Simulate how a student answers this problem. The student was told: {student_system}"
ANSWER_PREFIX = "The answer is"


@dataclass(frozen=True, slots=True)
class Utility:
    """The mental model's two predictions for one problem (and the student's own confidence, for
    the least-confident baseline)."""

    p_no: float
    p_int: float
    confidence: float = 0.0

    @property
    def value(self) -> float:
        """U = P_int - P_no: what the explanation is predicted to add."""
        return self.p_int - self.p_no


def explained_prompt(problem: Problem, explanation: str) -> Messages:
    """The student's prompt with the teacher's explanation after the problem."""
    system, user = student_attempt(problem)
    return (system, {"role": "user", "content": EXPLAINED.format(problem=user["content"], explanation=explanation)})


def simulated_prompt(problem: Problem, explanation: str | None) -> Messages:
    """The mental model's context: the student's prompt (with `explanation`, if any) under an
    instruction to simulate the student."""
    system, user = student_attempt(problem) if explanation is None else explained_prompt(problem, explanation)
    return ({"role": "system", "content": SIMULATE_SYSTEM.format(student_system=system["content"])}, user)


def answer_target(encode: TokenEncoder, answer: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """'The answer is <gold>' in the scorer's ids, and the positions of the answer's tokens in it
    (whitespace-only tokens left out: they are not digits)."""
    head, tail = encode.text(ANSWER_PREFIX, eos=False), encode.text(f" {answer}", eos=False)
    positions = tuple(len(head) + i for i, t in enumerate(tail) if encode.tokenizer.decode([t]).strip())
    return head + tail, positions


async def answer_probability(agent: AgentHandle, context: Messages, encode: TokenEncoder, answer: str) -> float:
    """The mean probability the agent gives the gold answer's tokens after "The answer is"."""
    target, positions = answer_target(encode, answer)
    logprobs = (await agent.score(context, target, 0)).logprobs
    return sum(math.exp(logprobs[i]) for i in positions) / max(len(positions), 1)


def budget_count(budget: float, n: int) -> int:
    """How many of n problems the budget b allows: floor(b * n) (a float product such as 0.29 * 100
    may fall just under its integer)."""
    return math.floor(budget * n + 1e-9)


def coin(seed: int, problem_id: str) -> float:
    """The random policy's draw for a problem: seeded by (run seed, problem id), order-free."""
    return random.Random(f"tom-{seed}-{problem_id}").random()


def ranking(problems: Sequence[Problem], utilities: Sequence[Utility], policy: str, seed: int) -> list[int]:
    """Problem indices, the first to intervene on first; ties by problem id, then position."""
    keys = {"utility": lambda i: -utilities[i].value, "random": lambda i: coin(seed, problems[i].id),
            "least_confident": lambda i: utilities[i].confidence}[policy]
    return sorted(range(len(problems)), key=lambda i: (keys(i), problems[i].id, i))


class InterventionEnv(SolvesBareProblems):
    columns = COLUMNS

    def __init__(self, parts: Mapping[str, str] | None = None, *, budget: float = 0.4, policy: str = "utility",
                 privileged: bool = True, objectives: frozenset[str] = frozenset(), verifier: moves.Verifier = verify,
                 encode: TokenEncoder | None = None, learner: str = "student",
                 score_encode: Mapping[str, TokenEncoder] | None = None, seed: int = 0) -> None:
        """parts: student, teacher → agent names (the teacher is also the mental model). budget: b.
        policy: utility, random or least_confident. privileged: the reference solution in the teacher's explanation
        prompt. encode: the student's tokenizer (lessons). score_encode: part → the tokenizer its
        scores are in (the teacher's; the student's too for `least_confident`)."""
        self.parts = dict(parts or {"student": "student", "teacher": "teacher"})
        self.budget, self.policy, self.privileged, self.objectives = budget, policy, privileged, objectives
        self.verifier, self.encode, self.learner, self.seed = verifier, encode, learner, seed
        self.score_encode = dict(score_encode or {})

    @classmethod
    def from_config(cls, cfg: RunConfig) -> InterventionEnv:
        env = cfg.env
        assert isinstance(env, InterventionEnvConfig)
        kwargs = learner_kwargs(cfg, "student")
        scorers = {"teacher": agent_encoder(cfg, env.teacher)}
        if env.policy == "least_confident":
            scorers["student"] = kwargs["encode"] or agent_encoder(cfg, env.student)
        return cls(env.parts(), budget=env.budget, policy=env.policy, privileged=env.privileged, **kwargs,
                   score_encode=scorers, seed=cfg.seed)

    async def run(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> Episode:
        """One problem as a round of one."""
        (episode,) = await self.run_round([problem], agents)
        return episode

    async def run_round(self, problems: Sequence[Problem], agents: Mapping[str, AgentHandle]) -> list[Episode]:
        """The round's utilities, its ranking, then every problem's episode (module doc)."""
        utilities = await asyncio.gather(*(self._utility(p, agents) for p in problems))
        order = ranking(problems, utilities, self.policy, self.seed)
        rank = {i: r for r, i in enumerate(order)}
        k = budget_count(self.budget, len(problems))
        return list(await asyncio.gather(*(self._episode(p, u, rank[i], len(problems), rank[i] < k, agents)
                                           for i, (p, u) in enumerate(zip(problems, utilities)))))

    async def _utility(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> Utility:
        if not problem.answer:
            return Utility(0.0, 0.0)
        mental, encode = agents[self.parts["teacher"]], self.score_encode["teacher"]
        reference = problem.solution or f"The answer is {problem.answer}."
        p_no, p_int = await asyncio.gather(
            answer_probability(mental, simulated_prompt(problem, None), encode, problem.answer),
            answer_probability(mental, simulated_prompt(problem, reference), encode, problem.answer))
        confidence = 0.0
        if self.policy == "least_confident":
            confidence = await answer_probability(agents[self.parts["student"]], student_attempt(problem),
                                                  self.score_encode["student"], problem.answer)
        return Utility(p_no, p_int, confidence)

    async def _episode(self, problem: Problem, utility: Utility, rank: int, n: int, intervene: bool,
                       agents: Mapping[str, AgentHandle]) -> Episode:
        turns = [mental_model_turn(problem, utility, rank, n, intervene)]
        prompt = student_attempt(problem)
        if intervene:
            explanation = await self._explain(agents[self.parts["teacher"]], problem)
            turns.append(explanation)
            prompt = explained_prompt(problem, explanation.text)
        student = agents[self.parts["student"]]
        (out,) = await student.sample(prompt, sampling=moves.stopping(student, ANSWER_STOP))
        answer = Turn(role="student", text=out.text, prompt=prompt, kind="explained_attempt" if intervene else "attempt",
                      token_ids=out.token_ids, logprobs=out.logprobs, policy_version=out.policy_version,
                      provenance=student.provenance)
        answer = moves.verify(answer, problem, self.verifier)
        rewards = {"p_no": utility.p_no, "p_int": utility.p_int, "utility": utility.value,
                   "confidence": utility.confidence, "rank": float(rank), "intervened": float(intervene),
                   "correct": float(answer.correct is True)}
        return Episode(problem=problem, turns=(*turns, answer), rewards=rewards,
                       stop=StopReason.SOLVED if answer.correct else StopReason.MAX_ROUNDS)

    async def _explain(self, teacher: AgentHandle, problem: Problem) -> Turn:
        """The teacher's explanation for the student (the reference in its context when privileged)."""
        solution = problem.solution or f"The answer is {problem.answer}."
        system = EXPLAIN_SYSTEM.format(solution=solution) if self.privileged else EXPLAIN_BARE
        prompt = ({"role": "system", "content": system},
                  {"role": "user", "content": EXPLAIN_ASK.format(problem=problem.prompt)})
        (out,) = await teacher.sample(prompt)
        return Turn(role="teacher", text=out.text, prompt=prompt, kind="explanation", token_ids=out.token_ids,
                    logprobs=out.logprobs, policy_version=out.policy_version, provenance=teacher.provenance)

    def lessons(self, episodes: Sequence[Episode]) -> list[Lesson]:
        """SFT on the student's verified answers given an explanation, under its bare prompt."""
        if "sft" not in self.objectives:
            return []
        assert self.encode is not None, "lessons need the student's tokenizer (encode=)"
        out = []
        for episode in episodes:
            answer = episode.turns[-1]
            if answer.kind != "explained_attempt" or not answer.correct or not answer.token_ids:
                continue
            if undecodable(answer.text) or not self.verifier(episode.problem, answer.text).correct:
                continue
            out.append(Lesson("sft", self.encode.prompt(student_attempt(episode.problem)), answer.token_ids,
                              policy_version=answer.policy_version, learner=self.learner, provenance="explained"))
        return out

    def metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """The share intervened on, accuracy with and without an explanation, and the mean utility of each side."""
        sides = {"explained": [e for e in episodes if e.rewards.get("intervened")],
                 "bare": [e for e in episodes if not e.rewards.get("intervened")]}
        n = max(len(episodes), 1)
        out = {"intervention/share": len(sides["explained"]) / n,
               "intervention/accuracy": sum(e.rewards.get("correct", 0.0) for e in episodes) / n,
               "intervention/utility_mean": sum(e.rewards.get("utility", 0.0) for e in episodes) / n}
        for side, group in sides.items():
            if group:
                out[f"intervention/accuracy_{side}"] = sum(e.rewards["correct"] for e in group) / len(group)
                out[f"intervention/utility_{side}"] = sum(e.rewards["utility"] for e in group) / len(group)
        return out | reply_counts(episodes)


def mental_model_turn(problem: Problem, utility: Utility, rank: int, n: int, intervene: bool) -> Turn:
    """What the mental model predicted, as a turn the viewer shows (its prompt: the P_no context)."""
    text = (f"P(correct | no explanation) = {utility.p_no:.3f}, P(correct | explanation) = {utility.p_int:.3f}, "
            f"U = {utility.value:+.3f}; rank {rank + 1} of {n}: {'explain' if intervene else 'no explanation'}")
    return Turn(role="mental_model", text=text, prompt=simulated_prompt(problem, None), kind="utility")
