"""The embedded default's rounds on the local runtime and on Ray, side by side in one run, and each
generator's tokens/s inside a round against the same generator alone at the same batch size.

    .venv/bin/python bench/round_runtime.py [--rounds 2] [--runtimes local,ray] [key=value ...]

For each runtime: `tutorloop.loop.run` of the config (no eval, no W&B), then per round its seconds,
episode and train seconds, and each generator's tokens/s and mean batch size from metrics.jsonl.
Then, on the same runtime, a fresh copy of each generator samples the round's own prompts for that
role (from episodes.jsonl) at the round's batch size with nothing else running: its standalone
rate. In-round / standalone below 1 is what sharing the CPU with the other roles costs (issue 12
asks for >= 0.8). Writes bench/results/round_runtime.json with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "round_runtime.json"
ROLES = ("student", "teacher")  # the mentor shares the teacher's generator, which reports for both
KINDS = {"student": ("attempt", "revision"), "teacher": ("correction",)}


def run_rounds(config: str, runtime: str, rounds: int, overrides: list[str], run_dir: Path) -> tuple[list[dict], float]:
    from tutorloop import loop
    from tutorloop.config import load_config

    cfg = load_config(config, [f"runtime.kind={runtime}", f"run_dir={run_dir}", f"loop.rounds={rounds}",
                               "eval.before=false", "eval.after=false", "log.console=false",
                               "log.wandb.mode=disabled", *overrides])
    began = time.perf_counter()
    asyncio.run(loop.run(cfg))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows, time.perf_counter() - began


def role_prompts(run_dir: Path, role: str) -> list[tuple]:
    """Every prompt this role was sampled on in the run, exactly as it saw it."""
    prompts = []
    for line in (run_dir / "episodes.jsonl").read_text().splitlines():
        for turn in json.loads(line)["turns"]:
            if turn["role"] == role and turn["kind"] in KINDS[role]:
                prompts.append(tuple(turn["prompt"]))
    return prompts


def standalone(config: str, runtime: str, overrides: list[str], run_dir: Path, batch: dict[str, float]) -> dict:
    """tokens/s of each role's generator alone, on the round's prompts at the round's batch size."""
    from tutorloop.agents import build_agents
    from tutorloop.config import load_config
    from tutorloop.envs.moves import stopping
    from tutorloop.graders import ANSWER_STOP
    from tutorloop.runtime import build_runtime
    from tutorloop.trainers import trained_agents

    cfg = load_config(config, [f"runtime.kind={runtime}", *overrides])
    rt = build_runtime(cfg.runtime)
    try:  # the agents that play each part; the student and teacher sample until the answer line
        names = {role: cfg.env.parts()[role] for role in ROLES}
        agents = build_agents(rt, cfg.agents, trained=trained_agents(cfg), seed=cfg.seed,
                              names=tuple(names.values()))
        return {role: asyncio.run(_alone(agents[names[role]].generator, role_prompts(run_dir, role), round(batch[role]),
                                         stopping(agents[names[role]], ANSWER_STOP)))
                for role in ROLES if batch.get(role)}
    finally:
        rt.shutdown()


async def _alone(generator, prompts: list[tuple], batch: int, params, batches: int = 3) -> float:
    """`batches` batches of `batch` rows, taken in turn from the round's prompts (repeated if few)."""
    batch = max(1, batch)
    cycle = [prompts[i % len(prompts)] for i in range(batch * (batches + 1))]
    await generator.generate(cycle[:batch], params)  # warm-up: first calls allocate
    await generator.stats()
    for start in range(batch, len(cycle), batch):
        await generator.generate(cycle[start:start + batch], params)
    stats = await generator.stats()
    return stats["gen_tokens"] / stats["gen_seconds"]


def summarize(runtime: str, rows: list[dict], seconds: float, alone: dict[str, float]) -> dict:
    rounds = [{"round": r["round"], "seconds": r["round/seconds"], "episode_seconds": r["round/episode_seconds"],
               "train_seconds": r.get("train/seconds"),
               **{f"{role}_tok_s": r.get(f"gen/{role}_tokens_per_s") for role in ROLES},
               **{f"{role}_batch": r.get(f"gen/{role}_batch_size") for role in ROLES}} for r in rows]
    share = {role: statistics.mean(r[f"{role}_tok_s"] for r in rounds if r[f"{role}_tok_s"]) / alone[role]
             for role in alone}
    return {"runtime": runtime, "wall_seconds": seconds, "rounds": rounds, "standalone_tok_s": alone,
            "in_round_over_standalone": share}


def table(results: list[dict], machine: str) -> str:
    lines = [f"Machine: {machine}", "", "| runtime | round | seconds | episodes s | train s | student tok/s (batch) | "
             "teacher tok/s (batch) |", "|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rounds"]:
            cells = [f"{r[f'{role}_tok_s'] or 0:.1f} ({r[f'{role}_batch'] or 0:.1f})" for role in ROLES]
            lines.append(f"| {res['runtime']} | {r['round']} | {r['seconds']:.1f} | {r['episode_seconds']:.1f} | "
                         f"{r['train_seconds'] or 0:.1f} | {cells[0]} | {cells[1]} |")
        alone = ", ".join(f"{role} {v:.1f} tok/s alone, in-round {res['in_round_over_standalone'][role]:.2f}x"
                          for role, v in res["standalone_tok_s"].items())
        lines.append(f"| {res['runtime']} | all | {res['wall_seconds']:.1f} (whole run) | | | {alone} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    from tutorloop.hardware import machine, machine_line

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runtimes", default="local,ray")
    parser.add_argument("--json", default=str(RESULTS), help="where the results go")
    parser.add_argument("overrides", nargs="*", help="key=value for every run")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="round-runtime-") as tmp:
        for runtime in args.runtimes.split(","):
            run_dir = Path(tmp) / runtime
            rows, seconds = run_rounds(args.config, runtime, args.rounds, args.overrides, run_dir)
            batch = {role: statistics.mean(r.get(f"gen/{role}_batch_size", 0) for r in rows) for role in ROLES}
            alone = standalone(args.config, runtime, args.overrides, run_dir, batch)
            results.append(summarize(runtime, rows, seconds, alone))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
                                   "command": " ".join(["bench/round_runtime.py", *(argv or [])]),
                                   "results": results}, indent=1) + "\n")
    print(table(results, machine_line()))
    return results


if __name__ == "__main__":
    main()
