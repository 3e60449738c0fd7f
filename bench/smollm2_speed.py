"""SmolLM2-135M-Instruct (the embedded default) on this machine: tutorloop's training step and
generation against plain transformers, measured interleaved in one process, plus the dtype that
`dtype: auto` picks here and why.

    flock /tmp/tutorloop-timing.lock .venv/bin/python bench/smollm2_speed.py [--quick] [--repeats 3]

Baselines (fp32, the plain way):
- training: AutoModelForCausalLM, loss over all positions, loss.backward(), AdamW step, 8 x 128 tokens;
- generation: `model.generate` sampling (temperature 0.7), 64 new tokens, batch 8 and 32.
Ours, on the same token sequences and prompts:
- training: `OnlineTrainer.step` built from configs/default.yaml (LoRA r16 on all linear layers) with
  SFT only and max_seq_len 128, as the config sets it and with `trainer.lora=null` (full-parameter);
  each in fp32, with bf16 weights (`trainer.dtype=bfloat16`; under LoRA peft keeps the adapters fp32),
  and with fp32 weights under bf16 autocast (`trainer.autocast=bfloat16`);
- generation: `HFGenerator.generate` in fp32 and bf16 at batch 8 and 32.

Each variant runs once to warm up, then `--repeats` rounds take turns variant by variant. A rate is
the variant's best round (other processes on a 2-core box only ever slow a round down); a ratio is
the median over rounds of the two sides' rates in the same round, so a slow spell of the machine
hits both sides of each ratio (the best rounds of two sides can come from different spells). Tokens/s of
generation count the tokens each row produced up to its end token (both sides stop rows at it).
FLOP/s are 6*N*T (full training; 4*N*T under LoRA, whose frozen weights get no weight gradient)
and 2*N*T (generation, new tokens only) with N = non-embedding parameters (the 30 blocks, 106.2M;
the tied embedding's lm_head matmul and attention scores are not counted), as a share of the torch.mm 2048 peak in the run's compute dtype, measured here too.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

MODEL = "embedded:smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parents[1]
NEW_TOKENS = 64
TRAIN_ROWS, TRAIN_LEN = 8, 128
TEMPERATURE = 0.7
SHORT = {"float32": "fp32", "bfloat16": "bf16"}

# A ~40-token prompt with a completion filling the rest of 128 tokens: the shape of the loop's SFT.
COMPLETION = ("First write the product as a sum of easier parts, then multiply each part, then add the "
              "partial results and check the total by estimating it another way. ") * 8


# ------------------------------------------------------------------------------------------------ #
# Timing
# ------------------------------------------------------------------------------------------------ #


Timings = dict[str, list[tuple[float, float]]]  # run name -> (seconds, work units) of each timed round


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> Timings:
    """Every timed round of every run: one warm-up each, then rounds in turn, so round i of two runs
    ran back to back under the same load."""
    rounds: Timings = {name: [] for name in runs}
    for name, run in runs.items():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            began = time.perf_counter()
            units = run()
            rounds[name].append((time.perf_counter() - began, units))
    return rounds


def best(timings: Timings) -> dict[str, tuple[float, float]]:
    """(seconds, units) of each run's fastest round: other processes only ever slow a round down."""
    return {name: max(rounds, key=lambda r: r[1] / r[0]) for name, rounds in timings.items()}


def paired_ratio(timings: Timings, ours: str, baseline: str) -> float | None:
    """Median over rounds of ours' rate / the baseline's rate in the same round: a load burst that
    slows one round slows both sides of its ratio."""
    if ours not in timings or baseline not in timings:
        return None
    ratios = [(u / s) / (bu / bs) for (s, u), (bs, bu) in zip(timings[ours], timings[baseline])]
    return statistics.median(ratios)


def matmul_peak(repeats: int, n: int = 2048) -> dict[str, float]:
    """GFLOP/s of one n x n torch.mm per dtype, best of `repeats` x 5 calls."""
    import torch

    peak = {}
    for dtype in ("float32", "bfloat16"):
        a, b = (torch.randn(n, n, dtype=getattr(torch, dtype)) for _ in range(2))
        torch.mm(a, b)
        seconds = min(_seconds(lambda: torch.mm(a, b)) for _ in range(5 * repeats))
        peak[dtype] = 2 * n ** 3 / seconds / 1e9
    return peak


