"""Decode-step candidates against HF `generate`, side by side in one run: ms per decode step at
batch 8, 64 new tokens, sampled at T = 0.9 (every row decodes all 64: no end token stops it).

    .venv/bin/python bench/decode.py [--repeats 5] [--model embedded:smollm2-135m-instruct]

Model: the anchors' tiny student (../shared/bench-anchors/common.py: Llama, hidden 128, 2 layers),
or `--model` (a path, or the embedded SmolLM2). Prompts: 8 x 63 random-text tokens. Candidates:

- hf dynamic: `model.generate(do_sample=True)`, transformers' DynamicCache (the baseline);
- ours: `tutorloop.generators.hf.sample`, the generator's own loop (reserved KV buffers, top-50
  candidates, lm_head on the last position only);
- hf static: `generate(cache_implementation="static")`, fixed-shape KV cache, no compile;
- hf static + compile: the same with `CompileConfig(_compile_all_devices=True)` (transformers only
  compiles on CPU when asked): inductor compiles the decode step once; its first call (the compile)
  is reported apart from the steady-state steps.

Each candidate warms up once, then the candidates take turns `--repeats` times; a figure is the
candidate's median. Writes bench/results/decode.json and bench/results/decode.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).resolve().parent / "results"
ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "bench-anchors"
BATCH, PROMPT_TOKENS, NEW_TOKENS, TEMPERATURE = 8, 63, 64, 0.9


def load(model: str | None) -> tuple[Any, Any]:
    from tutorloop.models import load_causal_lm, load_tokenizer, resolve_model

    if model is None:
        sys.path.insert(0, str(ANCHORS))
        import common

        path = common.ensure_assets() / "student"
    else:
        path = resolve_model(model)
    return load_causal_lm(path, "float32").eval(), load_tokenizer(path)


def prompt_batch(vocab: int, seed: int = 0) -> Any:
    import torch

    rng = random.Random(seed)
    ids = [[rng.randrange(10, vocab) for _ in range(PROMPT_TOKENS)] for _ in range(BATCH)]
    return torch.tensor(ids), torch.ones(BATCH, PROMPT_TOKENS, dtype=torch.long)


def candidates(model: Any) -> dict[str, Callable[[Any, Any], int]]:
    """name -> fn(input_ids, attention) that decodes NEW_TOKENS per row and returns the steps taken."""
    import torch
    from transformers import CompileConfig

    from tutorloop.generators.hf import sample
    from tutorloop.types import SamplingParams

    params = SamplingParams(temperature=TEMPERATURE, top_p=1.0, max_new_tokens=NEW_TOKENS)
    common = dict(do_sample=True, temperature=TEMPERATURE, top_k=50, max_new_tokens=NEW_TOKENS,
                  min_new_tokens=NEW_TOKENS, pad_token_id=0)

    def hf(**kw: Any) -> Callable[[Any, Any], int]:
        def run(ids: Any, attention: Any) -> int:
            out = model.generate(input_ids=ids, attention_mask=attention, **common, **kw)
            return out.shape[1] - ids.shape[1]
        return run

    def ours(ids: Any, attention: Any) -> int:
        rows = sample(model, ids, attention, params, eos_id=-1)  # -1: no row ever ends early
        return max(len(r[0]) for r in rows)

    compile_config = CompileConfig(mode="default")  # "reduce-overhead" means CUDA graphs
    compile_config._compile_all_devices = True  # a class attribute, not an __init__ field
    return {"hf dynamic": hf(), "ours": ours, "hf static": hf(cache_implementation="static", disable_compile=True),
            "hf static + compile": hf(cache_implementation="static", compile_config=compile_config)}


def timed(fn: Callable[[Any, Any], int], ids: Any, attention: Any) -> tuple[float, int]:
    import torch

    with torch.inference_mode():
        began = time.perf_counter()
        steps = fn(ids, attention)
        return time.perf_counter() - began, steps


def measure(model: Any, repeats: int) -> list[dict]:
    ids, attention = prompt_batch(model.config.vocab_size)
    runs = candidates(model)
    first = {name: timed(fn, ids, attention)[0] for name, fn in runs.items()}  # warm-up; compiles
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            seconds, steps = timed(fn, ids, attention)
            samples[name].append(1000 * seconds / steps)
    base = statistics.median(samples["hf dynamic"])
    return [{"candidate": name, "ms_per_step": statistics.median(xs), "vs_hf": base / statistics.median(xs),
             "first_call_s": first[name], "samples_ms": xs} for name, xs in samples.items()]


def table(rows: list[dict], machine: str, command: str, model: str) -> str:
    lines = [f"# Decode step: candidates vs HF generate ({machine})", "", f"`{command}`", "",
             f"Model: {model}; batch {BATCH}, {PROMPT_TOKENS}-token prompts, {NEW_TOKENS} new tokens, "
             f"T = {TEMPERATURE}, medians of the repeats.", "",
             "| candidate | ms / step | speed vs hf dynamic | first call (s) |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['candidate']} | {r['ms_per_step']:.2f} | {r['vs_hf']:.2f}x | {r['first_call_s']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    import torch

    from tutorloop.hardware import machine_line, usable_cores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=None, help="a path or embedded:NAME (default: the anchors' tiny student)")
    args = parser.parse_args(argv)
    torch.set_num_threads(usable_cores())
    model, _ = load(args.model)
    rows = measure(model, args.repeats)
    command = "python bench/decode.py " + " ".join(argv if argv is not None else sys.argv[1:])
    name = args.model or "anchors' tiny student (Llama, hidden 128, 2 layers)"
    stem = "decode" if args.model is None else "decode_" + args.model.replace(":", "_").replace("/", "_")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"machine": machine_line(), "command": command, "model": name,
                                                      "rows": rows}, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(table(rows, machine_line(), command, name))
    print(table(rows, machine_line(), command, name))
    return rows


if __name__ == "__main__":
    main()
