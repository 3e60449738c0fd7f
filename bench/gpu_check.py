"""The GPU check's driver (bench/gpu_check.sh makes the venv, then runs this): the gpu-marked tests
on real vLLM engines, then the embedded default (configs/default.yaml) with student, teacher and
mentor on vLLM for 2 rounds, then one results JSON and a summary table.

    python bench/gpu_check.py [--out bench/results/gpu_check.json] [--budget-seconds 420]
    python bench/gpu_check.py --rounds-only RESULT.json [--runtime ray|local]   (one step, used by the above)

Each step runs in its own process under the time left, so a hung engine cannot eat the budget and
every GPU byte is freed before the next step. Figures:
- tests (eager engines): vLLM vs HF log-prob gaps on the same text and weights, sleep / wake
  seconds, full and adapter sync seconds (median of 3, the call a round makes);
- rounds (compiled engines, as users run them): tokens/s of the student's and teacher's engines
  inside a round and of the student's on its own after the run, the adapter sync seconds per round
  as the loop does it (trainer -> generator, timed around `sync_weights`), round seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 2
ROUNDS_RESERVE_S = 240
"""Seconds kept back from the tests for the 2-round run: two compiled engine starts, evals, two CPU train steps."""
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
"""The lent GPU machines reach no network: nothing may try to (a refused call can still cost a timeout)."""


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.update(OFFLINE)
    if args.rounds_only:
        Path(args.rounds_only).write_text(json.dumps(run_rounds(args.runtime), indent=1), encoding="utf-8")
        return 0
    deadline = time.monotonic() + args.budget_seconds
    results: dict[str, Any] = {"machine": machine(), "install_seconds": args.install_seconds}
    results["tests"] = run_tests(deadline - ROUNDS_RESERVE_S)
    results["rounds"] = rounds_step(deadline)
    results["seconds"] = round(args.budget_seconds - (deadline - time.monotonic()), 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(summary_table(results))
    print(f"gpu-check: results in {out}")
    return 0 if results["tests"]["ok"] and results["rounds"]["ok"] else 1


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    parser.add_argument("--budget-seconds", type=float, default=420.0)
    parser.add_argument("--install-seconds", type=float, default=None)
    parser.add_argument("--rounds-only", default=None, help="run only the 2 rounds, writing their figures here")
    parser.add_argument("--runtime", choices=("ray", "local"), default="local")
    return parser.parse_args(argv)


def machine() -> dict[str, Any]:
    """From nvidia-smi: torch here would open a CUDA context and hold GPU memory through every step."""
    import torch
    import vllm

    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    first = subprocess.check_output(query, text=True).splitlines()[0]
    name, memory, driver = (part.strip() for part in first.split(","))
    return {"gpu": name, "gpu_memory": memory, "driver": driver, "torch": torch.__version__,
            "cuda": torch.version.cuda, "vllm": vllm.__version__}


def run_tests(deadline: float) -> dict[str, Any]:
    """The gpu tier in a child process; its figures come back through TUTORLOOP_GPU_FIGURES."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        figures, report = Path(tmp) / "figures.json", Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}"]
        began = time.monotonic()
        code = child(command, deadline, {"TUTORLOOP_GPU_FIGURES": str(figures)})
        out = {"ok": code == 0, "exit_code": code, "seconds": round(time.monotonic() - began, 1)}
        out |= junit_counts(report)
        out["figures"] = json.loads(figures.read_text()) if figures.exists() else {}
    return out


def rounds_step(deadline: float) -> dict[str, Any]:
    """In-process roles by default (GPU_CHECK_RUNTIME=ray for Ray actors): Ray builds the actors at
    once, and two vLLM engines profiling one GPU at the same time can each count the other's
    allocations as their own and size their KV cache wrongly."""
    return rounds_child(os.environ.get("GPU_CHECK_RUNTIME", "local"), deadline)