def _seconds(fn: Callable[[], Any]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


# ------------------------------------------------------------------------------------------------ #
# Generation
# ------------------------------------------------------------------------------------------------ #


def story_prompts(n: int) -> list[tuple[dict[str, str], ...]]:
    """Prompts that draw long answers, so most rows run the full 64 tokens."""
    topics = ["a lighthouse", "a lost key", "the number seven", "a quiet train", "an old map", "a red kite",
              "a snowy garden", "a clockmaker"]
    return [({"role": "user", "content": f"Write a long story about {topics[i % len(topics)]}, part {i + 1}."},)
            for i in range(n)]


def plain_generate(model: Any, tokenizer: Any, prompt_ids: list[list[int]]) -> float:
    """`model.generate` as a plain transformers user calls it; returns the tokens produced."""
    import torch

    width = max(map(len, prompt_ids))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompt_ids])
    attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_ids])
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=True, temperature=TEMPERATURE,
                             max_new_tokens=NEW_TOKENS, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    return float(sum(_produced(row, tokenizer.eos_token_id) for row in out[:, width:].tolist()))


def _produced(row: list[int], eos: int) -> int:
    return row.index(eos) + 1 if eos in row else len(row)


def ours_generate(generator: Any, prompts: list[Any]) -> float:
    from tutorloop.types import SamplingParams

    params = SamplingParams(temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS)
    return float(sum(len(c.token_ids) for c in asyncio.run(generator.generate(prompts, params))))


def bench_generation(repeats: int, batches: tuple[int, ...]) -> Timings:
    """(seconds, tokens) of each round for plain generate (fp32, and bf16 at batch 8) and ours per dtype and batch."""
    import torch

    from tutorloop.generators.hf import HFGenerator
    from tutorloop.models import load_causal_lm, load_tokenizer, render_prompt_ids, resolve_model

    path = resolve_model(MODEL)
    tokenizer = load_tokenizer(path)
    plain = {dtype: load_causal_lm(path, dtype).eval() for dtype in SHORT}
    ours = {dtype: HFGenerator(MODEL, dtype=dtype, max_batch_size=max(batches)) for dtype in SHORT}
    prompts = story_prompts(max(batches))
    prompt_ids = [render_prompt_ids(tokenizer, p) for p in prompts]
    runs: dict[str, Callable[[], float]] = {}
    for batch in batches:
        torch.manual_seed(batch)
        runs[f"plain fp32 b{batch}"] = lambda b=batch: plain_generate(plain["float32"], tokenizer, prompt_ids[:b])
        for dtype, short in SHORT.items():
            runs[f"ours {short} b{batch}"] = lambda g=ours[dtype], b=batch: ours_generate(g, prompts[:b])
    runs["plain bf16 b8"] = lambda: plain_generate(plain["bfloat16"], tokenizer, prompt_ids[:8])
    return interleaved(runs, repeats)


# ------------------------------------------------------------------------------------------------ #
# Training
# ------------------------------------------------------------------------------------------------ #


def sft_examples(tokenizer: Any) -> tuple[Any, list[list[int]]]:
    """8 SFT lessons that the trainer encodes to exactly 128 tokens each, and those token sequences."""
    from tutorloop.trainers.encoding import TokenEncoder
    from tutorloop.types import Lesson

    encode = TokenEncoder(tokenizer)
    lessons = [Lesson("sft", encode.prompt(({"role": "user", "content": f"How do I compute {17 + i} * {23 + i}?"},)),
                      encode.text(COMPLETION)) for i in range(TRAIN_ROWS)]
    sequences = [list(x.prompt_ids + x.target_ids) for x in lessons]
    assert all(len(s) == TRAIN_LEN for s in sequences), [len(s) for s in sequences]
    return tuple(lessons), sequences


def plain_trainer(dtype: str = "float32") -> Callable[[list[list[int]]], None]:
    """A full-parameter fp32 step as a plain transformers user writes it: loss on every position."""
    import torch

    from tutorloop.models import load_causal_lm, resolve_model

    model = load_causal_lm(resolve_model(MODEL), dtype).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(sequences: list[list[int]]) -> None:
        input_ids = torch.tensor(sequences)
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def ours_trainer(*overrides: str) -> Any:
    """OnlineTrainer from configs/default.yaml with SFT only on 128-token sequences, plus `overrides`."""
    from tutorloop.config import load_config
    from tutorloop.runtime.local import LocalRuntime
    from tutorloop.trainers import build_trainer

    cfg = load_config(ROOT / "configs" / "default.yaml", ["trainer.objectives={sft: 1.0}",
                                                          f"trainer.max_seq_len={TRAIN_LEN}", *overrides])
    return build_trainer(LocalRuntime(), cfg, cfg.trainable)


DEFAULT = "ours LoRA, configs/default.yaml"
TRAIN_VARIANTS = {  # label: config overrides
    DEFAULT: (),
    "ours LoRA fp32": ("trainer.autocast=off",),
    "ours LoRA bf16 weights": ("trainer.dtype=bfloat16", "trainer.autocast=off"),
    "ours LoRA fp32 + autocast bf16": ("trainer.autocast=bfloat16",),
    "ours full fp32": ("trainer.lora=null", "trainer.autocast=off"),
    "ours full bf16 weights": ("trainer.lora=null", "trainer.dtype=bfloat16", "trainer.autocast=off"),
    "ours full fp32 + autocast bf16": ("trainer.lora=null", "trainer.autocast=bfloat16"),
}


