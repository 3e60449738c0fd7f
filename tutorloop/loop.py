"""The round loop, read top to bottom: sample problems → run episodes → lessons → one trainer
step → sync the student's weights → log. Evaluation brackets the rounds."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Awaitable, Callable

from tutorloop.agents import build_agents, check_models
from tutorloop.checkpoint import Checkpoint, CheckpointStore, Progress, restore, save_model
from tutorloop.config import RunConfig, config_dict
from tutorloop.envs import build_env
from tutorloop.errors import UserError
from tutorloop.evaluation import greedy_accuracy
from tutorloop.metrics import RunLog
from tutorloop.runtime import build_runtime
from tutorloop.tasks import build_tasks
from tutorloop.trainers import build_trainer, lora_kwargs
from tutorloop.trainers.replay import LessonBuffer
from tutorloop.trainers.weight_sync import sync_weights


async def run(cfg: RunConfig, *, resume: bool = False) -> dict[str, float]:
    """A run dir that holds a checkpoint continues from it; `resume` makes that required."""
    seed_everything(cfg.seed)
    run_dir = prepare_run_dir(cfg.run_dir)
    store = CheckpointStore(run_dir / "checkpoints", keep=cfg.checkpoint.keep)
    saved = store.latest(config_dict(cfg), required=resume)
    tasks = build_tasks(cfg.tasks.source, path=cfg.tasks.path, difficulty=cfg.tasks.difficulty, seed=cfg.seed,
                        num_train=cfg.tasks.num_train, num_eval=cfg.tasks.num_eval,
                        max_prompt_chars=cfg.tasks.max_prompt_chars, split=cfg.tasks.split,
                        question_field=cfg.tasks.question_field, answer_field=cfg.tasks.answer_field)
    runtime = build_runtime(cfg.runtime)
    check_models(cfg, tuple(cfg.agents))
    agents = build_agents(runtime, cfg.agents, trained=cfg.trainable, seed=cfg.seed, lora=lora_kwargs(cfg))
    generators = {name: agent.generator for name, agent in agents.items()}
    student = generators[cfg.trainable]
    trainer = build_trainer(runtime, cfg)
    env = build_env(cfg)
    buffer = LessonBuffer(cfg.loop.buffer_size)
    log = RunLog(run_dir, name=cfg.name, config=config_dict(cfg), console=cfg.log.console, wandb_cfg=cfg.log.wandb,
                 first_round=saved.progress.rounds_done if saved else 0, wandb_id=saved.wandb_id if saved else None)
    await note_threads(runtime, log)
    progress = await start(saved, cfg, tasks, log, trainer=trainer, generators=generators, buffer=buffer)
    version, train_seconds = progress.version, 0.0
    for r in log.rounds(cfg.loop.rounds, start=progress.rounds_done):
        if over_budget(train_seconds, cfg.loop.time_budget_minutes, log):
            break
        began = time.perf_counter()
        problems_P = tasks.sample(cfg.loop.problems_per_round, r)
        episodes_P = await run_episodes(env, agents, problems_P, runtime, cfg.runtime.round_retries,
                                        resync=lambda: sync_weights(trainer, student), log=log)
        episode_seconds = time.perf_counter() - began
        buffer.add(env.lessons(episodes_P), version)
        batch = buffer.take(version=version, max_staleness=cfg.loop.max_staleness,
                            max_per_kind=cfg.loop.max_lessons_per_step)
        metrics = await trainer.step(batch)
        version = await sync_weights(trainer, student)  # next round samples the new policy
        metrics |= await generation_metrics(generators) | {"buffer/dropped_stale": float(buffer.dropped_stale)}
        timing = round_timing(time.perf_counter() - began, episode_seconds, metrics)
        train_seconds += timing["round/seconds"]
        if cfg.eval.every and (r + 1) % cfg.eval.every == 0 and r + 1 < cfg.loop.rounds:  # accuracy over time
            metrics |= await evaluate(student, tasks, cfg, f"round {r}", log, key="eval/accuracy")
        metrics["time/train_seconds"] = train_seconds
        log.write(r, env.metrics(episodes_P) | metrics | timing, episodes_P)
        progress = after_round(progress, r, version, metrics, cfg.trainer.max_nonfinite_steps, store)
        if (r + 1) % cfg.checkpoint.every == 0 or r + 1 == cfg.loop.rounds:  # metrics first: resume trims them
            await store.save(progress, trainer=trainer, generators=generators, buffer=buffer,
                             wandb_id=log.wandb_id, config=config_dict(cfg))
    summary = dict(progress.summary) | {"time/train_seconds": train_seconds}
    if cfg.eval.after:
        summary |= await evaluate(student, tasks, cfg, "after", log)
    await save_model(trainer, run_dir / "student")
    log.note(f"student saved to {run_dir / 'student'}")
    log.finish(summary)
    runtime.shutdown()
    return summary


async def start(saved: Checkpoint | None, cfg: RunConfig, tasks: Any, log: RunLog, *, trainer: Any,
                generators: dict[str, Any], buffer: LessonBuffer) -> Progress:
    """Where the rounds begin: the checkpoint's state restored, or round 0 after the eval before."""
    if saved is not None:
        log.note(f"continuing from {saved.path} ({saved.progress.rounds_done} of {cfg.loop.rounds} rounds done)")
        return await restore(saved, trainer=trainer, generators=generators, buffer=buffer, trained=cfg.trainable)
    before = await evaluate(generators[cfg.trainable], tasks, cfg, "before", log) if cfg.eval.before else {}
    return Progress(summary=before)