def rounds_child(runtime: str, deadline: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gpu-check-rounds-") as tmp:
        result = Path(tmp) / "rounds.json"
        began = time.monotonic()
        code = child([sys.executable, str(Path(__file__).resolve()), "--rounds-only", str(result),
                      "--runtime", runtime], deadline)
        out = json.loads(result.read_text()) if result.exists() else {}
    # The figures are written only after the rounds finished; a hang in the engines' teardown after
    # that (exit 124) does not undo them.
    return {"ok": bool(out), "runtime": runtime, "exit_code": code,
            "seconds": round(time.monotonic() - began, 1)} | out


def child(command: list[str], deadline: float, env: dict[str, str] | None = None) -> int:
    """Exit code of `command` run from the repository root; 124 when it ran past the deadline. Its
    whole process group (vLLM engine cores, a `vllm serve`) goes with it, so the GPU is free after."""
    timeout = max(10.0, deadline - time.monotonic())
    proc = subprocess.Popen(command, cwd=ROOT, env=os.environ | (env or {}), start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"gpu-check: {' '.join(command[1:4])} stopped after {timeout:.0f}s (budget spent)", flush=True)
        code = 124
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is already gone
        pass
    proc.wait()
    return code


def junit_counts(report: Path) -> dict[str, int]:
    if not report.exists():
        return {}
    import xml.etree.ElementTree as ElementTree

    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    keys = ("tests", "failures", "errors", "skipped")
    return {key: int(suite.get(key, 0)) for key in keys} if suite is not None else {}


def rounds_config(runtime: str, run_dir: str) -> Any:
    """configs/default.yaml with student, teacher and mentor on vLLM (the mentor keeps the teacher's
    engine settings, so it shares that engine, as on CPU), each engine a quarter of the GPU."""
    from tutorloop.config import load_config

    engine = ["generator=vllm", "gpu_memory_utilization=0.25", "resources.gpus=0.25"]
    overrides = [f"agents.{role}.{item}" for role in ("student", "teacher", "mentor") for item in engine]
    overrides += [f"runtime.kind={runtime}", f"loop.rounds={ROUNDS}", f"run_dir={run_dir}", "log.wandb.mode=disabled"]
    return load_config(ROOT / "configs" / "default.yaml", overrides)


def run_rounds(runtime: str) -> dict[str, Any]:
    """Two rounds of the default, the adapter sync timed where the loop makes it; then, in-process,
    the student's engine (compiled, bf16, serving the trained adapter) alone on one batch."""
    import asyncio

    from tutorloop import loop

    sync_seconds: list[float] = []
    real_sync, real_build, generators = loop.sync_weights, loop.build_generators, {}

    async def timed_sync(trainer: Any, generator: Any) -> int:
        began = time.perf_counter()
        version = await real_sync(trainer, generator)
        sync_seconds.append(time.perf_counter() - began)
        return version

    loop.sync_weights = timed_sync
    loop.build_generators = lambda *a, **k: generators.update(real_build(*a, **k)) or generators
    with tempfile.TemporaryDirectory(prefix="gpu-check-run-") as run_dir:
        began = time.perf_counter()
        summary = asyncio.run(loop.run(rounds_config(runtime, run_dir)))
        seconds = time.perf_counter() - began
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    out = rounds_figures(rows, summary, sync_seconds, seconds)
    if runtime == "local":  # Ray's actors are gone with the run
        out["student_tokens_per_s_alone"] = round(asyncio.run(tokens_per_s_alone(generators["student"])), 1)
    return out


async def tokens_per_s_alone(generator: Any, prompts: int = 64, max_new_tokens: int = 128) -> float:
    from tutorloop.types import SamplingParams

    batch = [({"role": "user", "content": f"Write a short story about the number {i}."},) for i in range(prompts)]
    await generator.stats()  # zero the counters
    await generator.generate(batch, SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens))
    stats = await generator.stats()
    return stats["gen_tokens"] / stats["gen_seconds"]


