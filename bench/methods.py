"""Every seed method's config for a few rounds on the embedded model, one after the other, and the
README's methods table from what they report (issue 14).

    .venv/bin/python bench/methods.py [--rounds 2] [--only redi,gkd] [--out DIR] [key=value ...]

Each config runs as `tutorloop run configs/methods/<name>.yaml loop.rounds=R run_dir=OUT/<name>`
in its own process (so one run's models are freed before the next loads), with W&B off. Chained
configs run in order, the later one reading the earlier one's saved learner (`CHAINS`). Per method
it keeps accuracy before and after (or success@1 for a tutoring env), the method's own metrics from
each round's metrics.jsonl, and the wall time. Writes bench/results/methods/<name>.json and
bench/results/methods/TABLE.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "methods"
RESULTS = Path(__file__).resolve().parent / "results" / "methods"

OWN_METRICS: dict[str, tuple[str, ...]] = {
    "fine_tune_cot": ("distill/verified_rate", "lessons/sft"),
    "distill_step_by_step": ("distill/verified_rate", "lessons/sft"),
    "gkd": ("distill/on_policy_share", "loss/kd"),
    "redi": ("rollouts/pass_at_group", "lessons/redi"),
    "kdrl": ("rollouts/reward_mean", "loss/kl_teacher"),
    "supercorrect": ("first_error/located_rate", "lessons/dpo"),
    "tailored_learning": ("tailored/wrong_items", "tailored/taught_rate"),
    "tutor_rl": ("tutoring/reward", "loss/pg"),
    "co_training": ("episodes/feedback_accepted_rate", "mentor/sft/units", "mentor/dpo/units"),
    "mentor_kd_stage1": ("distill/verified_rate", "lessons/sft"),
    "mentor_kd": ("distill/verified_rate", "lessons/kd", "loss/kd"),
    "mapd": ("mapd/wrong_items", "mapd/accept_rate", "lessons/sft"),
    "ampo": ("ampo/all_failed_groups", "ampo/guided_groups", "ampo/guidance_samples"),
    "rlt": ("rlt/reward_mean", "rlt/solution_logprob", "rlt/format_ok"),
    "tom_intervention": ("intervention/share", "intervention/accuracy_explained", "intervention/accuracy_bare"),
}
"""The metrics that show each method doing its own thing (its lessons, its gate, its reward); a
method without an entry reports the last round's lesson counts."""

CHAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mentor_kd": ("mentor_kd_stage1", ("agents.mentor.adapter={earlier}/mentor",)),
}
"""A config that reads an earlier config's run: name -> (the earlier one, overrides given OUT/<earlier>)."""


def run_method(name: str, rounds: int, out: Path, overrides: list[str]) -> dict:
    """One config's run in a fresh process; its summary, its last round's metrics and its wall time."""
    run_dir = out / name
    cmd = [sys.executable, "-m", "tutorloop.cli", "run", str(CONFIGS / f"{name}.yaml"), f"loop.rounds={rounds}",
           f"run_dir={run_dir}", "log.wandb.mode=disabled", *chain_overrides(name, out), *overrides]
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        return {"name": name, "ok": False, "seconds": seconds, "error": (proc.stderr or proc.stdout).strip()[-2000:]}
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {"name": name, "ok": True, "seconds": seconds, "rounds": rounds, "summary": summary,
            "last_round": rows[-1] if rows else {}, "per_round": rows, "command": " ".join(["tutorloop", *cmd[3:]])}


def chain_overrides(name: str, out: Path) -> list[str]:
    if name not in CHAINS:
        return []
    earlier, overrides = CHAINS[name]
    return [o.format(earlier=out / earlier) for o in overrides]


def ordered(names: list[str]) -> list[str]:
    """Earlier links of a chain first."""
    first = [n for n in names if n not in CHAINS]
    return first + [n for n in names if n in CHAINS]


def headline(result: dict) -> tuple[str, str]:
    """(before, after) of the config's evaluation: accuracy, or success@1 for a tutoring env."""
    s = result.get("summary", {})
    for before, after in (("eval/accuracy_before", "eval/accuracy_after"),
                          ("eval_before/success@1", "eval_after/success@1")):
        if before in s or after in s:
            return _fmt(s.get(before)), _fmt(s.get(after))
    return "-", "-"


def own_metrics(result: dict) -> str:
    """Each of the method's metrics round by round, e.g. `distill/verified_rate 0.250 / 0.312`."""
    rows = result.get("per_round") or [result.get("last_round", {})]
    keys = OWN_METRICS.get(result["name"]) or tuple(k for k in rows[-1] if k.startswith("lessons/"))
    return ", ".join(f"{k} {' / '.join(_fmt(row.get(k)) for row in rows)}" for k in keys)


def _fmt(value: object) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def table(results: list[dict], machine: str) -> str:
    lines = [f"Machine: {machine}", "",
             "| method | before | after | the method's own metrics, round 0 / round 1 / ... | wall s |",
             "| --- | --- | --- | --- | --- |"]
    for r in results:
        if not r["ok"]:
            lines.append(f"| {r['name']} | failed | | {r['error'].splitlines()[-1][:120]} | {r['seconds']:.0f} |")
            continue
        before, after = headline(r)
        lines.append(f"| {r['name']} | {before} | {after} | {own_metrics(r)} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    from tutorloop.hardware import machine, machine_line

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated config names (default: every configs/methods/*.yaml)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "methods"), help="where the runs go")
    ap.add_argument("overrides", nargs="*", help="key=value given to every run")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = []
    for name in ordered(names):
        result = run_method(name, args.rounds, Path(args.out), args.overrides) | {"machine": machine()}
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"{name}: {'ok' if result['ok'] else 'FAILED'} in {result['seconds']:.0f} s", flush=True)
        results.append(result)
    text = table(results, machine_line())
    (RESULTS / "TABLE.md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
