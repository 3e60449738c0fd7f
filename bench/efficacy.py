"""Learning efficacy: the embedded default under one fixed wall-clock budget, once per objective
(SFT only, DPO only, OPD only, and the mix), with the same seed and the same problems. Held-out
accuracy over training time goes into a PNG and a markdown report in the output dir, and into a
W&B run (offline unless WANDB_MODE says otherwise); each arm is also a W&B run of its own.

    .venv/bin/python bench/efficacy.py [--minutes 30] [--out runs/efficacy] [--arms sft,dpo,kd,mixed]
                                       [--config configs/default.yaml] [key=value ...]

Each arm is `tutorloop run CONFIG` with `loop.time_budget_minutes`, `eval.every=1` and the arm's
objective weights; the budget counts the rounds only, so every arm gets the same training time
however long its evaluations take. Extra `key=value` overrides go to every arm. A config with
`eval.transfer` also reports each arm's transfer accuracy before and after, under both prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ARMS = {
    "sft": {"sft": 1.0, "dpo": 0.0, "kd": 0.0},
    "dpo": {"sft": 0.0, "dpo": 1.0, "kd": 0.0},
    "kd": {"sft": 0.0, "dpo": 0.0, "kd": 1.0},
    "mixed": None,  # the config's own weights
}
TARGET_POINTS = 15.0
"""Issue 6: at least +15 accuracy points over the untrained student within 30 minutes."""


@dataclass(frozen=True, slots=True)
class Curve:
    arm: str
    seconds: tuple[float, ...]
    """Training wall-clock (rounds only) at each evaluation; 0 is the untrained student."""
    accuracy: tuple[float, ...]
    rounds: int
    transfer: dict[str, float] = field(default_factory=dict)
    """The eval.transfer set before and after training under both prompts, by prompt and time
    (`train_before`, `train_after`, `chat_before`, `chat_after`); empty when the config has none."""

    @property
    def gain_points(self) -> float:
        return 100 * (self.accuracy[-1] - self.accuracy[0])

    @property
    def best_points(self) -> float:
        return 100 * (max(self.accuracy) - self.accuracy[0])


def run_arm(arm: str, weights: dict[str, float] | None, args: argparse.Namespace) -> Path:
    run_dir = Path(args.out) / arm
    shutil.rmtree(run_dir, ignore_errors=True)  # an old checkpoint there would be resumed, not rerun
    overrides = [f"run_dir={run_dir}", f"name=efficacy-{arm}", "loop.rounds=1000",
                 f"loop.time_budget_minutes={args.minutes}", "eval.every=1", "eval.before=true", "eval.after=true"]
    overrides += [f"trainer.objectives.{k}={v}" for k, v in (weights or {}).items()]  # a bare weight: default params
    command = [sys.executable, "-m", "tutorloop.cli", "run", args.config, *overrides, *args.overrides]
    print(f"[{arm}] {' '.join(command[2:])}", flush=True)
    began = time.perf_counter()
    with open(Path(args.out) / f"{arm}.log", "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"efficacy: arm '{arm}' failed (exit {done.returncode}); see {Path(args.out) / f'{arm}.log'}")
    print(f"[{arm}] done in {time.perf_counter() - began:.0f} s", flush=True)
    return run_dir


def read_curve(arm: str, run_dir: Path) -> Curve:
    """(seconds, accuracy) from the run's summary (before, after) and metrics.jsonl (each round)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    points = [(0.0, summary["eval/accuracy_before"])]
    points += [(r["time/train_seconds"], r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
    points.append((summary["time/train_seconds"], summary["eval/accuracy_after"]))
    points = sorted(dict(points).items())  # the last round's eval and "after" coincide in time
    return Curve(arm, tuple(p[0] for p in points), tuple(p[1] for p in points), rounds=len(rows),
                 transfer=transfer_scores(summary))


def transfer_scores(summary: dict) -> dict[str, float]:
    """`eval/transfer_accuracy_before`, `eval/transfer_chat_accuracy_after`... as train_before, chat_after..."""
    out = {}
    for prompt, key in (("train", "transfer_accuracy"), ("chat", "transfer_chat_accuracy")):
        for when in ("before", "after"):
            if (value := summary.get(f"eval/{key}_{when}")) is not None:
                out[f"{prompt}_{when}"] = value
    return out


def plot(curves: list[Curve], path: Path, minutes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for c in curves:
        ax.plot([s / 60 for s in c.seconds], [100 * a for a in c.accuracy], marker="o", label=c.arm)
    ax.axhline(100 * curves[0].accuracy[0] + TARGET_POINTS, color="grey", linestyle="--", linewidth=0.8,
               label=f"untrained + {TARGET_POINTS:g} points")
    ax.set_xlabel("training wall clock (minutes, evaluation excluded)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"SmolLM2-135M student, {minutes:g}-minute budget per objective")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(curves: list[Curve], args: argparse.Namespace, png: Path) -> str:
    from tutorloop.hardware import machine_line

    lines = [f"# Learning efficacy ({time.strftime('%Y-%m-%d')})", "", f"Machine: {machine_line()}.", "",
             f"`{' '.join(['bench/efficacy.py', *sys.argv[1:]])}`: `{args.config}` for a budget of {args.minutes:g} "
             "minutes of rounds per objective, same seed and problems; greedy accuracy on the held-out split.", "",
             f"![accuracy over time]({png.name})", "",
             "| objective | rounds | untrained | final | best | gain (points) |", "|---|---|---|---|---|---|"]
    for c in curves:
        lines.append(f"| {c.arm} | {c.rounds} | {100 * c.accuracy[0]:.1f}% | {100 * c.accuracy[-1]:.1f}% | "
                     f"{100 * max(c.accuracy):.1f}% | {c.gain_points:+.1f} |")
    lines += transfer_table(curves)
    lines += ["", *verdicts(curves, args.minutes)]
    return "\n".join(lines) + "\n"


def transfer_table(curves: list[Curve]) -> list[str]:
    """Each arm on the transfer set (eval.transfer), before and after, under the run's prompt and the
    step-by-step chat prompt; nothing when no arm has one."""
    if not any(c.transfer for c in curves):
        return []
    lines = ["", "Transfer set (never trained on), greedy:", "",
             "| objective | run's prompt before | after | chat prompt before | after |", "|---|---|---|---|---|"]
    for c in curves:
        cells = [f"{100 * c.transfer[k]:.1f}%" if k in c.transfer else "-"
                 for k in ("train_before", "train_after", "chat_before", "chat_after")]
        lines.append(f"| {c.arm} | {' | '.join(cells)} |")
    return lines


def verdicts(curves: list[Curve], minutes: float) -> list[str]:
    """The issue's two targets, stated as met or missed with the numbers."""
    by_arm = {c.arm: c for c in curves}
    out = []
    best = max(curves, key=lambda c: c.gain_points)
    met = best.gain_points >= TARGET_POINTS and minutes <= 30
    out.append(f"- Target +{TARGET_POINTS:g} points within 30 minutes: {'met' if met else 'missed'} "
               f"(best final gain {best.gain_points:+.1f} points, {best.arm}, in {minutes:g} minutes).")
    singles = [c for c in curves if c.arm != "mixed"]
    if "mixed" in by_arm and singles:
        top = max(singles, key=lambda c: c.accuracy[-1])
        mixed = by_arm["mixed"]
        out.append(f"- Mixed at least matches the best single objective: "
                   f"{'met' if mixed.accuracy[-1] >= top.accuracy[-1] else 'missed'} "
                   f"(mixed {100 * mixed.accuracy[-1]:.1f}% vs {top.arm} {100 * top.accuracy[-1]:.1f}%).")
    return out


def log_wandb(curves: list[Curve], out: Path, png: Path) -> None:
    import wandb

    run = wandb.init(project="tutorloop", name="efficacy", job_type="bench", dir=str(out),
                     mode=os.environ.get("WANDB_MODE", "offline"))
    for c in curves:
        for seconds, accuracy in zip(c.seconds, c.accuracy):
            run.log({f"efficacy/{c.arm}_accuracy": accuracy, "efficacy/train_minutes": seconds / 60})
        run.summary.update({f"efficacy/{c.arm}_transfer_{key}": value for key, value in c.transfer.items()})
    run.log({"efficacy/plot": wandb.Image(str(png)),
             "efficacy/table": wandb.Table(columns=["objective", "rounds", "untrained", "final", "gain_points"],
                                           data=[[c.arm, c.rounds, c.accuracy[0], c.accuracy[-1], c.gain_points]
                                                 for c in curves])})
    run.finish()


def main(argv: list[str] | None = None) -> list[Curve]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget of rounds per objective")
    parser.add_argument("--out", default="runs/efficacy")
    parser.add_argument("--arms", default="sft,dpo,kd,mixed")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value for every arm")
    args = parser.parse_args(argv)
    arms = args.arms.split(",")
    if unknown := [a for a in arms if a not in ARMS]:
        raise SystemExit(f"efficacy: --arms: unknown {unknown}; choose from {list(ARMS)}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    curves = [read_curve(arm, run_arm(arm, ARMS[arm], args)) for arm in arms]
    png = Path(args.out) / "accuracy.png"
    plot(curves, png, args.minutes)
    text = report(curves, args, png)
    (Path(args.out) / "report.md").write_text(text)
    (Path(args.out) / "curves.json").write_text(json.dumps([asdict(c) for c in curves], indent=1))
    log_wandb(curves, Path(args.out), png)
    print(text)
    return curves


if __name__ == "__main__":
    main()
