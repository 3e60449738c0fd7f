"""The round loop of every env and any number of learners, read top to bottom: sample problems →
the env's episodes → its lessons → one step of each learner on the lessons addressed to it → sync
each trained agent's weights → log. Evaluation brackets the rounds; checkpoints, the time budget
and the non-finite guard hold for every env. With `loop.overlap` k, the episodes of the next k
rounds are generated while the learners step (`Ahead`)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable

from tutorloop.agents import build_agents, check_models
from tutorloop.checkpoint import Checkpoint, CheckpointStore, Progress, episodes_ahead, restore, save_model
from tutorloop.config import LoopConfig, RunConfig, config_dict
from tutorloop.envs import Env, RoundEnv, build_env
from tutorloop.envs.evaluation import transfer_report
from tutorloop.envs.retain import Retain, build_retain
from tutorloop.errors import UserError
from tutorloop.learner import Learner, build_learners
from tutorloop.metrics import RunLog
from tutorloop.runtime import build_runtime
from tutorloop.tasks import TaskPool, build_tasks
from tutorloop.tasks.mix import build_mix, with_mix
from tutorloop.tasks.transfer import TransferSet, build_transfer
from tutorloop.trainers import trained_agents
from tutorloop.viewer import write_viewer


@dataclass(frozen=True, slots=True)
class Run:
    """What a run is made of, built once from its config (the objects inside keep their own state)."""

    env: Env
    tasks: TaskPool
    agents: dict[str, Any]
    generators: dict[str, Any]
    learners: dict[str, Learner]
    """By name; an agent without one is frozen."""
    runtime: Any
    transfer: TransferSet | None = None
    """The eval.transfer set, scored before and after training; None when not configured."""
    retain: Retain | None = None
    """tasks.retain: the texts each round's `kl_ref` lessons hold the student on; None when not set."""
    notes: tuple[str, ...] = ()
    """Console lines on what the run's problems are: a mixed-in source, the transfer set."""


def build_run(cfg: RunConfig) -> Run:
    env = build_env(cfg)
    mix = None if cfg.tasks.mix is None else build_mix(cfg.tasks.mix.source, path=cfg.tasks.mix.path,
                                                       num=cfg.tasks.mix.num)
    tasks = env.problems(build_pool(cfg) if mix is None else with_mix(build_pool(cfg), mix))
    retain = build_retain(cfg)
    transfer = transfer_set(cfg, tasks, retain.problems if retain else ())
    runtime = build_runtime(cfg.runtime)
    check_models(cfg, tuple(cfg.agents))
    agents = build_agents(runtime, cfg.agents, trained=trained_agents(cfg), seed=cfg.seed)
    generators = {name: agent.generator for name, agent in agents.items()}
    return Run(env=env, tasks=tasks, agents=agents, generators=generators,
               learners=build_learners(runtime, cfg, generators), runtime=runtime,
               transfer=transfer, retain=retain, notes=tuple(x.note for x in (mix, retain, transfer) if x is not None))


def transfer_set(cfg: RunConfig, pool: TaskPool, retained: tuple = ()) -> TransferSet | None:
    """eval.transfer's problems, none of which the run trains, evaluates or holds the student on."""
    t = cfg.eval.transfer
    return None if t is None else build_transfer(t.source, path=t.path, num=t.num,
                                                 seen=pool.train + pool.eval + tuple(retained))


def build_pool(cfg: RunConfig) -> TaskPool:
    t = cfg.tasks
    return build_tasks(t.source, path=t.path, difficulty=t.difficulty, seed=cfg.seed, num_train=t.num_train,
                       num_eval=t.num_eval, max_prompt_chars=t.max_prompt_chars, split=t.split,
                       question_field=t.question_field, answer_field=t.answer_field)


