"""`tutorloop chat CONFIG --as student|tutor`: a person plays one side of a tutoring dialogue in the
terminal and a model plays the other.

The person is just another agent handle in the same DialogueEnv a simulation uses, so the dialogue opens,
is tagged, scored (success@k, telling@k) and saved exactly like a simulated one: each session gets
its own directory under `run_dir/chat/` with episodes.jsonl, metrics.jsonl and transcripts.html.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence, TextIO

from tutorloop.agents import build_agents
from tutorloop.config import DialogueEnvConfig, RunConfig, WandbConfig, config_dict
from tutorloop.envs import prompts
from tutorloop.envs.dialogue import DialogueEnv
from tutorloop.envs.tutoring_metrics import KS, dialogue_metrics
from tutorloop.errors import UserError
from tutorloop.loop import build_pool
from tutorloop.metrics import RunLog
from tutorloop.runtime import build_runtime
from tutorloop.types import Completion, Episode, Message, Problem, SamplingParams, TokenScores, Turn
from tutorloop.viewer import write_viewer

SIDES = {"student": "sim_student", "tutor": "tutor"}
QUIT = ("/quit", "/exit")


class PersonAgent:
    """A person at the terminal, behind the same handle as a model agent: `sample` reads one line.
    End of input or /quit ends the dialogue (finish_reason "quit"). `show` prints the other side's
    turns as the env records them, with the tutor's move."""

    provenance = "human"
    sampling = SamplingParams(temperature=0.0)

    def __init__(self, name: str, part: str, problem: Problem, read: Callable[[], str],
                 write: Callable[[str], None]) -> None:
        self.name, self.part, self.read, self.write = name, part, read, write
        self.speaker = speaker(problem, part)

    async def sample(self, messages: Sequence[Message], n: int = 1,
                     sampling: SamplingParams | None = None) -> list[Completion]:
        line = ""
        while not line.strip():
            self.write(f"{self.speaker} (you)> ")
            line = self.read()
            if not line:  # end of input
                return [Completion(text="", token_ids=(), logprobs=(), finish_reason="quit")]
        quit_ = line.strip().lower() in QUIT
        return [Completion(text="" if quit_ else line.strip(), token_ids=(), logprobs=(),
                           finish_reason="quit" if quit_ else "stop")]

    async def score(self, context_messages: Sequence[Message], target_ids: Sequence[int], top_k: int,
                    temperature: float = 1.0) -> TokenScores:
        raise UserError("a person cannot score tokens")

    def show(self, problem: Problem, turn: Turn) -> None:
        if turn.role != self.part:
            tag = f" [{turn.move}]" if turn.move else ""
            self.write(f"{speaker(problem, turn.role)}{tag}: {turn.text}\n")


async def chat(cfg: RunConfig, *, side: str, problem_id: str | None = None, adapter: str | None = None,
               stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> Path:
    """One dialogue with a person as `side`; returns the session directory."""
    assert isinstance(cfg.env, DialogueEnvConfig), "chat needs a dialogue config (the CLI says so to the user)"
    write = _writer(stdout)
    problem = pick_problem(cfg, problem_id)
    parts = cfg.env.parts()
    person_part = SIDES[side]
    model_part = "sim_student" if side == "tutor" else "tutor"
    person = PersonAgent(parts[person_part], person_part, problem, stdin.readline, write)
    runtime = build_runtime(cfg.runtime)
    agents = build_agents(runtime, cfg.agents, trained={cfg.trainable: None}, seed=cfg.seed, adapter=adapter,
                          names=(parts[model_part], parts["tagger"]))
    write(briefing(problem, side))
    env = DialogueEnv(parts, max_turns=cfg.env.max_turns, telling_penalty=cfg.env.telling_penalty,
                      num_candidates=cfg.env.num_candidates, on_turn=person.show)
    episode = await env.run(problem, {**agents, person.name: person})
    session = save_session(cfg, episode, side)
    write(score_line(episode) + f"\ntranscript: {session / 'transcripts.html'}\n")
    runtime.shutdown()
    return session


def pick_problem(cfg: RunConfig, problem_id: str | None) -> Problem:
    """`problem_id` from either split; by default the first held-out problem (a tutor should not
    have trained on the student it is tried with)."""
    tasks = DialogueEnv.from_config(cfg).problems(build_pool(cfg))
    problems = (*tasks.eval, *tasks.train)
    if problem_id is None:
        return problems[0]
    found = next((p for p in problems if p.id == problem_id), None)
    if found is None:
        raise UserError(f"--problem: no problem with id {problem_id!r} that has a simulated student "
                        f"(ids look like {problems[0].id!r})")
    return found


def briefing(problem: Problem, side: str) -> str:
    name = prompts.student_name(problem)
    if side == "student":
        return (f"You are playing {name}. {problem.persona or ''}\nProblem: {problem.prompt}\n"
                f"Your solution, which you believe is right:\n{problem.incorrect_solution}\n"
                "Reply as the student; /quit or end of input (Ctrl-D) ends the dialogue.\n\n")
    return (f"You are the tutor. {name} solved this problem wrongly and believes the answer.\n"
            f"Problem: {problem.prompt}\nCorrect solution (for you only):\n{problem.solution}\n"
            f"Help {name} find the mistake without telling the answer; /quit or Ctrl-D ends.\n\n")


def save_session(cfg: RunConfig, episode: Episode, side: str) -> Path:
    session = _new_dir(Path(cfg.run_dir) / "chat", f"{time.strftime('%Y%m%d-%H%M%S')}-as-{side}")
    log = RunLog(session, name=f"{cfg.name}-chat", config=config_dict(cfg), console=False,
                 wandb_cfg=WandbConfig(mode="disabled"))
    log.write(0, dialogue_metrics([episode]), [episode])
    log.finish({})
    write_viewer(session, title=f"{cfg.name}: chat as the {side}")
    return session


def score_line(episode: Episode) -> str:
    metrics = dialogue_metrics([episode])
    success = next((k for k in KS if metrics[f"tutoring/success@{k}"]), None)
    told = next((k for k in KS if metrics[f"tutoring/telling@{k}"]), None)
    return (f"\nscore: success@k from k={success}" if success else "\nscore: no success within k=7") + (
        f", telling@k from k={told}" if told else ", no telling") + f" (answer {episode.problem.answer})"


def speaker(problem: Problem, role: str) -> str:
    return "Tutor" if role == "tutor" else prompts.student_name(problem)


def _writer(stream: TextIO) -> Callable[[str], None]:
    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


def _new_dir(parent: Path, name: str) -> Path:
    for n in range(1, 1000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"run_dir '{parent.parent}' is not writable: {exc.strerror or exc}") from None
    raise UserError(f"{parent}: too many chat sessions named {name}")
