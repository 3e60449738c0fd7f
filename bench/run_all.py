"""Every benchmark in one command, each in a fresh process, then one table of their results.

    .venv/bin/python bench/run_all.py [--quick] [--only trl_speed,smollm2_speed,weight_sync]
    make bench

Each benchmark writes bench/results/NAME.json (rows of what, ours, baseline, unit, ratio, note);
this script runs them one after another (never side by side: they time a 2-core CPU) and writes
bench/results/TABLE.md with the date and the machine. The learning-efficacy run is separate and
long (bench/efficacy.py, `make efficacy`).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ("trl_speed", "smollm2_speed", "weight_sync")


def run(name: str, quick: bool) -> None:
    command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if quick else [])]
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    began = time.perf_counter()
    done = subprocess.run(command, cwd=HERE.parent)
    if done.returncode != 0:
        raise SystemExit(f"run_all: {name} failed (exit {done.returncode})")
    print(f"== {name}: {time.perf_counter() - began:.0f} s", flush=True)


def latest_results() -> dict[str, dict]:
    """Each benchmark's last results file, just written or older: a rerun of some (`--only`) still
    gives the whole table, each bench with the date it ran."""
    results = {}
    for name in BENCHES:
        path = HERE / "results" / f"{name}.json"
        if path.exists():
            data = json.loads(path.read_text())
            results[name] = data if isinstance(data, dict) else {"rows": data}
    return results


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def table(results: dict[str, dict]) -> str:
    dates = ", ".join(f"{name} {data.get('date', 'undated')}" for name, data in results.items())
    lines = [f"Measured on {machine()} with `bench/run_all.py` ({dates}). Each bench's JSON records the "
             "machine it ran on; rates differ across CPUs, ratios measured side by side carry.", "",
             "| bench | what | tutorloop | baseline | unit | ratio | note |", "|---|---|---|---|---|---|---|"]
    for name, data in results.items():
        if isinstance(data.get("machine"), dict):
            lines.append(f"| {name} | machine: {machine_line_of(data['machine'])} | | | | | |")
        for r in data["rows"]:
            ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
            lines.append(f"| {name} | {r['what']} | {cell(r.get('ours'))} | {cell(r.get('baseline'))} | "
                         f"{r.get('unit', '')} | {ratio} | {r.get('note', '')} |")
    return "\n".join(lines) + "\n"


def machine_line_of(record: dict) -> str:
    from tutorloop.hardware import machine_line

    return machine_line(record)


def machine() -> str:
    from tutorloop.hardware import machine_line

    return f"{machine_line()}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: fewer steps and repeats")
    parser.add_argument("--only", default=",".join(BENCHES))
    args = parser.parse_args(argv)
    names = args.only.split(",")
    if unknown := [n for n in names if n not in BENCHES]:
        raise SystemExit(f"run_all: --only: unknown {unknown}; choose from {list(BENCHES)}")
    for name in names:
        run(name, args.quick)
    text = table(latest_results())
    (HERE / "results" / "TABLE.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
