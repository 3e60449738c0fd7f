"""The dialogue env: a MathDial tutoring dialogue between a tutor and a simulated student.

The tutor opens with a fixed "walk me through your solution" (MathDial's own opening, so every
tutor is measured from the same start), the student explains its wrong solution, and then the
tutor and the student alternate for up to `max_turns` student replies. A tagger labels every tutor
turn with a move. The dialogue ends early once the student states the gold answer: success@k and
telling@k cannot change after that turn (tutoring_metrics), so the rest would be wasted compute.

A person may play either side (`chat.py`); a reply of theirs with finish_reason "quit" (/quit or
closed input) ends the dialogue and is not part of the transcript.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from tutorloop.agents.protocol import AgentHandle
from tutorloop.config import DialogueEnvConfig, RunConfig
from tutorloop.envs import moves, prompts
from tutorloop.envs.mathdial import load_mathdial
from tutorloop.envs.learning import learner_kwargs
from tutorloop.envs.to_examples import to_tutor_lessons
from tutorloop.envs.tutoring_metrics import dialogue_metrics, dialogue_rewards
from tutorloop.errors import UserError
from tutorloop.graders import contains_number
from tutorloop.tasks import TaskPool
from tutorloop.tasks.mathdial import with_students
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Episode, Lesson, Problem, StopReason, Turn

COLUMNS = (("round", "round", "{:.0f}"),
           *((f"success@{k}", f"tutoring/success@{k}", "{:.2f}") for k in (1, 3, 7)),
           *((f"telling@{k}", f"tutoring/telling@{k}", "{:.2f}") for k in (1, 3, 7)),
           ("replies", "tutoring/student_replies", "{:.1f}"), ("reward", "tutoring/reward", "{:.2f}"),
           ("sft", "loss/sft", "{:.3f}"), ("dpo", "loss/dpo", "{:.3f}"),
           ("pg", "loss/pg", "{:.3f}"), ("s", "round/seconds", "{:.1f}"))
"""The console's per-round table as (title, metric key, format)."""


