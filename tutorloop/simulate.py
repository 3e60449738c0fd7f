"""A tutoring run, read top to bottom: problems with simulated students → dialogues between the
tutor and each student → lessons for the tutor → one trainer step → sync the tutor's weights → log
success@k / telling@k. A greedy tutor on held-out students brackets the rounds.

It is `loop.run` with the roles swapped: the tutor is the trainable policy, trained by the same
OnlineTrainer, and the lessons come from dialogues (`to_tutor_batch`) instead of corrections.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tutorloop.agents import build_agents, check_models
from tutorloop.checkpoint import save_model
from tutorloop.config import DialogueEnvConfig, RunConfig, config_dict
from tutorloop.envs.dialogue import DialogueEnv
from tutorloop.envs.mathdial import load_mathdial
from tutorloop.errors import UserError
from tutorloop.loop import generation_metrics, note_threads, prepare_run_dir, run_episodes, seed_everything
from tutorloop.metrics import RunLog
from tutorloop.runtime import build_runtime
from tutorloop.tasks import TaskPool, build_tasks
from tutorloop.tasks.mathdial import with_students
from tutorloop.trainers import build_trainer, lora_kwargs
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
    assert isinstance(cfg.env, DialogueEnvConfig), "a tutoring run needs `env: {name: dialogue}`"
    seed_everything(cfg.seed)
    run_dir = prepare_run_dir(cfg.run_dir)
    tasks = build_students(cfg)
    runtime = build_runtime(cfg.runtime)
    check_models(cfg, tuple(cfg.agents))
    agents = build_agents(runtime, cfg.agents, trained=cfg.trainable, seed=cfg.seed, lora=lora_kwargs(cfg))
    generators = {name: agent.generator for name, agent in agents.items()}
    tutor = generators[cfg.trainable]
    trainer = build_trainer(runtime, cfg)
    env = DialogueEnv.from_config(cfg)
    buffer = LessonBuffer(cfg.loop.buffer_size)
    buffer.add(env.lessons(recorded_dialogues(cfg, tasks)), 0)
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
                                         resync=lambda: sync_weights(trainer, tutor), log=log)
        dialogue_seconds = time.perf_counter() - began
        buffer.add(env.lessons(dialogues_P), version)
        batch = buffer.take(version=version, max_staleness=cfg.loop.max_staleness,
                            max_per_kind=cfg.loop.max_lessons_per_step)
        metrics = await trainer.step(batch)
        version = await sync_weights(trainer, tutor)  # next round's dialogues use the new tutor
        metrics |= await generation_metrics(generators) | {"lessons/sft": len(batch.sft), "lessons/dpo": len(batch.dpo)}
        timing = {"round/seconds": time.perf_counter() - began, "round/dialogue_seconds": dialogue_seconds}
        log.write(r, env.metrics(dialogues_P) | metrics | timing, dialogues_P)
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
                        max_prompt_chars=cfg.tasks.max_prompt_chars, split=cfg.tasks.split,
                        question_field=cfg.tasks.question_field, answer_field=cfg.tasks.answer_field)
    train, eval_ = with_students(tasks.train, cfg.seed), with_students(tasks.eval, cfg.seed)
    if not train:
        raise UserError(f"tasks ({cfg.tasks.source}): no training problem has a recorded student or a reference "
                        "solution whose last calculation gives the answer, so none can be given a simulated student")
    return TaskPool(train, eval_, cfg.seed)


def recorded_dialogues(cfg: RunConfig, tasks: TaskPool) -> list[Episode]:
    """MathDial's recorded dialogues of the training problems (never of the held-out ones)."""
    env = cfg.env
    if cfg.tasks.source != "mathdial" or not isinstance(env, DialogueEnvConfig) or not env.recorded_dialogues:
        return []
    train_ids = {p.id for p in tasks.train}
    data = load_mathdial(cfg.tasks.path or "", telling_penalty=env.telling_penalty)
    return [d for d in data.dialogues if d.problem.id in train_ids]


async def evaluate(env: DialogueEnv, agents: dict[str, Any], tasks: TaskPool, when: str, log: RunLog) -> dict[str, float]:
    """success@k / telling@k of the greedy tutor with every held-out student."""
    tutor = env.parts["tutor"]
    greedy = agents | {tutor: agents[tutor].with_sampling(temperature=0.0)}
    dialogues = await asyncio.gather(*(env.run(p, greedy) for p in tasks.eval))
    metrics = env.metrics(dialogues, prefix=f"eval_{when}")
    log.note(f"eval {when} training ({len(dialogues)} held-out students, greedy tutor): "
             + ", ".join(f"{m}@{k} {metrics[f'eval_{when}/{m}@{k}']:.2f}" for m in ("success", "telling") for k in (1, 3, 7)))
    return metrics
