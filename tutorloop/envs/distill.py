"""The distill env: a teacher teaches the student from its demonstrations and its scores, per problem.

Fine-tune-CoT with diverse reasoning (Ho et al., ACL 2023, "Large Language Models Are Reasoning
Teachers"; METHODS A1): the teacher samples `samples` (D) solutions at `temperature` (T) in one call;
those the verifier accepts become the student's SFT targets, under the student's bare prompt and in
its token ids (`to_examples.demonstration_lessons`).

GKD (Agarwal et al., ICLR 2024, "On-Policy Distillation of Language Models"; METHODS C1): when the
student has a `kd` objective, each problem also gets one sequence the teacher scores token by token.
A λ gate (`on_policy_fraction`) picks it: on-policy, the student's own sample; otherwise the
dataset's, the reference solution encoded in the student's ids. Both are `kd` lessons, whose
generalized JSD takes kd's `beta` and `temperature` as TRL's GKDTrainer does.

The gate is a coin per problem: on-policy iff u < λ, u uniform in [0, 1) from a generator seeded by
(run seed, problem id) (`on_policy`). It is deterministic, independent of the order episodes run in,
and a resumed run gates alike; over N problems the on-policy share is Binomial(N, λ) / N, and
raising λ only moves problems to the on-policy side. TRL flips one coin per batch instead; envs are
not told the round, so a problem keeps its side for the whole run.

Distilling step-by-step (Hsieh et al., ACL Findings 2023; METHODS A2), `step_by_step`: the same
verified demonstrations become two tasks told apart by a prefix, "[label] <problem>" → the answer
line (weight α = `label_weight`) and "[rationale] <problem>" → the rationale (weight 1 − α)
(`to_examples.step_by_step_lessons`); the student is evaluated on the label prompt only, so the
rationales cost nothing at test time.

Mentor-KD (Lee, Kim, Lee, EMNLP 2024; METHODS A3), `score_demonstrations`: the teacher part is played
by a mentor (a frozen model an earlier run trained, `agents.<name>.adapter`); each of its verified
demonstrations is encoded once as the student's target, and the mentor scores that target under the
student's prompt (`_soft_labels`): the student's `kd` lessons are soft labels on exactly the targets
of its `sft` lessons (`to_examples.soft_label_lessons`), in place of GKD's gated sequence.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

from tutorloop.agents.protocol import AgentHandle
from tutorloop.config import DistillEnvConfig, RunConfig
from tutorloop.envs import moves, prompts
from tutorloop.envs.correction import reply_counts
from tutorloop.envs.evaluation import SolvesBareProblems, accuracy_report
from tutorloop.envs.learning import learner_kwargs, learning_parts
from tutorloop.envs.to_examples import demonstration_lessons, gkd_lessons, soft_label_lessons, step_by_step_lessons
from tutorloop.errors import UserError
from tutorloop.graders import undecodable, verify
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Problem, StopReason, Turn

COLUMNS = (("round", "round", "{:.0f}"), ("verified", "distill/verified_rate", "{:.2f}"),
           ("on-policy", "distill/on_policy_share", "{:.2f}"), ("student", "distill/student_accuracy", "{:.2f}"),
           ("sft", "loss/sft", "{:.3f}"), ("kd", "loss/kd", "{:.3f}"), ("KL t-s", "kl/teacher_student", "{:.3f}"),
           ("s", "round/seconds", "{:.1f}"))
"""The console's per-round table as (title, metric key, format)."""


def on_policy(seed: int, problem_id: str, fraction: float) -> bool:
    """GKD's gate for one problem: its seeded coin u < λ (string seeds hash alike in every process)."""
    return random.Random(f"gkd-{seed}-{problem_id}").random() < fraction


