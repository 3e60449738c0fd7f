"""A tutoring run, read top to bottom: problems with simulated students → dialogues between the
tutor and each student → lessons for the tutor → one trainer step → sync the tutor's weights → log
success@k / telling@k. A greedy tutor on held-out students brackets the rounds.

It is `loop.run` with the roles swapped: the tutor is the trainable policy, trained by the same
OnlineTrainer, and the lessons come from dialogues (`to_tutor_lessons`) instead of corrections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from tutorloop.agents import TutorAgent, build_dialogue_agents, build_generators
from tutorloop.checkpoint import save_model
from tutorloop.config import RunConfig, config_dict
from tutorloop.envs.dialogue import DialogueEnv
from tutorloop.envs.mathdial import load_mathdial
from tutorloop.envs.to_examples import to_tutor_lessons
from tutorloop.envs.tutoring_metrics import dialogue_metrics
from tutorloop.errors import UserError
from tutorloop.loop import generation_metrics, note_threads, prepare_run_dir, run_episodes, seed_everything, trained_encoder
from tutorloop.metrics import RunLog
from tutorloop.runtime import build_runtime
from tutorloop.tasks import TaskPool, build_tasks
from tutorloop.tasks.mathdial import with_students
from tutorloop.trainers import build_trainer, lora_kwargs
from tutorloop import objectives as objective_registry
from tutorloop.trainers.replay import LessonBuffer
from tutorloop.trainers.weight_sync import sync_weights
from tutorloop.types import Episode
from tutorloop.viewer import write_viewer

TABLE_COLUMNS = (("round", "round", "{:.0f}"),
                 *((f"success@{k}", f"tutoring/success@{k}", "{:.2f}") for k in (1, 3, 7)),
                 *((f"telling@{k}", f"tutoring/telling@{k}", "{:.2f}") for k in (1, 3, 7)),
                 ("replies", "tutoring/student_replies", "{:.1f}"), ("reward", "tutoring/reward", "{:.2f}"),
                 ("sft", "loss/sft", "{:.3f}"), ("dpo", "loss/dpo", "{:.3f}"), ("s", "round/seconds", "{:.1f}"))


async def run(cfg: RunConfig) -> dict[str, float]:
    assert cfg.dialogue is not None, "a tutoring run needs a `dialogue` section"
    seed_everything(cfg.seed)
    run_dir = prepare_run_dir(cfg.run_dir)
    tasks = build_students(cfg)
    runtime = build_runtime(cfg.runtime)
    generators = build_generators(runtime, cfg, lora_kwargs(cfg))
    agents = build_dialogue_agents(cfg, generators)
    trainer = build_trainer(runtime, cfg)
    objectives, encode = set(objective_registry.active(cfg.trainer.objectives)), trained_encoder(cfg)
    env = DialogueEnv(max_turns=cfg.dialogue.max_turns, telling_penalty=cfg.dialogue.telling_penalty)
    buffer = LessonBuffer(cfg.loop.buffer_size)
    buffer.add(to_tutor_lessons(recorded_dialogues(cfg, tasks), encode, objectives=objectives))
    log = RunLog(run_dir, name=cfg.name, config=config_dict(cfg), console=cfg.log.console, wandb_cfg=cfg.log.wandb,
                 columns=TABLE_COLUMNS)
    await note_threads(runtime, log)
    summary: dict[str, float] = {}
    if cfg.eval.before and tasks.eval:
        summary |= await evaluate(env, agents, tasks, "before", log)
    version = 0
    for r in log.rounds(cfg.loop.rounds):
        began = time.perf_counter()
        problems_P = tasks.sample(cfg.loop.problems_per_round, r)
        dialogues_P = await run_episodes(env, agents, problems_P, runtime, cfg.runtime.round_retries,
                                         resync=lambda: sync_weights(trainer, generators["tutor"]), log=log)
        dialogue_seconds = time.perf_counter() - began
        buffer.add(to_tutor_lessons(dialogues_P, encode, objectives=objectives))
        batch = buffer.take(version=version, max_staleness=cfg.loop.max_staleness,
                            max_per_kind=cfg.loop.max_lessons_per_step)
        metrics = await trainer.step(batch)
        version = await sync_weights(trainer, generators["tutor"])  # next round's dialogues use the new tutor
        metrics |= await generation_metrics(generators)
        metrics |= {f"lessons/{name}": float(sum(x.objective == name for x in batch)) for name in objectives}
        timing = {"round/seconds": time.perf_counter() - began, "round/dialogue_seconds": dialogue_seconds}
        log.write(r, dialogue_metrics(dialogues_P) | metrics | timing, dialogues_P)
    if cfg.eval.after and tasks.eval:
        summary |= await evaluate(env, agents, tasks, "after", log)
    await save_model(trainer, run_dir / "tutor")
    log.note(f"tutor saved to {run_dir / 'tutor'}; transcripts: {write_viewer(run_dir, title=cfg.name)}")
    log.finish(summary)
    runtime.shutdown()
    return summary


def build_students(cfg: RunConfig) -> TaskPool:
    """The task pool, every problem with a simulated student: MathDial's own, or a planted mistake."""
    tasks = build_tasks(cfg.tasks.source, path=cfg.tasks.path, difficulty=cfg.tasks.difficulty,
                        num_train=cfg.tasks.num_train, num_eval=cfg.tasks.num_eval, seed=cfg.seed,
                        max_prompt_chars=cfg.tasks.max_prompt_chars)
    train, eval_ = with_students(tasks.train, cfg.seed), with_students(tasks.eval, cfg.seed)
    if not train:
        raise UserError(f"tasks ({cfg.tasks.source}): no training problem has a recorded student or a reference "
                        "solution whose last calculation gives the answer, so none can be given a simulated student")
    return TaskPool(train, eval_, cfg.seed)


def recorded_dialogues(cfg: RunConfig, tasks: TaskPool) -> list[Episode]:
    """MathDial's recorded dialogues of the training problems (never of the held-out ones)."""
    if cfg.tasks.source != "mathdial" or not (cfg.dialogue and cfg.dialogue.recorded_dialogues):
        return []
    train_ids = {p.id for p in tasks.train}
    data = load_mathdial(cfg.tasks.path or "", telling_penalty=cfg.dialogue.telling_penalty)
    return [d for d in data.dialogues if d.problem.id in train_ids]


async def evaluate(env: DialogueEnv, agents: dict[str, Any], tasks: TaskPool, when: str, log: RunLog) -> dict[str, float]:
    """success@k / telling@k of the greedy tutor with every held-out student."""
    tutor = agents["tutor"]
    greedy = agents | {"tutor": TutorAgent(tutor.generator, dataclasses.replace(tutor.params, temperature=0.0))}
    dialogues = await asyncio.gather(*(env.run(p, greedy) for p in tasks.eval))
    metrics = dialogue_metrics(dialogues, prefix=f"eval_{when}")
    log.note(f"eval {when} training ({len(dialogues)} held-out students, greedy tutor): "
             + ", ".join(f"{m}@{k} {metrics[f'eval_{when}/{m}@{k}']:.2f}" for m in ("success", "telling") for k in (1, 3, 7)))
    return metrics