async def run(cfg: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Every env, one loop. A run dir that holds a checkpoint continues from it; `resume` makes
    that required. Episodes come from `rollout`, lessons carry the policy version that made them,
    so the next rounds' episodes can be generated while this round trains (`loop.overlap`)."""
    seed_everything(cfg.seed)
    run_dir = prepare_run_dir(cfg.run_dir)
    store = CheckpointStore(run_dir / "checkpoints", keep=cfg.checkpoint.keep)
    saved = store.latest(config_dict(cfg), required=resume)
    job = build_run(cfg)
    log = RunLog(run_dir, name=cfg.name, config=config_dict(cfg), console=cfg.log.console, wandb_cfg=cfg.log.wandb,
                 columns=job.env.columns, first_round=saved.progress.rounds_done if saved else 0,
                 wandb_id=saved.wandb_id if saved else None)
    await note_threads(job.runtime, log)
    progress = await start(saved, cfg, job, log)
    ahead = Ahead(lambda r: rollout(job, cfg, r, log), cfg.loop.overlap, cfg.loop.rounds, episodes_ahead(saved))
    train_seconds = 0.0
    for r in log.rounds(cfg.loop.rounds, start=progress.rounds_done):
        if over_budget(train_seconds, cfg.loop.time_budget_minutes, log):
            break
        began = time.perf_counter()
        episodes_P = await ahead.episodes(r)  # with overlap: generated while round r - 1 trained
        episode_seconds = time.perf_counter() - began
        lessons = job.env.lessons(episodes_P)  # each addressed to a learner, with the policy version that made it
        lessons += await job.retain.lessons(r, job.agents) if job.retain else []  # texts the student is held at the reference on
        ahead.start(r)  # the next rounds' episodes, sampled with the weights from before this round's steps
        versions, metrics = await step_learners(job, lessons, progress, cfg.loop, r, ahead)
        metrics |= await generation_metrics(job.generators)
        timing = round_timing(time.perf_counter() - began, episode_seconds, metrics)
        train_seconds += timing["round/seconds"]
        if cfg.eval.every and (r + 1) % cfg.eval.every == 0 and r + 1 < cfg.loop.rounds:  # accuracy over time
            metrics |= await evaluate(job, cfg, None, f"round {r}", log)
        metrics["time/train_seconds"] = train_seconds
        log.write(r, job.env.metrics(episodes_P) | metrics | timing, episodes_P)
        progress = after_round(progress, r, versions, metrics, job.learners, store)
        if (r + 1) % cfg.checkpoint.every == 0 or r + 1 == cfg.loop.rounds:  # metrics first: resume trims them
            await store.save(progress, learners=job.learners, generators=job.generators, wandb_id=log.wandb_id,
                             config=config_dict(cfg), ahead=ahead.finished())
    summary = dict(progress.summary) | {"time/train_seconds": train_seconds}
    if cfg.eval.after:
        summary |= await evaluate(job, cfg, "after", "after training", log)
    return await finish(job, cfg, run_dir, log, summary)


async def rollout(job: Run, cfg: RunConfig, r: int, log: RunLog) -> list[Any]:
    """Round r's episodes: a function of the round alone, so it can later run ahead of training."""
    return await run_episodes(job.env, job.agents, job.tasks.sample(cfg.loop.problems_per_round, r), job.runtime,
                              cfg.runtime.round_retries, resync=lambda: resync(job.learners), log=log)


class Ahead:
    """The episodes of rounds generated ahead of training (`loop.overlap` k): asyncio tasks started
    before the learners step, so on Ray the generator actors sample while the trainer actors train.
    The weight sync waits for them (`settle`): a generation never mixes two versions, and round
    r + 1's episodes sample round r's pre-step weights, at most k versions behind when trained. On the
    local runtime every call computes on the one event loop without yielding, so the tasks only run
    once the steps are done: the same work, reordered. A checkpoint saves the finished ones
    (`finished`), and a resumed run trains on those rather than sample them again."""

    def __init__(self, fetch: Callable[[int], Awaitable[list[Any]]], overlap: int, rounds: int,
                 done: dict[int, list[Any]]) -> None:
        self.fetch, self.overlap, self.rounds = fetch, overlap, rounds
        self.tasks: dict[int, asyncio.Future[list[Any]]] = {}
        for r, episodes in done.items():
            self.tasks[r] = asyncio.get_running_loop().create_future()
            self.tasks[r].set_result(episodes)

    async def episodes(self, r: int) -> list[Any]:
        """Round r's episodes: those generated ahead, or generated now."""
        task = self.tasks.pop(r, None)
        return await task if task is not None else await self.fetch(r)

    def start(self, r: int) -> None:
        """Rounds r + 1 .. r + k not yet started, started now; none past the last round."""
        for ahead in range(r + 1, min(r + self.overlap, self.rounds - 1) + 1):
            if ahead not in self.tasks:
                self.tasks[ahead] = asyncio.ensure_future(self.fetch(ahead))

    async def settle(self) -> None:
        await asyncio.gather(*self.tasks.values())

    def finished(self) -> dict[int, list[Any]]:
        """Round → episodes, of those generated ahead (all finished once `settle` returned)."""
        return {r: task.result() for r, task in sorted(self.tasks.items())}


async def step_learners(job: Run, lessons: list[Any], progress: Progress, loop: LoopConfig, r: int,
                        ahead: Ahead) -> tuple[dict[str, int], dict[str, float]]:
    """One step of each learner on the lessons addressed to it (independent: each its own lessons
    and agent), then each trained agent's weights synced, once the episodes generated ahead
    meanwhile are done. Returns the versions the generators now sample, and the steps' metrics."""
    began = time.perf_counter()
    metrics: dict[str, float] = {}
    for name, learner in job.learners.items():
        metrics |= await learner.step(lessons, progress.versions.get(name, 0), loop, r)
    stepped = time.perf_counter()
    await ahead.settle()
    settled = time.perf_counter()
    versions = dict(progress.versions) | {name: await learner.sync() for name, learner in job.learners.items()}
    return versions, metrics | {"round/step_seconds": stepped - began, "round/ahead_wait_seconds": settled - stepped,
                                "round/sync_seconds": time.perf_counter() - settled}


async def resync(learners: dict[str, Learner]) -> None:
    """Every trained agent's generator given its learner's weights again (a restarted actor has its initial ones)."""
    for learner in learners.values():
        await learner.sync()


async def start(saved: Checkpoint | None, cfg: RunConfig, job: Run, log: RunLog) -> Progress:
    """Where the rounds begin: the checkpoint's state restored, or round 0 after the env's lessons
    before it and the eval before."""
    for note in job.notes:  # which mixed-in problems and which transfer set: a file, or the built-in stand-in
        log.note(note)
    if saved is not None:
        log.note(f"continuing from {saved.path} ({saved.progress.rounds_done} of {cfg.loop.rounds} rounds done)")
        return await restore(saved, learners=job.learners, generators=job.generators)
    prelude = job.env.prelude(job.tasks)
    for learner in job.learners.values():
        learner.buffer.add(x for x in prelude if x.learner == learner.name)
    before = await evaluate(job, cfg, "before", "before training", log) if cfg.eval.before else {}
    return Progress(summary=before)


async def finish(job: Run, cfg: RunConfig, run_dir: Path, log: RunLog, summary: dict[str, Any]) -> dict[str, Any]:
    """Each learner's weights saved under its name, the transcripts rendered, the log closed with
    the run's summary, which is returned."""
    for name, learner in job.learners.items():
        await save_model(learner.trainer, run_dir / name)
        log.note(f"{name} ({learner.agent}) saved to {run_dir / name}")
    log.note(f"transcripts: {write_viewer(run_dir, title=cfg.name)}")
    if job.transfer is not None:
        summary = summary | {"eval/transfer_source": job.transfer.source}
    log.finish(summary)
    job.runtime.shutdown()
    return summary


def after_round(progress: Progress, r: int, versions: dict[str, int], metrics: dict[str, float],
                learners: dict[str, Learner], store: CheckpointStore) -> Progress:
    """The loop's state after round r. Skipped non-finite steps leave a learner's weights as they
    were, but a learner that keeps producing them is broken: the run stops before writing another
    checkpoint."""
    streaks = {}
    for name, learner in learners.items():
        skipped = metrics.get(f"{learner.prefix}train/nonfinite_skipped")
        streaks[name] = progress.nonfinite_streaks.get(name, 0) + 1 if skipped else 0
        if streaks[name] >= learner.max_nonfinite_steps:
            field = f"learners.{name}" if learner.prefix else "trainer"
            raise UserError(f"round {r}: {streaks[name]} optimizer steps in a row had a non-finite loss or gradient and "
                            f"were skipped (learner '{name}', {field}.max_nonfinite_steps={learner.max_nonfinite_steps}); "
                            f"stopping. The last checkpoint in '{store.root}' is intact: lower {field}.lr or check the "
                            "data, then run again to continue")
    return replace(progress, rounds_done=r + 1, versions=versions, nonfinite_streaks=streaks)


async def run_episodes(env: Any, agents: dict[str, Any], problems: list[Any], runtime: Any, retries: int, *,
                       resync: Callable[[], Awaitable[None]], log: RunLog) -> list[Any]:
    """Every problem's episode, concurrently (one `run_round` call for an env that ranks the round).
    If an actor died (Ray restarts it with its initial weights), the learners' weights are synced
    again and the whole round is rerun."""
    for attempt in range(retries + 1):
        try:
            if isinstance(env, RoundEnv):
                return list(await env.run_round(problems, agents))
            return list(await asyncio.gather(*(env.run(p, agents) for p in problems)))
        except runtime.retryable_errors as exc:
            if attempt == retries:
                raise
            log.note(f"round failed ({type(exc).__name__}); retrying ({attempt + 1}/{retries})")
            await runtime.wait_ready()
            await resync()
    raise AssertionError("unreachable")


async def evaluate(job: Run, cfg: RunConfig, label: str | None, when: str, log: RunLog) -> dict[str, float]:
    """The held-out split as the env scores it; before and after training also the transfer set."""
    metrics, line = await job.env.evaluate(job.agents, job.tasks.eval, label, max_new_tokens=cfg.eval.max_new_tokens)
    log.note(f"eval {when}: {line}")
    if label is not None and job.transfer is not None and cfg.eval.transfer is not None:
        transfer, line = await transfer_report(job.env, job.agents, job.transfer.problems, label,
                                               source=job.transfer.source, max_new_tokens=cfg.eval.transfer.max_new_tokens)
        log.note(f"eval {when}: {line}")
        metrics |= transfer
    return metrics


async def note_threads(runtime: Any, log: RunLog) -> None:
    """Once per run: what each actor computes with, so a slow round can be told from a starved one."""
    for r in await runtime.thread_reports():
        dtype = f", dtype auto = {r['auto_dtype']}" if r.get("auto_dtype") else ""  # what the probe chose here
        log.note(f"{r['actor']} (pid {r['pid']}): {r['torch_threads']} torch threads on {r['cores']} cores"
                 f"{', taking turns on the CPU' if r['takes_turns'] else ''} (OMP_NUM_THREADS={r['OMP_NUM_THREADS']}){dtype}")


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
