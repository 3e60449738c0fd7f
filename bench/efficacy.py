"""Learning efficacy: the embedded default under one fixed wall-clock budget per arm and seed, with
the same problems for every arm at a given seed. Arms: SFT only, DPO only, OPD only (`kd`), the
objective mix as it was before issue 16 (`mixed`: SFT + DPO + OPD, no anchor), that mix with its
`ref_kl` anchors only (`anchored`), the config's own (`recipe`: in configs/default.yaml the anchors
and tasks.retain), and co-training. Held-out accuracy over training time and each arm's final
accuracy with 95% intervals go into PNGs and a markdown report in the output dir, and into a W&B
run (offline unless WANDB_MODE says otherwise); each arm and seed is also a W&B run of its own.

    .venv/bin/python bench/efficacy.py [--minutes 30] [--seeds 0,1,2] [--eval-problems 256]
        [--transfer-problems 256] [--eval-every 1] [--out runs/efficacy] [--fresh]
        [--arms sft,dpo,kd,mixed,recipe,co_training] [--config configs/default.yaml] [key=value ...]

Each arm is `tutorloop run CONFIG` with `loop.time_budget_minutes`, `eval.every`, `seed` and the
arm's objective weights; the budget counts the rounds only, so every arm gets the same training time
however long its evaluations take. Extra `key=value` overrides go to every arm. A config with
`eval.transfer` also reports each arm's transfer accuracy before and after, under both prompts. The
arms on --config share one untrained evaluation per seed, and a study that stops (a session's end)
continues where it stopped when run again with the same arguments.

Intervals: over 2 or more seeds, mean +- t(0.975, seeds - 1) * sd / sqrt(seeds) of the per-seed
figures (seed-to-seed spread, which includes the eval sample's); over one seed, the Wilson interval
of that run's problems. Sizing on a 2-core CPU: README "Learning that transfers".
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

@dataclass(frozen=True, slots=True)
class Arm:
    weights: dict[str, float] | None = None
    """Objective weights in place of the config's (None: the config's own)."""
    overrides: tuple[str, ...] = ()
    config: str | None = None
    """Another config than --config (co-training has its own learners)."""


OFF = {"kl_ref": 0.0}  # an arm without the retained texts' anchor (0 also adds it where a config lacks it)
ARMS = {
    "sft": Arm({"sft": 1.0, "dpo": 0.0, "kd": 0.0} | OFF),  # a bare weight: the objective's default
    "dpo": Arm({"sft": 0.0, "dpo": 1.0, "kd": 0.0} | OFF),  # parameters, so no `ref_kl` anchor either
    "kd": Arm({"sft": 0.0, "dpo": 0.0, "kd": 1.0} | OFF),
    "mixed": Arm({"sft": 1.0} | OFF, overrides=("trainer.objectives.kd.ref_kl=0.0",)),  # the mix before issue 16
    "anchored": Arm(OFF),  # the config's mix and its ref_kl anchors, without tasks.retain
    "recipe": Arm(),  # the config's own: in configs/default.yaml issue 16's recipe (anchors + retain)
    "co_training": Arm(config="configs/co_training.yaml"),
}
T975 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23)
"""Student's t quantile at 0.975 for 1..10 degrees of freedom (1.96 beyond)."""
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
    seed: int = 0
    problems: int = 0
    """Held-out problems per evaluation (for the one-seed Wilson interval)."""

    @property
    def gain_points(self) -> float:
        return 100 * (self.accuracy[-1] - self.accuracy[0])

    @property
    def best_points(self) -> float:
        return 100 * (max(self.accuracy) - self.accuracy[0])


