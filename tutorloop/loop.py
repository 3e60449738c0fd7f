"""The round loop, read top to bottom: sample problems → run episodes → lessons → one trainer
step → sync the student's weights → log. Evaluation brackets the rounds."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from tutorloop.agents import build_agents, build_generators
from tutorloop.config import RunConfig, config_dict
from tutorloop.envs import TutoringEnv, build_tasks, verify
from tutorloop.envs.to_examples import to_train_batch
from tutorloop.errors import UserError
from tutorloop.evaluation import greedy_accuracy
from tutorloop.metrics import RunLog, episode_metrics
from tutorloop.runtime import build_runtime
from tutorloop.trainers import build_trainer, lora_kwargs
from tutorloop.trainers.replay import LessonBuffer
from tutorloop.trainers.weight_sync import sync_weights


async def run(cfg: RunConfig) -> dict[str, float]:
    seed_everything(cfg.seed)
    run_dir = prepare_run_dir(cfg.run_dir)
    tasks = build_tasks(cfg.tasks.source, path=cfg.tasks.path, difficulty=cfg.tasks.difficulty,
                        num_train=cfg.tasks.num_train, num_eval=cfg.tasks.num_eval, seed=cfg.seed)
    runtime = build_runtime(cfg.runtime)
    generators = build_generators(runtime, cfg, lora_kwargs(cfg))
    agents = build_agents(cfg, generators)
    trainer = build_trainer(runtime, cfg)
    objectives = {name for name, weight in cfg.trainer.weights.items() if weight > 0}
    env = TutoringEnv(verify, max_rounds=cfg.env.max_rounds,
                      score_top_k=cfg.trainer.opd.top_k if "opd" in objectives else 0)
    buffer = LessonBuffer(cfg.loop.buffer_size)
    log = RunLog(run_dir, name=cfg.name, config=config_dict(cfg), console=cfg.log.console, wandb_cfg=cfg.log.wandb)
    summary: dict[str, float] = {}
    if cfg.eval.before:
        summary |= await evaluate(generators["student"], tasks, cfg, "before", log)
    version = 0
    for r in log.rounds(cfg.loop.rounds):
        began = time.perf_counter()
        problems_P = tasks.sample(cfg.loop.problems_per_round, r)
        episodes_P = await asyncio.gather(*(env.run(p, agents) for p in problems_P))
        episode_seconds = time.perf_counter() - began
        buffer.add(to_train_batch(episodes_P, verify, objectives=objectives), version)
        batch = buffer.take(version=version, max_staleness=cfg.loop.max_staleness,
                            max_per_kind=cfg.loop.max_lessons_per_step)
        metrics = await trainer.step(batch)
        version = await sync_weights(trainer, generators["student"])  # next round samples the new policy
        metrics |= await generation_metrics(generators) | {"buffer/dropped_stale": float(buffer.dropped_stale)}
        timing = {"round/seconds": time.perf_counter() - began, "round/episode_seconds": episode_seconds}
        log.write(r, episode_metrics(episodes_P) | metrics | timing, episodes_P)
    if cfg.eval.after:
        summary |= await evaluate(generators["student"], tasks, cfg, "after", log)
    await trainer.save(str(run_dir / "student"))
    log.note(f"student saved to {run_dir / 'student'}")
    log.finish(summary)
    runtime.shutdown()
    return summary


async def evaluate(generator: Any, tasks: Any, cfg: RunConfig, when: str, log: RunLog) -> dict[str, float]:
    result = await greedy_accuracy(generator, tasks.eval, max_new_tokens=cfg.eval.max_new_tokens)
    log.note(f"eval accuracy {when} training: {result['accuracy']:.3f} "
             f"({result['correct']:.0f}/{result['total']:.0f}, greedy, held-out split)")
    return {f"eval/accuracy_{when}": result["accuracy"]}


async def generation_metrics(generators: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for role, generator in generators.items():
        stats = await generator.stats()
        if stats.get("gen_seconds"):
            out[f"gen/{role}_tokens_per_s"] = stats["gen_tokens"] / stats["gen_seconds"]
            out[f"gen/{role}_tokens"] = stats["gen_tokens"]
    return out


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