def bench_training(repeats: int, variants: dict[str, tuple[str, ...]]) -> Timings:
    """(seconds per step, tokens per step) of each round for the plain fp32 step and each of our variants."""
    from tutorloop.models import load_tokenizer, resolve_model

    batch, sequences = sft_examples(load_tokenizer(resolve_model(MODEL)))
    tokens = float(TRAIN_ROWS * TRAIN_LEN)
    plain = plain_trainer()
    runs: dict[str, Callable[[], float]] = {"plain full fp32": lambda: (plain(sequences), tokens)[1]}
    for label, overrides in variants.items():
        trainer = ours_trainer(*overrides)
        runs[label] = lambda t=trainer: (asyncio.run(t.step(batch)), tokens)[1]
    return interleaved(runs, repeats)


# ------------------------------------------------------------------------------------------------ #
# Report
# ------------------------------------------------------------------------------------------------ #


def non_embedding_params() -> int:
    from transformers import AutoConfig

    from tutorloop.models import resolve_model

    c = AutoConfig.from_pretrained(resolve_model(MODEL), local_files_only=True)
    head = c.hidden_size // c.num_attention_heads
    attention = c.hidden_size * head * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    norms = 2 * c.hidden_size
    return c.num_hidden_layers * (attention + mlp + norms) + c.hidden_size


def rows_of(gen_rounds: Timings, train_rounds: Timings, peak: dict, n_params: int, auto: str,
            speedup: float) -> list[dict]:
    """Rates are each run's best round; ratios the median of same-round ratios (`paired_ratio`)."""
    rows = []
    gen, train = best(gen_rounds), best(train_rounds)

    def row(what: str, ours: float | None, baseline: float | None, unit: str, note: str,
            ratio: float | None = None) -> None:
        ratio = ratio if ratio is not None else (ours / baseline if ours and baseline else None)
        rows.append({"what": what, "ours": ours, "baseline": baseline, "unit": unit, "ratio": ratio, "note": note})

    def tok_s(name: str) -> float | None:
        return gen[name][1] / gen[name][0] if name in gen else None

    short = SHORT[auto]
    for batch in (8, 32):
        if f"plain fp32 b{batch}" not in gen:
            continue
        base = f"plain fp32 b{batch}"
        row(f"generation b{batch}, auto dtype ({short})", tok_s(f"ours {short} b{batch}"), tok_s(base), "tokens/s",
            f"HFGenerator.generate {short} vs plain model.generate fp32, batch {batch}, 64 new tokens",
            paired_ratio(gen_rounds, f"ours {short} b{batch}", base))
        row(f"generation b{batch}, fp32 both", tok_s(f"ours fp32 b{batch}"), tok_s(base), "tokens/s",
            "the decode loop alone: same dtype and batch", paired_ratio(gen_rounds, f"ours fp32 b{batch}", base))
    if "ours bf16 b32" in gen and "plain fp32 b8" in gen:
        row("generation, ours b32 vs plain b8", tok_s(f"ours {short} b32"), tok_s("plain fp32 b8"), "tokens/s",
            "throughput when the loop batches 32 episodes (its max_batch_size default)",
            paired_ratio(gen_rounds, f"ours {short} b32", "plain fp32 b8"))
    base_step = train["plain full fp32"][0]
    for label, (seconds, tokens) in train.items():
        if label != "plain full fp32":
            row(f"training step: {label.removeprefix('ours ')}", tokens / seconds, tokens / base_step, "tokens/s",
                f"OnlineTrainer.step {seconds:.2f} s vs plain fp32 full step {base_step:.2f} s (best rounds), "
                "8 x 128 tokens", paired_ratio(train_rounds, label, "plain full fp32"))
    for label, seconds_tokens, flops_per_token in _flop_cases(gen, train, auto):
        seconds, tokens = seconds_tokens
        # The default config trains under `autocast: auto`: bf16 matmuls where `auto` picked bf16.
        dtype = "bfloat16" if "bf16" in label or (label == DEFAULT and auto == "bfloat16") else "float32"
        achieved = flops_per_token * n_params * tokens / seconds / 1e9
        row(f"FLOP/s share of {SHORT[dtype]} mm peak: {label}", 100 * achieved / peak[dtype], None, "% of peak",
            f"{achieved:.0f} GFLOP/s of {peak[dtype]:.0f}; {flops_per_token}*N*T, N = {n_params / 1e6:.1f}M "
            "non-embedding params")
    row("matmul peak, torch.mm 2048", peak["bfloat16"], peak["float32"], "GFLOP/s",
        f"ours = bf16, baseline = fp32, {_threads()} threads")
    row("dtype: auto on this machine", speedup, None, "x (fp32 / bf16 probe time)",
        f"picked {auto}; bf16 needs >= 1.3x on a 256x1024x1024 matmul and hardware support")
    return rows