def run_arm(arm: str, seed: int, args: argparse.Namespace, *, before: Path | None = None) -> Path:
    """One arm at one seed: `tutorloop run` in `out/ARM-sSEED`. `before`: another arm's run dir at this
    seed and config whose untrained scores this one shares (the same model on the same problems), so
    this run skips its own evaluation before training. A run dir whose summary came from the same
    command is kept, not rerun (`--fresh` reruns it), so a study can be continued where it stopped."""
    spec, run_dir = ARMS[arm], Path(args.out) / f"{arm}-s{seed}"
    overrides = [f"run_dir={run_dir}", f"name=efficacy-{arm}-s{seed}", f"seed={seed}", "loop.rounds=1000",
                 f"loop.time_budget_minutes={args.minutes}", f"eval.every={args.eval_every}",
                 f"eval.before={'false' if before else 'true'}", "eval.after=true"]
    overrides += [f"tasks.num_eval={args.eval_problems}"] if args.eval_problems else []
    overrides += [f"eval.transfer.num={args.transfer_problems}"] if args.transfer_problems else []
    overrides += [f"trainer.objectives.{k}={v}" for k, v in (spec.weights or {}).items()]  # a bare weight: default params
    command = [sys.executable, "-m", "tutorloop.cli", "run", spec.config or args.config, *overrides,
               *spec.overrides, *args.overrides]
    stamp = run_dir / "efficacy_command.json"
    if not args.fresh and (run_dir / "summary.json").exists() and stamp.exists() \
            and json.loads(stamp.read_text()) == command[2:]:
        print(f"[{arm} seed {seed}] kept from an earlier run of the same command ({run_dir})", flush=True)
        return run_dir
    shutil.rmtree(run_dir, ignore_errors=True)  # an old checkpoint there would be resumed, not rerun
    print(f"[{arm} seed {seed}] {' '.join(command[2:])}", flush=True)
    began = time.perf_counter()
    log = Path(args.out) / f"{arm}-s{seed}.log"
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"efficacy: arm '{arm}' seed {seed} failed (exit {done.returncode}); see {log}")
    stamp.write_text(json.dumps(command[2:]))
    print(f"[{arm} seed {seed}] done in {time.perf_counter() - began:.0f} s", flush=True)
    return run_dir


def read_curve(arm: str, run_dir: Path, seed: int = 0, before: Path | None = None) -> Curve:
    """(seconds, accuracy) from the run's summary (before, after) and metrics.jsonl (each round);
    the untrained scores from `before`'s summary when this run shares them."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if before is not None:
        shared = json.loads((before / "summary.json").read_text())
        summary = {k: v for k, v in shared.items() if k.endswith("_before")} | summary
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    points = [(0.0, summary["eval/accuracy_before"])]
    points += [(r["time/train_seconds"], r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
    points.append((summary["time/train_seconds"], summary["eval/accuracy_after"]))
    points = sorted(dict(points).items())  # the last round's eval and "after" coincide in time
    config = json.loads((run_dir / "config.json").read_text())
    return Curve(arm, tuple(p[0] for p in points), tuple(p[1] for p in points), rounds=len(rows),
                 transfer=transfer_scores(summary), seed=seed, problems=config["tasks"]["num_eval"])


def run_seed(seed: int, arms: list[str], args: argparse.Namespace) -> list[Curve]:
    """Every arm at one seed; the arms on --config share the first one's untrained evaluation."""
    curves, first = [], None
    for arm in arms:
        shares = ARMS[arm].config is None and first is not None
        run_dir = run_arm(arm, seed, args, before=first if shares else None)
        curves.append(read_curve(arm, run_dir, seed, before=first if shares else None))
        if ARMS[arm].config is None and first is None:
            first = run_dir
    return curves


def transfer_scores(summary: dict) -> dict[str, float]:
    """`eval/transfer_accuracy_before`, `eval/transfer_chat_accuracy_after`... as train_before, chat_after..."""
    out = {}
    for prompt, key in (("train", "transfer_accuracy"), ("chat", "transfer_chat_accuracy")):
        for when in ("before", "after"):
            if (value := summary.get(f"eval/{key}_{when}")) is not None:
                out[f"{prompt}_{when}"] = value
    return out


@dataclass(frozen=True, slots=True)
class Estimate:
    mean: float
    half: float
    """Half-width of the 95% interval (see the module docstring)."""

    def cell(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.half:.1f}"


def estimate(values: list[float], problems: int) -> Estimate:
    """Mean and 95% half-width of per-seed proportions (or of one run's, by Wilson)."""
    import math

    mean = sum(values) / len(values)
    if len(values) >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        t = T975[len(values) - 2] if len(values) - 1 <= len(T975) else 1.96
        return Estimate(mean, t * sd / math.sqrt(len(values)))
    n, z = max(problems, 1), 1.96  # Wilson: centre and half-width, reported around the observed mean
    half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(mean, half)


def by_arm(curves: list[Curve]) -> dict[str, list[Curve]]:
    out: dict[str, list[Curve]] = {}
    for c in curves:
        out.setdefault(c.arm, []).append(c)
    return out