class DialogueEnv:
    columns = COLUMNS

    def __init__(self, parts: Mapping[str, str] | None = None, *, max_turns: int, telling_penalty: float,
                 num_candidates: int = 1, objectives: frozenset[str] = frozenset({"sft", "dpo"}),
                 on_turn: Callable[[Problem, Turn], None] | None = None, recorded: str | None = None,
                 seed: int = 0, encode: TokenEncoder | None = None, learner: str = "tutor") -> None:
        """parts: part (tutor, sim_student, tagger) → agent name (default: the part's own name).
        max_turns: student replies after its opening explanation (MathDial's k); telling_penalty: λ
        in the per-dialogue reward success − λ·telling; on_turn: shown each turn as it is said;
        recorded: a MathDial file whose recorded dialogues are lessons before round 0; seed: of the
        planted mistakes of problems without a recorded student; encode: the tutor's tokenizer, for
        the lessons' text targets; learner: the learner they are for."""
        self.parts = dict(parts or {p: p for p in ("tutor", "sim_student", "tagger")})
        self.max_turns, self.telling_penalty, self.num_candidates = max_turns, telling_penalty, num_candidates
        self.objectives, self.on_turn, self.recorded, self.seed = objectives, on_turn, recorded, seed
        self.encode, self.learner = encode, learner

    @classmethod
    def from_config(cls, cfg: RunConfig) -> DialogueEnv:
        env = cfg.env
        assert isinstance(env, DialogueEnvConfig)
        recorded = cfg.tasks.path if cfg.tasks.source == "mathdial" and env.recorded_dialogues else None
        return cls(env.parts(), max_turns=env.max_turns, telling_penalty=env.telling_penalty,
                   num_candidates=env.num_candidates, recorded=recorded, seed=cfg.seed, **learner_kwargs(cfg, "tutor"))

    async def run(self, problem: Problem, agents: Mapping[str, AgentHandle]) -> Episode:
        turns: list[Turn] = []
        self._say(problem, turns, opening(problem))
        for reply in range(self.max_turns + 1):  # reply 0 is the student's explanation
            if reply > 0:
                tutor = await self._tutor_turn(problem, agents, turns)
                if tutor is None:
                    break
                self._say(problem, turns, tutor)
            student = await moves.student_says(agents[self.parts["sim_student"]], problem, tuple(turns))
            if student.kind == "quit":
                break
            student = replace(student, correct=bool(problem.answer) and contains_number(student.text, problem.answer or ""))
            self._say(problem, turns, student)
            if student.correct:  # nothing after this turn can change success@k or telling@k
                break
        return self.episode(problem, turns)

    def lessons(self, episodes: Sequence[Episode]) -> list[Lesson]:
        """SFT on the tutor turns of successful dialogues without telling; DPO over telling alternatives;
        pg on every sampled tutor turn with its dialogue's reward against this round's mean."""
        if not self.objectives:
            return []
        assert self.encode is not None, "lessons need the tutor's tokenizer (encode=)"
        return [replace(x, learner=self.learner) for x in to_tutor_lessons(episodes, self.encode, objectives=set(self.objectives))]

    def metrics(self, episodes: Sequence[Episode], prefix: str = "tutoring") -> dict[str, float]:
        return dialogue_metrics(episodes, prefix=prefix)

    def problems(self, pool: TaskPool) -> TaskPool:
        """Every problem with a simulated student: MathDial's own, or a planted mistake."""
        train, eval_ = with_students(pool.train, self.seed), with_students(pool.eval, self.seed)
        if not train:
            raise UserError("tasks: no training problem has a recorded student or a reference solution whose "
                            "last calculation gives the answer, so none can be given a simulated student")
        return TaskPool(train, eval_, pool.seed)

    def prelude(self, pool: TaskPool) -> list[Lesson]:
        """Lessons from MathDial's recorded dialogues of the training problems (never the held-out ones)."""
        if self.recorded is None:
            return []
        train_ids = {p.id for p in pool.train}
        data = load_mathdial(self.recorded, telling_penalty=self.telling_penalty)
        return self.lessons([d for d in data.dialogues if d.problem.id in train_ids])

    async def evaluate(self, agents: Mapping[str, AgentHandle], problems: Sequence[Problem], label: str | None, *,
                       max_new_tokens: int) -> tuple[dict[str, float], str]:
        """success@k / telling@k of the greedy tutor with every held-out student, as `eval_<label>/...`
        (`eval/...` during training), and the line that reports it."""
        if not problems:
            return {}, "no held-out students"
        tutor = self.parts["tutor"]
        greedy = {**agents, tutor: agents[tutor].with_sampling(temperature=0.0)}
        dialogues = await asyncio.gather(*(self.run(p, greedy) for p in problems))
        prefix = f"eval_{label}" if label else "eval"
        metrics = dialogue_metrics(dialogues, prefix=prefix)
        line = ", ".join(f"{m}@{k} {metrics[f'{prefix}/{m}@{k}']:.2f}" for m in ("success", "telling") for k in (1, 3, 7))
        return metrics, f"{line} ({len(dialogues)} held-out students, greedy tutor)"

    def episode(self, problem: Problem, turns: list[Turn]) -> Episode:
        rewards = dialogue_rewards(turns, problem.answer, self.telling_penalty)
        return Episode(problem=problem, turns=tuple(turns), rewards=rewards,
                       stop=StopReason.SOLVED if rewards["success"] else StopReason.MAX_ROUNDS)

    async def _tutor_turn(self, problem: Problem, agents: Mapping[str, AgentHandle], turns: list[Turn]) -> Turn | None:
        tutor = await moves.tutor_says(agents[self.parts["tutor"]], problem, tuple(turns),
                                       num_candidates=self.num_candidates)
        if tutor.kind == "quit":
            return None
        return replace(tutor, move=await moves.tag(agents[self.parts["tagger"]], problem, tuple(turns), tutor))

    def _say(self, problem: Problem, turns: list[Turn], turn: Turn) -> None:
        turns.append(turn)
        if self.on_turn is not None:
            self.on_turn(problem, turn)


def opening(problem: Problem) -> Turn:
    """The tutor's fixed first utterance; provenance "env": it is no one's choice and never a target."""
    return Turn(role="tutor", text=prompts.tutor_opening(problem), prompt=(), kind="utterance", move="generic",
                provenance="env")
