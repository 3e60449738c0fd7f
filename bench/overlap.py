"""`loop.overlap` off and on, side by side in one run: the same config for N rounds with overlap 0
and 1, on the local runtime and on Ray with the generators' actors pinned to one core and the
trainer's to another, with the per-phase times of each round.

    .venv/bin/python bench/overlap.py [--rounds 5] [--runtimes local,ray] [--hidden 128] [key=value ...]

Models: tiny random Llamas (the byte-level tokenizer of tests/conftest.py, `--hidden`, 4 layers),
student and teacher, built in a temp dir; env correction with sft + dpo + kd, LoRA. Phases, from
metrics.jsonl (medians over the rounds after the first):

- episodes: waiting for the round's episodes at its top (near 0 with overlap: they were made ahead);
- step: the learners' optimizer steps (with overlap, the next round generates meanwhile on Ray);
- wait: after the steps, waiting for the episodes generated ahead to finish (before the sync);
- sync: the weight sync; round: the whole round.

On the local runtime every call computes on the one event loop without yielding, so overlap only
reorders the work. On Ray each actor is a process: pinned to separate cores (os.sched_setaffinity,
one torch thread each), generation and the step do run at once. Writes bench/results/overlap.json
and bench/results/overlap.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = {"episodes": "round/episode_seconds", "step": "round/step_seconds", "wait": "round/ahead_wait_seconds",
          "sync": "round/sync_seconds", "round": "round/seconds"}


def models(root: Path, hidden: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import save_tiny_lm

    return save_tiny_lm(root / "student", 0, layers=4, hidden=hidden), save_tiny_lm(root / "teacher", 1, layers=4, hidden=hidden)


def config_overrides(student: Path, teacher: Path, runtime: str, overlap: int, rounds: int, run_dir: Path) -> list[str]:
    return [f"agents.student.model={student}", f"agents.teacher.model={teacher}", f"agents.mentor.model={teacher}",
            "agents.student.sampling.max_new_tokens=32", "agents.teacher.sampling.max_new_tokens=24",
            "agents.mentor.sampling.max_new_tokens=16", "tasks.num_train=64", "tasks.num_eval=4",
            "trainer.lora={r: 8, alpha: 16, target_modules: [q_proj, v_proj]}", "trainer.autocast=off",
            "trainer.objectives={sft: 1.0, dpo: 0.5, kd: {top_k: 8}}", f"runtime.kind={runtime}",
            f"loop.rounds={rounds}", "loop.problems_per_round=8", f"loop.overlap={overlap}",
            f"loop.max_staleness={overlap}", f"run_dir={run_dir}", "eval.before=false", "eval.after=false",
            "log.console=false", "log.wandb.mode=disabled", "checkpoint.every=1000"]


def _pin(actor: object, core: int) -> list[int]:
    import os

    import torch

    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    return sorted(os.sched_getaffinity(0))


def pinned_build_run(build_run):
    """loop.build_run, then every generator actor pinned to core 0 and every trainer actor to core 1."""
    def build(cfg):
        import ray

        job = build_run(cfg)
        cores = {id(h): 0 for g in job.generators.values() for h in g.handles}
        cores |= {id(h): 1 for learner in job.learners.values() for h in learner.trainer.handles}
        ray.get([h.__ray_call__.remote(_pin, cores.get(id(h), 0)) for h in job.runtime.actors])
        return job
    return build


def run_one(runtime: str, overlap: int, rounds: int, student: Path, teacher: Path, extra: list[str]) -> dict:
    from tutorloop import loop
    from tutorloop.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cfg = load_config("configs/default.yaml", config_overrides(student, teacher, runtime, overlap, rounds, run_dir)
                          + (["runtime.threads_per_actor=1", "runtime.num_cpus=2"] if runtime == "ray" else []) + extra)
        original = loop.build_run
        if runtime == "ray":
            loop.build_run = pinned_build_run(original)
        began = time.perf_counter()
        try:
            asyncio.run(loop.run(cfg))
        finally:
            loop.build_run = original
        wall = time.perf_counter() - began
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steady = rows[1:] or rows
    return {"runtime": runtime, "overlap": overlap, "rounds": len(rows), "wall_seconds": wall,
            "phases_ms": {name: 1000 * statistics.median(r.get(key, 0.0) for r in steady) for name, key in PHASES.items()},
            "kd_lessons": [r.get("lessons/kd", 0) for r in rows], "dropped_stale": rows[-1].get("buffer/dropped_stale", 0)}


def table(results: list[dict], machine: str, command: str) -> str:
    lines = [f"# loop.overlap off and on ({machine})", "", f"`{command}`", "",
             "Median ms per round after the first; noisy: the machine is shared with other jobs.", "",
             "| runtime | overlap | episodes | step | wait | sync | round | speed-up |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = {r["runtime"]: r["phases_ms"]["round"] for r in results if r["overlap"] == 0}
    for r in results:
        p = r["phases_ms"]
        gain = base.get(r["runtime"], p["round"]) / p["round"] if p["round"] else 0.0
        lines.append(f"| {r['runtime']} | {r['overlap']} | {p['episodes']:.0f} | {p['step']:.0f} | {p['wait']:.0f} | "
                     f"{p['sync']:.0f} | {p['round']:.0f} | {gain:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    from tutorloop.hardware import machine_line

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runtimes", default="local,ray")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        student, teacher = models(Path(tmp), args.hidden)
        for runtime in args.runtimes.split(","):
            for overlap in (0, 1):
                results.append(run_one(runtime, overlap, args.rounds, student, teacher, args.overrides))
                print(json.dumps(results[-1]), flush=True)
    command = "python bench/overlap.py " + " ".join(argv if argv is not None else sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overlap.json").write_text(json.dumps({"machine": machine_line(), "command": command,
                                                      "results": results}, indent=2) + "\n")
    (RESULTS / "overlap.md").write_text(table(results, machine_line(), command))
    print(table(results, machine_line(), command))
    return results


if __name__ == "__main__":
    main()