def _flop_cases(gen: dict, train: dict, auto: str) -> list[tuple[str, tuple[float, float], int]]:
    short = SHORT[auto]
    cases = [(name, train[name], 4 if "LoRA" in name else 6) for name in train]  # frozen weights: no weight grads
    cases += [(name, gen[name], 2) for name in ("plain fp32 b8", f"ours {short} b8", f"ours {short} b32") if name in gen]
    return cases


def dtype_table(gen: dict, train: dict) -> list[tuple[str, float | None, float | None]]:
    """(what, fp32 figure, bf16 figure): the numbers behind the dtype decision."""
    def tok_s(table: dict, name: str) -> float | None:
        return table[name][1] / table[name][0] if name in table else None

    return [
        ("generation b8, ours (tokens/s)", tok_s(gen, "ours fp32 b8"), tok_s(gen, "ours bf16 b8")),
        ("generation b32, ours (tokens/s)", tok_s(gen, "ours fp32 b32"), tok_s(gen, "ours bf16 b32")),
        ("generation b8, plain generate (tokens/s)", tok_s(gen, "plain fp32 b8"), tok_s(gen, "plain bf16 b8")),
        ("training step, full (tokens/s; bf16 = bf16 weights)", tok_s(train, "ours full fp32"),
         tok_s(train, "ours full bf16 weights")),
        ("training step, full (tokens/s; bf16 = autocast)", tok_s(train, "ours full fp32"),
         tok_s(train, "ours full fp32 + autocast bf16")),
        ("training step, LoRA (tokens/s; bf16 = bf16 base weights)", tok_s(train, "ours LoRA fp32"),
         tok_s(train, "ours LoRA bf16 weights")),
        ("training step, LoRA (tokens/s; bf16 = autocast)", tok_s(train, "ours LoRA fp32"),
         tok_s(train, "ours LoRA fp32 + autocast bf16")),
    ]


def print_tables(rows: list[dict], dtypes: list[tuple[str, Any, Any]], auto: str) -> None:
    print("| what | ours | baseline | unit | ratio | note |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {_fmt(r['ours'])} | {_fmt(r['baseline'])} | {r['unit']} | "
              f"{_fmt(r['ratio'], 'x')} | {r['note']} |")
    print(f"\ndtype: fp32 vs bf16 here; `auto` picked **{auto}**\n\n| what | fp32 | bf16 | bf16 / fp32 |\n|---|---|---|---|")
    for what, fp32, bf16 in dtypes:
        ratio = bf16 / fp32 if fp32 and bf16 else None
        print(f"| {what} | {_fmt(fp32)} | {_fmt(bf16)} | {_fmt(ratio, 'x')} |")


def _fmt(x: float | None, suffix: str = "") -> str:
    if x is None:
        return "-"
    return f"{x:.2f}{suffix}" if x < 10 else f"{x:,.0f}{suffix}"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def write_results(rows: list[dict], extra: dict) -> Path:
    out = Path(__file__).resolve().parent / "results" / "smollm2_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from tutorloop.hardware import machine

    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), **extra,
                               "rows": rows}, indent=1))
    return out


def _machine() -> str:
    from tutorloop.hardware import machine_line

    return f"{machine_line()}, {_threads()} torch threads"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for everything, peak included")
    parser.add_argument("--quick", action="store_true", help="smoke: 1 round, batch 8, default trainer only")
    args = parser.parse_args(argv)
    import torch

    from tutorloop.hardware import auto_dtype, bf16_speedup

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    peak = matmul_peak(repeats)
    auto, speedup = auto_dtype(), bf16_speedup()
    gen = bench_generation(repeats, (8,) if args.quick else (8, 32))
    gc.collect()
    variants = {k: v for k, v in TRAIN_VARIANTS.items() if not args.quick or k == DEFAULT}
    train = bench_training(repeats, variants)
    rows = rows_of(gen, train, peak, non_embedding_params(), auto, speedup)
    dtypes = dtype_table(best(gen), best(train))
    print(f"SmolLM2-135M-Instruct, {_machine()}, best of {repeats} interleaved rounds; ratios: median of "
          "same-round ratios")
    print_tables(rows, dtypes, auto)
    out = write_results(rows, {"auto_dtype": auto, "bf16_probe_speedup": speedup, "peak_gflops": peak,
                               "dtype_table": [{"what": w, "fp32": a, "bf16": b} for w, a, b in dtypes]})
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return rows


if __name__ == "__main__":
    main()