class DistillEnv(SolvesBareProblems):
    columns = COLUMNS

    def __init__(self, parts: Mapping[str, str] | None = None, *, samples: int, temperature: float = 0.7,
                 on_policy_fraction: float = 0.5, privileged: bool = True, score_top_k: int = 0,
                 objectives: frozenset[str] = frozenset(), verifier: moves.Verifier = verify,
                 encode: TokenEncoder | None = None, learner: str = "student", seed: int = 0,
                 step_by_step: bool = False, label_weight: float = 0.5, score_demonstrations: bool = False) -> None:
        """parts: student, teacher → agent names. samples, temperature: D and T of the demonstrations.
        score_top_k > 0: the gated sequence (score_demonstrations: each verified demonstration,
        and no gate) is scored with that many top-k log-probs (kd lessons); 0: none is. encode: the
        student's tokenizer (targets, and the reference's ids for scoring).
        step_by_step: label and rationale lessons (α = label_weight), evaluated on the label prompt."""
        self.parts = dict(parts or {"student": "student", "teacher": "teacher"})
        self.samples, self.temperature, self.on_policy_fraction = samples, temperature, on_policy_fraction
        self.privileged, self.score_top_k, self.objectives = privileged, score_top_k, objectives
        self.verifier = verifier
        self.encode, self.learner, self.seed = encode, learner, seed
        self.step_by_step, self.label_weight = step_by_step, label_weight
        self.score_demonstrations = score_demonstrations

    @classmethod
    def from_config(cls, cfg: RunConfig) -> DistillEnv:
        env = cfg.env
        assert isinstance(env, DistillEnvConfig)
        student = learning_parts(cfg).get("student")
        if student and not env.samples and "kd" not in student.objectives:
            raise UserError("env.samples: 0 demonstrations and no kd objective: the distill env makes no lessons; "
                            "set env.samples >= 1 (SFT on verified ones) or give the student a kd objective")
        return cls(env.parts(), samples=env.samples, temperature=env.temperature,
                   on_policy_fraction=env.on_policy_fraction, privileged=env.privileged,
                   score_top_k=student.top_k if student and "kd" in student.objectives else 0,
                   **learner_kwargs(cfg, "student"), seed=cfg.seed, step_by_step=env.step_by_step, label_weight=env.label_weight,
                   score_demonstrations=env.score_demonstrations)

    async def run(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> Episode:
        teacher = agents[self.parts["teacher"]]
        turns: list[Turn] = []
        if self.samples:
            turns += await moves.demonstrations(teacher, problem, self.samples, temperature=self.temperature,
                                                privileged=self.privileged, verifier=self.verifier)
        if self.score_top_k and self.encode is not None and self.score_demonstrations:
            turns += await self._soft_labels(problem, teacher, turns)
        elif self.score_top_k and self.encode is not None:
            gated = await self._gated(problem, agents[self.parts["student"]], teacher)
            turns += [gated] if gated else []
        solved = any(t.correct for t in turns if t.role in ("teacher", "student"))
        return Episode(problem=problem, turns=tuple(turns), rewards=rewards(turns),
                       stop=StopReason.SOLVED if solved else StopReason.MAX_ROUNDS)

    def lessons(self, episodes: Sequence[Episode]) -> list[Lesson]:
        """SFT on verified demonstrations; kd on the gated sequences the teacher scored, or on the
        verified demonstrations it scored (`score_demonstrations`)."""
        if not self.objectives & {"sft", "kd"}:
            return []
        assert self.encode is not None, "lessons need the student's tokenizer (encode=)"
        episodes = list(episodes)
        out = self._demonstration_lessons(episodes) if "sft" in self.objectives else []
        if "kd" in self.objectives:
            out += (soft_label_lessons(episodes, self.verifier, self.encode) if self.score_demonstrations
                    else gkd_lessons(episodes, self.encode))
        return [replace(x, learner=self.learner) for x in out]

    def _demonstration_lessons(self, episodes: list[Episode]) -> list[Lesson]:
        assert self.encode is not None
        if self.step_by_step:
            return step_by_step_lessons(episodes, self.verifier, self.encode, label_weight=self.label_weight)
        return demonstration_lessons(episodes, self.verifier, self.encode)

    async def evaluate(self, agents: Mapping[str, AgentHandle], problems: Sequence[Problem], label: str | None, *,
                       max_new_tokens: int) -> tuple[dict[str, float], str]:
        """Greedy accuracy of the student; with `step_by_step` on the "[label] <problem>" prompt, the
        only task that runs at test time."""
        if self.step_by_step:
            problems = [replace(p, prompt=prompts.task_prefixed(p, "label")[1]["content"]) for p in problems]
        return await accuracy_report(agents[self.parts["student"]].generator, problems, label,
                                     max_new_tokens=max_new_tokens)

    def metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        n, total = max(len(episodes), 1), {key: sum(e.rewards.get(key, 0.0) for e in episodes) for key in KEYS}
        scored = [lp for e in episodes for t in e.turns if t.teacher_scores for lp in t.teacher_scores.logprobs]
        out = {"distill/demonstrations": total["demonstrations"]}
        if total["demonstrations"]:
            out |= {"distill/verified_rate": total["verified"] / total["demonstrations"],
                    "distill/pass_at_samples": sum(e.rewards.get("verified", 0.0) > 0 for e in episodes) / n}
        if total["gated"]:
            out["distill/on_policy_share"] = total["on_policy"] / total["gated"]
        if total["on_policy"]:
            out["distill/student_accuracy"] = total["student_correct"] / total["on_policy"]
        if scored:
            out["distill/teacher_logprob_mean"] = sum(scored) / len(scored)
        return out | reply_counts(episodes)

    async def _soft_labels(self, problem: Problem, teacher: AgentHandle, demonstrations: Sequence[Turn]) -> list[Turn]:
        """Mentor-KD's soft labels: each verified demonstration as the student's target (its text
        encoded once in the student's ids, ending with EOS, under the student's bare prompt, as its
        SFT lesson has it), scored by the teacher that wrote it, all in one batch."""
        assert self.encode is not None
        prompt = prompts.student_attempt(problem)
        kept = [replace(t, kind="soft_label", prompt=prompt, token_ids=self.encode.text(t.text), logprobs=())
                for t in demonstrations if t.kind == "demonstration" and t.correct and not undecodable(t.text)]
        scores = await asyncio.gather(*(moves.score(teacher, problem, t, self.score_top_k, privileged=self.privileged)
                                        for t in kept))
        return [replace(t, teacher_scores=s) for t, s in zip(kept, scores)]

    async def _gated(self, problem: Problem, student: AgentHandle, teacher: AgentHandle) -> Turn | None:
        """The sequence the teacher scores: the student's sample, or the reference solution in the
        student's ids (none when the problem has no reference solution)."""
        assert self.encode is not None
        if on_policy(self.seed, problem.id, self.on_policy_fraction):
            (turn,) = await moves.attempts(student, problem, 1)
            turn = moves.verify(turn, problem, self.verifier)
        elif problem.solution:
            turn = Turn(role="reference", text=problem.solution, prompt=prompts.student_attempt(problem),
                        kind="reference", token_ids=self.encode.text(problem.solution), provenance="reference")
        else:
            return None
        if not turn.token_ids:
            return turn
        return replace(turn, teacher_scores=await moves.score(teacher, problem, turn, self.score_top_k,
                                                              privileged=self.privileged))


KEYS = ("demonstrations", "verified", "gated", "on_policy", "student_correct")


def rewards(turns: Sequence[Turn]) -> dict[str, float]:
    demos = [t for t in turns if t.role == "teacher" and t.kind == "demonstration"]
    student = [t for t in turns if t.role == "student"]
    return {"demonstrations": float(len(demos)), "verified": float(sum(t.correct is True for t in demos)),
            "gated": float(sum(t.role in ("student", "reference") for t in turns)), "on_policy": float(len(student)),
            "student_correct": float(sum(t.correct is True for t in student))}