def finals(runs: list[Curve]) -> dict[str, Estimate]:
    """An arm's built-in accuracy after training, its gain, and its transfer accuracy after training
    under both prompts, each over its seeds."""
    n = runs[0].problems
    out = {"after": estimate([c.accuracy[-1] for c in runs], n),
           "gain": estimate([c.accuracy[-1] - c.accuracy[0] for c in runs], n)}
    for key in ("train_before", "train_after", "chat_before", "chat_after"):
        if all(key in c.transfer for c in runs):
            out[key] = estimate([c.transfer[key] for c in runs], 0)
    return out


def plot(curves: list[Curve], path: Path, minutes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for i, (arm, runs) in enumerate(by_arm(curves).items()):
        for j, c in enumerate(runs):
            ax.plot([s / 60 for s in c.seconds], [100 * a for a in c.accuracy], marker="o", color=f"C{i}",
                    alpha=0.8 if len(runs) == 1 else 0.45, label=arm if j == 0 else None)
    ax.axhline(100 * curves[0].accuracy[0] + TARGET_POINTS, color="grey", linestyle="--", linewidth=0.8,
               label=f"untrained + {TARGET_POINTS:g} points")
    ax.set_xlabel("training wall clock (minutes, evaluation excluded)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"SmolLM2-135M student, {minutes:g}-minute budget per arm (one line per seed)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_finals(curves: list[Curve], path: Path) -> None:
    """Final accuracy per arm with 95% intervals: the built-in set, and the transfer set under both prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = by_arm(curves)
    keys = [("after", "built-in"), ("train_after", "transfer, run's prompt"), ("chat_after", "transfer, chat prompt")]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=120)
    width = 0.8 / len(keys)
    for k, (key, label) in enumerate(keys):
        stats = [finals(runs).get(key) for runs in arms.values()]
        xs = [i + k * width for i, e in enumerate(stats) if e is not None]
        ys = [e for e in stats if e is not None]
        if ys:
            ax.bar(xs, [100 * e.mean for e in ys], width, yerr=[100 * e.half for e in ys], capsize=3, label=label)
    ax.set_xticks([i + width for i in range(len(arms))], list(arms))
    ax.set_ylabel("accuracy after training (%)")
    ax.set_title("Final accuracy, 95% intervals over seeds")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(curves: list[Curve], args: argparse.Namespace, pngs: tuple[Path, Path]) -> str:
    from tutorloop.hardware import machine_line

    seeds = sorted({c.seed for c in curves})
    lines = [f"# Learning efficacy ({time.strftime('%Y-%m-%d')})", "", f"Machine: {machine_line()}.", "",
             f"`{' '.join(['bench/efficacy.py', *sys.argv[1:]])}`: `{args.config}` for a budget of {args.minutes:g} "
             f"minutes of rounds per arm and seed, seeds {seeds}; greedy accuracy on {curves[0].problems} "
             "held-out problems; means with 95% intervals (module docstring).", "",
             f"![accuracy over time]({pngs[0].name})", "", f"![final accuracy]({pngs[1].name})", "",
             "| arm | seeds | rounds | untrained | after | gain (points) |", "|---|---|---|---|---|---|"]
    for arm, runs in by_arm(curves).items():
        f = finals(runs)
        rounds = "/".join(str(c.rounds) for c in runs)
        untrained = sum(c.accuracy[0] for c in runs) / len(runs)
        lines.append(f"| {arm} | {len(runs)} | {rounds} | {100 * untrained:.1f}% | {f['after'].cell()}% | "
                     f"{f['gain'].cell()} |")
    lines += transfer_table(curves)
    lines += ["", *verdicts(curves, args.minutes)]
    return "\n".join(lines) + "\n"


def transfer_table(curves: list[Curve]) -> list[str]:
    """Each arm on the transfer set (eval.transfer), before and after, under the run's prompt and the
    step-by-step chat prompt; nothing when no arm has one."""
    if not any(c.transfer for c in curves):
        return []
    lines = ["", "Transfer set (never trained on), greedy:", "",
             "| arm | run's prompt before | after | chat prompt before | after |", "|---|---|---|---|---|"]
    for arm, runs in by_arm(curves).items():
        f = finals(runs)
        cells = [f"{f[k].cell()}%" if k in f else "-" for k in ("train_before", "train_after", "chat_before", "chat_after")]
        lines.append(f"| {arm} | {' | '.join(cells)} |")
    return lines


def verdicts(curves: list[Curve], minutes: float) -> list[str]:
    """The issue's targets, stated as met or missed with the numbers and their intervals."""
    stats = {arm: finals(runs) for arm, runs in by_arm(curves).items()}
    out = []
    best = max(stats, key=lambda a: stats[a]["gain"].mean)
    gain = stats[best]["gain"]
    met = gain.mean * 100 >= TARGET_POINTS and minutes <= 30
    out.append(f"- Target +{TARGET_POINTS:g} points within 30 minutes: {'met' if met else 'missed'} "
               f"(best mean gain {100 * gain.mean:+.1f} ± {100 * gain.half:.1f} points, {best}, in {minutes:g} minutes).")
    singles = [a for a in stats if a in ("sft", "dpo", "kd")]
    for mix in (a for a in ("mixed", "anchored", "recipe") if a in stats and singles):
        top = max(singles, key=lambda a: stats[a]["after"].mean)
        m, t = stats[mix]["after"], stats[top]["after"]
        apart = abs(m.mean - t.mean) > m.half + t.half
        word = "beats" if m.mean > t.mean else "does not beat"
        out.append(f"- {mix} {word} the best single objective ({top}) at equal wall clock: {m.cell()}% vs "
                   f"{t.cell()}%; the intervals {'do not overlap' if apart else 'overlap (not resolved at this size)'}.")
    return out


def log_wandb(curves: list[Curve], out: Path, pngs: tuple[Path, Path]) -> None:
    import wandb

    run = wandb.init(project="tutorloop", name="efficacy", job_type="bench", dir=str(out),
                     mode=os.environ.get("WANDB_MODE", "offline"))
    for c in curves:
        for seconds, accuracy in zip(c.seconds, c.accuracy):
            run.log({f"efficacy/{c.arm}_s{c.seed}_accuracy": accuracy, "efficacy/train_minutes": seconds / 60})
        run.summary.update({f"efficacy/{c.arm}_s{c.seed}_transfer_{key}": value for key, value in c.transfer.items()})
    rows = [[arm, len(runs), f["after"].mean, f["after"].half, f["gain"].mean, f["gain"].half]
            for arm, runs in by_arm(curves).items() for f in [finals(runs)]]
    run.log({"efficacy/plot": wandb.Image(str(pngs[0])), "efficacy/finals": wandb.Image(str(pngs[1])),
             "efficacy/table": wandb.Table(columns=["arm", "seeds", "after", "after_ci", "gain", "gain_ci"], data=rows)})
    run.finish()


def main(argv: list[str] | None = None) -> list[Curve]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget of rounds per arm and seed")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; every arm runs once per seed")
    parser.add_argument("--eval-problems", type=int, default=0, help="tasks.num_eval for every run (0: the config's)")
    parser.add_argument("--transfer-problems", type=int, default=0, help="eval.transfer.num (0: the config's)")
    parser.add_argument("--eval-every", type=int, default=1, help="held-out accuracy every N rounds (0: before and after only)")
    parser.add_argument("--fresh", action="store_true", help="rerun arms whose run dir already holds this command's results")
    parser.add_argument("--out", default="runs/efficacy")
    parser.add_argument("--arms", default="sft,dpo,kd,mixed,recipe,co_training")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value for every arm")
    args = parser.parse_args(argv)
    arms = args.arms.split(",")
    if unknown := [a for a in arms if a not in ARMS]:
        raise SystemExit(f"efficacy: --arms: unknown {unknown}; choose from {list(ARMS)}")
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"efficacy: --seeds: expected integers like 0,1,2; got {args.seeds!r}") from None
    Path(args.out).mkdir(parents=True, exist_ok=True)
    curves = [c for seed in seeds for c in run_seed(seed, arms, args)]
    pngs = (Path(args.out) / "accuracy.png", Path(args.out) / "final.png")
    plot(curves, pngs[0], args.minutes)
    plot_finals(curves, pngs[1])
    text = report(curves, args, pngs)
    (Path(args.out) / "report.md").write_text(text)
    (Path(args.out) / "curves.json").write_text(json.dumps([asdict(c) for c in curves], indent=1))
    log_wandb(curves, Path(args.out), pngs)
    print(text)
    return curves


if __name__ == "__main__":
    main()