def after_round(progress: Progress, r: int, version: int, metrics: dict[str, float], limit: int,
                store: CheckpointStore) -> Progress:
    """The loop's state after round r. Skipped non-finite steps leave the weights as they were, but a
    run that keeps producing them is broken: it stops before writing another checkpoint."""
    streak = progress.nonfinite_streak + 1 if metrics.get("train/nonfinite_skipped") else 0
    if streak >= limit:
        raise UserError(f"round {r}: {streak} optimizer steps in a row had a non-finite loss or gradient and were "
                        f"skipped (trainer.max_nonfinite_steps={limit}); stopping. The last checkpoint in "
                        f"'{store.root}' is intact: lower trainer.lr or check the data, then run again to continue")
    return replace(progress, rounds_done=r + 1, version=version, nonfinite_streak=streak)


async def run_episodes(env: Any, agents: dict[str, Any], problems: list[Any], runtime: Any, retries: int, *,
                       resync: Callable[[], Awaitable[int]], log: RunLog) -> list[Any]:
    """Every problem's episode, concurrently. If an actor died (Ray restarts it with its initial
    weights), the student's weights are synced again and the whole round is rerun."""
    for attempt in range(retries + 1):
        try:
            return list(await asyncio.gather(*(env.run(p, agents) for p in problems)))
        except runtime.retryable_errors as exc:
            if attempt == retries:
                raise
            log.note(f"round failed ({type(exc).__name__}); retrying ({attempt + 1}/{retries})")
            await runtime.wait_ready()
            await resync()
    raise AssertionError("unreachable")


async def evaluate(generator: Any, tasks: Any, cfg: RunConfig, when: str, log: RunLog,
                   key: str | None = None) -> dict[str, float]:
    result = await greedy_accuracy(generator, tasks.eval, max_new_tokens=cfg.eval.max_new_tokens)
    log.note(f"eval accuracy {when}{' training' if key is None else ''}: {result['accuracy']:.3f} "
             f"({result['correct']:.0f}/{result['total']:.0f}, greedy, held-out split)")
    return {key or f"eval/accuracy_{when}": result["accuracy"]}


async def note_threads(runtime: Any, log: RunLog) -> None:
    """Once per run: what each actor computes with, so a slow round can be told from a starved one."""
    for r in await runtime.thread_reports():
        log.note(f"{r['actor']} (pid {r['pid']}): {r['torch_threads']} torch threads on {r['cores']} cores"
                 f"{', taking turns on the CPU' if r['takes_turns'] else ''} (OMP_NUM_THREADS={r['OMP_NUM_THREADS']})")


def over_budget(train_seconds: float, budget_minutes: float | None, log: RunLog) -> bool:
    """The wall-clock budget is spent: the rounds stop early (the eval after still runs)."""
    if budget_minutes is None or train_seconds < budget_minutes * 60:
        return False
    log.note(f"time budget of {budget_minutes:g} min spent after {train_seconds:.0f} s of rounds; stopping")
    return True


async def generation_metrics(generators: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {"round/model_seconds": 0.0}
    for role, generator in generators.items():
        stats = await generator.stats()  # a generator shared by two roles reports once, then zeros
        out["round/model_seconds"] += stats.get("gen_seconds", 0.0) + stats.get("score_seconds", 0.0)
        if stats.get("gen_seconds"):
            out[f"gen/{role}_tokens_per_s"] = stats["gen_tokens"] / stats["gen_seconds"]
            out[f"gen/{role}_tokens"] = stats["gen_tokens"]
            if stats.get("gen_batches"):
                out[f"gen/{role}_batch_size"] = stats["gen_rows"] / stats["gen_batches"]
    return out


def round_timing(seconds: float, episode_seconds: float, metrics: dict[str, float]) -> dict[str, float]:
    """Round time, and the share of it spent outside model work (generation, scoring, the train
    step): batching waits, Python, and on Ray the actor calls and transfers."""
    model = metrics.get("round/model_seconds", 0.0) + metrics.get("train/seconds", 0.0)
    return {"round/seconds": seconds, "round/episode_seconds": episode_seconds,
            "round/overhead_share": max(0.0, 1.0 - model / seconds) if seconds else 0.0}


def prepare_run_dir(path: str) -> Path:
    run_dir = Path(path)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"run_dir '{path}' is not writable: {exc.strerror or exc}") from None
    return run_dir


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