def rounds_figures(rows: list[dict[str, Any]], summary: dict[str, float], sync_seconds: list[float],
                   seconds: float) -> dict[str, Any]:
    if [row["round"] for row in rows] != list(range(ROUNDS)):
        raise SystemExit(f"gpu-check: expected rounds {list(range(ROUNDS))} in metrics.jsonl, got "
                         f"{[row['round'] for row in rows]}")

    def median(key: str) -> float | None:
        values = [row[key] for row in rows if key in row]
        return round(statistics.median(values), 3) if values else None

    return {"rounds": len(rows), "run_seconds": round(seconds, 1), "round_seconds": median("round/seconds"),
            "student_tokens_per_s_in_round": median("gen/student_tokens_per_s"),
            "teacher_tokens_per_s_in_round": median("gen/teacher_tokens_per_s"),
            "train_step_seconds": median("train/seconds"),
            "adapter_sync_seconds_per_round": round(statistics.median(sync_seconds), 4) if sync_seconds else None,
            "accuracy_before": summary.get("eval/accuracy_before"),
            "accuracy_after": summary.get("eval/accuracy_after")}


ROWS = [
    ("vLLM vs HF prompt log-probs, same text, max |diff|", "tests", "vllm_vs_hf_score_max_abs", "{:.2e}"),
    ("sampled vs prompt log-probs in vLLM, max |diff|", "tests", "sampled_vs_prompt_logprob_max_abs", "{:.2e}"),
    ("full sync then vLLM vs HF, max |diff|", "tests", "full_sync_vllm_vs_hf_max_abs", "{:.2e}"),
    ("adapter sync then vLLM (bf16) vs HF (fp32), max |diff|", "tests", "adapter_sync_vllm_vs_hf_max_abs", "{:.2e}"),
    ("vllm serve vs HF prompt log-probs, max |diff|", "tests", "vllm_serve_vs_hf_score_max_abs", "{:.2e}"),
    ("vLLM tokens/s on its own, student engine (64 x 128)", "rounds", "student_tokens_per_s_alone", "{:.0f}"),
    ("vLLM tokens/s in a round, student (bf16 + LoRA)", "rounds", "student_tokens_per_s_in_round", "{:.0f}"),
    ("vLLM tokens/s in a round, teacher (bf16)", "rounds", "teacher_tokens_per_s_in_round", "{:.0f}"),
    ("full weight sync, s (SmolLM2-135M, fp32)", "tests", "full_sync_seconds", "{:.3f}"),
    ("adapter sync, s (r=16, all linear layers)", "tests", "adapter_sync_seconds", "{:.3f}"),
    ("adapter sync per round in the loop, s", "rounds", "adapter_sync_seconds_per_round", "{:.3f}"),
    ("sleep / wake, s", "tests", ("sleep_seconds", "wake_seconds"), "{:.2f}"),
    ("round, s (median of 2)", "rounds", "round_seconds", "{:.1f}"),
]


def summary_table(results: dict[str, Any]) -> str:
    tests, rounds = results["tests"], results["rounds"]
    sources = {"tests": tests.get("figures", {}), "rounds": rounds}
    lines = [f"gpu-check on {results['machine']['gpu']} (vLLM {results['machine']['vllm']}, "
             f"torch {results['machine']['torch']}), install {results['install_seconds']} s",
             f"  gpu tests: {'passed' if tests['ok'] else 'FAILED'} ({tests.get('tests', '?')} run, "
             f"{tests.get('failures', '?')} failed, {tests.get('errors', '?')} errors, {tests['seconds']} s)",
             f"  {ROUNDS} rounds of the default on vLLM ({rounds.get('runtime')}): "
             f"{'ran' if rounds['ok'] else 'FAILED'} ({rounds.get('seconds')} s)"]
    width = max(len(label) for label, *_ in ROWS)
    for label, source, keys, fmt in ROWS:
        values = [sources[source].get(k) for k in (keys if isinstance(keys, tuple) else (keys,))]
        text = " / ".join("-" if v is None else fmt.format(v) for v in values)
        lines.append(f"  {label.ljust(width)}  {text}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
