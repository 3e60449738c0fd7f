"""Speed of our OnlineTrainer against TRL 1.16, side by side in one run, on the tiny models and
data shapes of ../shared/bench-anchors/common.py (imported from there, never copied).

    .venv/bin/python bench/trl_speed.py [--quick] [--windows 5] [--only sft dpo ...] [--json PATH]
    .venv/bin/python bench/trl_speed.py --only round --model embedded:smollm2-135m-instruct --windows 3

`--model` puts one model (a path, or the embedded SmolLM2) in place of the anchors' tiny student AND
teacher, as users run it (results to bench/results/trl_speed_<model>.json).

Comparisons (full-parameter training, fp32, 2 threads, AdamW lr 1e-4, grad clip 1.0):

- SFT step, 8 x 128 tokens, against SFTTrainer;
- DPO step, 8 pairs x (64 prompt + 64 completion), against DPOTrainer (reference = frozen copy);
- OPD step, 8 x (63 prompt + 64 completion), against GKDTrainer lmbda=0 (no generation);
- our mixed step (the three batches in one optimizer step) against the sum of our three steps;
- one on-policy round: the student generates 64 new tokens for 8 prompts (HFGenerator, T=0.9),
  the teacher scores them (top-20 log-probs), one update, weights synced back to the generator;
  against GKDTrainer lmbda=1 (generation with the live student every step).

TRL runs with its anchor configs (../shared/bench-anchors/bench_{sft,dpo,gkd}.py) and gradient
checkpointing OFF, the faster TRL figures of results/TABLE.md. TRL's own `train()` loop runs in a
child process, in a thread that yields after every k optimizer steps, so its windows and ours take
turns (`TRLProcess` says why not in this process): load changes on the box hit both sides alike. Rates are medians over many short windows after
warm-up; each ratio is the median of the per-window ratios (ours and baseline timed back to back).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import random
import runpy
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from tutorloop.hardware import usable_cores

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "bench-anchors"
RESULTS = Path(__file__).resolve().parent / "results" / "trl_speed.json"
BATCH, NEW_TOKENS, TOP_K = 8, 64, 20
CHILD = "__trl_child__"  # run_name of a TRLProcess's child
THREADS = usable_cores()  # both sides get every core this process may use (2 on the CI-sized box)
TARGETS = {"objective": 2.0, "round": 3.0, "mixed": 1.1}

Window = Callable[[int], float]  # runs k optimizer steps (or rounds), returns the seconds they took


class ModelAssets:
    """The anchors' `common` module with one model as both student and teacher: `ensure_assets()`
    is a directory whose student/ and teacher/ link to that model, `load` reads from it."""

    def __init__(self, common: Any, model: str) -> None:
        from tutorloop.models import resolve_model

        self.common, self.model = common, model
        self.dir = Path(tempfile.mkdtemp(prefix="tutorloop-bench-model-"))
        for name in ("student", "teacher"):
            (self.dir / name).symlink_to(resolve_model(model))

    def ensure_assets(self) -> Path:
        return self.dir

    def load(self, name: str) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.dir / name
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.common, name)


def load_common() -> Any | None:
    """../shared/bench-anchors/common.py, or None where that checkout is absent."""
    if not (ANCHORS / "common.py").exists():
        return None
    sys.path.insert(0, str(ANCHORS))
    import common

    return common


# --------------------------------------------------------------------------------------------- #
# Data: the anchors' synthetic texts, as TRL datasets and as our examples
# --------------------------------------------------------------------------------------------- #


def user(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


def encoder(common: Any) -> Any:
    """The student's tokenizer, as lesson makers encode text targets."""
    from tutorloop.models import load_tokenizer
    from tutorloop.trainers.encoding import TokenEncoder

    return TokenEncoder(load_tokenizer(common.ensure_assets() / "student"))


def sft_data(common: Any, n: int) -> tuple[list[str], list[Any]]:
    """bench_sft.py's texts (168 chars, cut to 128 tokens). Ours: the first 8 characters as the
    user turn and the next 116 as the completion: 3 chat tokens + 8 + 116 + EOS = 128 tokens."""
    from tutorloop.types import Lesson

    rng, encode = random.Random(0), encoder(common)
    texts = [common.rand_text(128 + 40, rng) for _ in range(n)]
    return texts, [Lesson("sft", encode.prompt(user(t[:8])), encode.text(t[8:124])) for t in texts]


def dpo_data(common: Any, n: int) -> tuple[dict[str, list[str]], list[Any]]:
    """bench_dpo.py's texts: prompt 64 chars, chosen/rejected 63 chars + EOS. Ours: the prompt's
    first 61 characters in the chat template (3 chat tokens + 61 = 64 tokens)."""
    from tutorloop.types import Lesson

    rng, encode = random.Random(0), encoder(common)
    rows = [(common.rand_text(64, rng), common.rand_text(63, rng), common.rand_text(63, rng)) for _ in range(n)]
    columns = {"prompt": [p for p, _, _ in rows], "chosen": [c for _, c, _ in rows],
               "rejected": [r for _, _, r in rows]}
    # EOS on both sides, as TRL's DPO data: the anchor compares equal token counts
    return columns, [Lesson("dpo", encode.prompt(user(p[:61])), encode.text(c), rejected_ids=encode.text(r))
                     for p, c, r in rows]


def gkd_data(common: Any, n: int) -> list[list[dict[str, str]]]:
    """bench_gkd.py's conversations: user 60 chars (63 tokens rendered), assistant 63 chars + EOS."""
    rng = random.Random(0)
    return [[{"role": "user", "content": common.rand_text(60, rng)},
             {"role": "assistant", "content": common.rand_text(63, rng)}] for _ in range(n)]


def opd_examples(conversations: list[list[dict[str, str]]], student: Any, teacher: Any) -> list[Any]:
    """The same conversations as OPD examples: the assistant text's ids + EOS as the completion,
    behaviour log-probs from the student and top-k scores from the teacher. Scoring is the
    teacher generator's work, done here once; `teacher_score_window` times it separately."""
    from tutorloop.trainers.encoding import TokenEncoder
    from tutorloop.types import Lesson

    tok = student.tokenizer
    prompts = [tuple(c[:1]) for c in conversations]
    ids = [tuple(tok(c[1]["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
           for c in conversations]
    behaviour = asyncio.run(student.score(prompts, ids, top_k=0))
    scores = asyncio.run(teacher.score(prompts, ids, top_k=TOP_K))
    encode = TokenEncoder(tok)
    return [Lesson("kd", encode.prompt(p), i, behavior_logprobs=b.logprobs, teacher=s)
            for p, i, b, s in zip(prompts, ids, behaviour, scores)]


def batches(lessons: list[Any], objective: str) -> list[Any]:
    """Steps of BATCH lessons each, all for `objective`."""
    from dataclasses import replace

    lessons = [replace(x, objective=objective) for x in lessons]
    return [tuple(lessons[i:i + BATCH]) for i in range(0, len(lessons), BATCH)]


# --------------------------------------------------------------------------------------------- #
# Contenders: each is a Window
# --------------------------------------------------------------------------------------------- #


def our_trainer(common: Any, weights: dict[str, float], autocast: str = "off") -> Any:
    """fp32 like TRL's anchors; `autocast="auto"`: bf16 matmuls over fp32 weights where this machine
    runs bf16 faster (`trainer.autocast`), a setting the fp32 TRL runs do not have."""
    from tutorloop.trainers.online import OnlineTrainer

    # micro_batch_size 16: DPO's 8 pairs are 16 rows in one forward, as in DPOTrainer.
    return OnlineTrainer(str(common.ensure_assets() / "student"), objectives=weights, lr=1e-4, lora=None,
                         micro_batch_size=16, max_grad_norm=1.0, dtype="float32", autocast=autocast, seed=0)


def step_window(trainer: Any, train_batches: list[Any]) -> Window:
    """Our optimizer steps over distinct batches, as TRL walks its dataset."""
    cycle = itertools.cycle(train_batches)

    async def steps(k: int) -> float:
        began = time.perf_counter()
        for _ in range(k):
            await trainer.step(next(cycle))
        return time.perf_counter() - began

    return lambda k: asyncio.run(steps(k))


def round_window(trainer: Any, student: Any, teacher: Any, prompt_batches: list[list[Any]],
                 phases: dict[str, list[float]]) -> Window:
    """One on-policy round: generate, score top-k with the teacher, one update, sync the weights
    back into the student's generator (TRL's GKD samples from the live weights, so we count it).
    Appends each phase's seconds to `phases`."""
    from tutorloop.trainers.encoding import TokenEncoder
    from tutorloop.types import Lesson, SamplingParams

    params = SamplingParams(temperature=0.9, max_new_tokens=NEW_TOKENS)
    cycle, encode = itertools.cycle(prompt_batches), TokenEncoder(student.tokenizer)

    async def one_round(prompts: list[Any]) -> None:
        marks = [time.perf_counter()]
        outs = await student.generate(prompts, params)
        marks.append(time.perf_counter())
        scores = await teacher.score(prompts, [o.token_ids for o in outs], top_k=TOP_K)
        marks.append(time.perf_counter())
        batch = tuple(Lesson("kd", encode.prompt(p), o.token_ids, behavior_logprobs=o.logprobs, teacher=s,
                             policy_version=o.policy_version) for p, o, s in zip(prompts, outs, scores))
        await trainer.step(batch)
        marks.append(time.perf_counter())
        await student.load_weights(await trainer.weights())
        marks.append(time.perf_counter())
        for name, began, ended in zip(("generate", "score", "update", "sync"), marks, marks[1:]):
            phases.setdefault(name, []).append(ended - began)

    async def rounds(k: int) -> float:
        began = time.perf_counter()
        for _ in range(k):
            await one_round(next(cycle))
        return time.perf_counter() - began

    return lambda k: asyncio.run(rounds(k))


def teacher_score_window(teacher: Any, prompts: list[Any], examples: list[Any]) -> Window:
    """The teacher's top-k scoring of one OPD batch: the work GKD does inside its step and we do
    in the teacher's generator before the step. `prompts`: each lesson's chat messages."""
    rows = list(zip(prompts, examples, strict=True))
    cycle = itertools.cycle([rows[i:i + BATCH] for i in range(0, len(rows), BATCH)])

    async def scores(k: int) -> float:
        began = time.perf_counter()
        for _ in range(k):
            chunk = next(cycle)
            await teacher.score([p for p, _ in chunk], [e.target_ids for _, e in chunk], top_k=TOP_K)
        return time.perf_counter() - began

    return lambda k: asyncio.run(scores(k))


def bare_torch_window(common: Any, texts: list[str]) -> Window:
    """The floor under any trainer: HF forward with labels, backward, clip, AdamW, nothing else.
    Same model and 8 x 128 tokens as the SFT rows; tokenized up front like TRL's dataset."""
    import torch

    model, tok = common.load("student")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = [tok(texts[i:i + BATCH], truncation=True, max_length=128, return_tensors="pt")["input_ids"]
           for i in range(0, len(texts), BATCH)]
    cycle = itertools.cycle(ids)

    def steps(k: int) -> float:
        began = time.perf_counter()
        for _ in range(k):
            batch = next(cycle)
            model(input_ids=batch, labels=batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - began

    return steps


class PacedTRL:
    """A TRL trainer's own `train()` loop in a thread that stops after every k optimizer steps, so
    its windows take turns with ours while its loop (collation, callbacks, accelerate) stays whole.
    max_steps must be exactly the steps asked for, so the loop ends with the last window."""

    def __init__(self, trainer: Any) -> None:
        from transformers import PrinterCallback, TrainerCallback

        trainer.remove_callback(PrinterCallback)  # its end-of-train metrics line would break the table

        self.trainer, self.left, self.began, self.elapsed = trainer, 0, 0.0, 0.0
        self.go, self.done = threading.Semaphore(0), threading.Semaphore(0)
        self.error: BaseException | None = None
        self.finished = False
        pace = self

        class Pace(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                pace.wait_turn()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                pace.left -= 1
                if pace.left == 0:
                    pace.elapsed = time.perf_counter() - pace.began
                    pace.done.release()
                    pace.wait_turn()

        trainer.add_callback(Pace())
        self.thread = threading.Thread(target=self._train, daemon=True)
        self.thread.start()

    def wait_turn(self) -> None:
        self.go.acquire()
        self.began = time.perf_counter()

    def _train(self) -> None:
        try:
            self.trainer.train()
        except BaseException as exc:  # surfaced in the main thread by window()
            self.error = exc
        finally:
            self.finished = True
            self.done.release()

    def __call__(self, k: int) -> float:
        if self.finished:
            raise RuntimeError("the TRL trainer ran out of steps") from self.error
        self.left = k
        self.go.release()
        self.done.acquire()
        if self.error is not None or (self.finished and self.left):
            raise RuntimeError("the TRL trainer stopped before its window ended") from self.error
        return self.elapsed

    def close(self) -> None:
        self.left = -1  # never hits 0 again: the loop runs out its (zero) remaining steps
        self.go.release()
        self.thread.join()


class TRLProcess:
    """A `PacedTRL` in a child process, driven window by window over a pipe: the same interface.

    Why not a thread of this process: libgomp throttles its spin-wait to ~1000 iterations once a
    process holds more OpenMP threads than cores, and TRL's thread brings its own team (2 + 2 on 2
    cores). Every small op then sleeps and wakes its workers, as OMP_WAIT_POLICY=passive does:
    measured here, our tiny-model round's generation went from ~180 to ~400 ms a round after one
    TRL window in the process, and stayed there. Apart, each side has only its own team; the side
    that waits blocks on the pipe and uses no CPU."""

    def __init__(self, common: Any, builder: str, *args: Any) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # fork is unsafe once OpenMP threads exist
        self.conn, child = context.Pipe()
        # The child runs this file by path (runpy), not by module name: tests load it under another
        # name than any the child could import.
        work = {"TRL_CHILD": (child, builder, getattr(common, "model", None), args)}
        self.process = context.Process(target=runpy.run_path, args=(__file__,),
                                       kwargs={"init_globals": work, "run_name": CHILD}, daemon=True)
        self.process.start()
        self._answer()  # built: loading and dataset preparation are not timed

    def _answer(self) -> Any:
        reply = self.conn.recv()
        if isinstance(reply, BaseException):
            raise RuntimeError(f"the TRL process failed: {reply!r}")
        return reply

    def __call__(self, k: int) -> float:
        self.conn.send(k)
        return self._answer()

    def close(self) -> None:
        self.conn.send(None)
        self._answer()
        self.process.join()


def _trl_child(conn: Any, builder: str, model: str | None, args: tuple[Any, ...]) -> None:
    try:
        common = load_common()
        common = ModelAssets(common, model) if model else common
        common.set_threads(THREADS)
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        warnings.filterwarnings("ignore")
        paced = globals()[builder](common, *args)
        conn.send("ready")
        while (k := conn.recv()) is not None:
            conn.send(paced(k))
        paced.close()
        conn.send("closed")
    except BaseException as exc:  # surfaced in the parent by TRLProcess._answer
        conn.send(RuntimeError(f"{type(exc).__name__}: {exc}"))


def trl_kwargs(common: Any, name: str, steps: int) -> dict[str, Any]:
    out = Path(tempfile.gettempdir()) / "tutorloop-bench" / name
    return common.trainer_common_kwargs(str(out), steps, gc=False)


def trl_sft(common: Any, texts: list[str], steps: int) -> PacedTRL:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tok = common.load("student")
    cfg = SFTConfig(**trl_kwargs(common, "sft", steps), max_length=128, packing=False, dataset_text_field="text")
    return PacedTRL(SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_dict({"text": texts}),
                               processing_class=tok))


def trl_dpo(common: Any, columns: dict[str, list[str]], steps: int) -> PacedTRL:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tok = common.load("student")
    cfg = DPOConfig(**trl_kwargs(common, "dpo", steps), max_length=64 + 64 + 1, beta=0.1)
    return PacedTRL(DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_dict(columns),
                               processing_class=tok))


def trl_gkd(common: Any, conversations: list[Any], steps: int, lmbda: float) -> PacedTRL:
    from datasets import Dataset
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    student, tok = common.load("student")
    teacher, _ = common.load("teacher")
    cfg = GKDConfig(**trl_kwargs(common, f"gkd{lmbda}", steps), max_length=128, lmbda=lmbda, beta=0.5,
                    temperature=0.9, max_new_tokens=NEW_TOKENS)
    return PacedTRL(GKDTrainer(model=student, teacher_model=teacher, args=cfg, processing_class=tok,
                               train_dataset=Dataset.from_dict({"messages": conversations})))


# --------------------------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------------------------- #


def interleave(contenders: dict[str, Window], *, warmup: int, k: int, windows: int) -> dict[str, list[float]]:
    """Steps/s of each contender in `windows` windows of k steps, taken in turn (the order rotates
    each window) after `warmup` steps each."""
    for run in contenders.values():
        if warmup:
            run(warmup)
    names = list(contenders)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for w in range(windows):
        for name in names[w % len(names):] + names[:w % len(names)]:
            rates[name].append(k / contenders[name](k))
    return rates


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def row(what: str, ours: list[float], baseline: list[float], note: str, unit: str = "steps/s") -> dict[str, Any]:
    """Medians of per-window rates; the ratio is the median of the per-window ratios (each pair
    timed back to back), which shrugs off a burst of load better than a ratio of medians."""
    ratio = median([a / b for a, b in zip(ours, baseline, strict=True)])
    return {"what": what, "ours": median(ours), "baseline": median(baseline), "unit": unit, "ratio": ratio,
            "note": note}


def serial(*rates: list[float]) -> list[float]:
    """Per-window rate of doing one step of each in turn: 1 / (sum of the per-step times)."""
    return [1 / sum(1 / r for r in window) for window in zip(*rates, strict=True)]


# --------------------------------------------------------------------------------------------- #
# Groups: each builds its contenders, times them interleaved, frees them
# --------------------------------------------------------------------------------------------- #


def bench_sft(common: Any, plan: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    steps = plan["warmup"] + plan["windows"] * plan["k_sft"]
    texts, examples = sft_data(common, steps * BATCH)
    trl = TRLProcess(common, "trl_sft", texts, steps)
    contenders = {"ours": step_window(our_trainer(common, {"sft": 1}), batches(examples, "sft")), "trl": trl,
                  "bare": bare_torch_window(common, texts),
                  "ours_autocast": step_window(our_trainer(common, {"sft": 1}, "auto"), batches(examples, "sft"))}
    rates = interleave(contenders, warmup=plan["warmup"], k=plan["k_sft"], windows=plan["windows"])
    trl.close()
    rows = [row("SFT step, 8 x 128 tok, vs SFTTrainer", rates["ours"], rates["trl"],
                f"target >= {TARGETS['objective']:g}x; ours: 8-token user turn + 116 + EOS, loss on 117 tokens; "
                "TRL: loss on all 128"),
            row("reference: bare PyTorch step (fwd+bwd+clip+AdamW), 8 x 128 tok, vs SFTTrainer",
                rates["bare"], rates["trl"], "the floor under any trainer: no data, loss or logging"),
            row("SFT step, trainer.autocast=auto, vs SFTTrainer (fp32)", rates["ours_autocast"], rates["trl"],
                f"bf16 matmuls over fp32 weights where the probe picks bf16 ({_auto()} here)")]
    return rows, rates


def bench_dpo(common: Any, plan: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    steps = plan["warmup"] + plan["windows"] * plan["k_dpo"]
    columns, pairs = dpo_data(common, steps * BATCH)
    trl = TRLProcess(common, "trl_dpo", columns, steps)
    contenders = {"ours": step_window(our_trainer(common, {"dpo": 1}), batches(pairs, "dpo")), "trl": trl,
                  "ours_autocast": step_window(our_trainer(common, {"dpo": 1}, "auto"), batches(pairs, "dpo"))}
    rates = interleave(contenders, warmup=plan["warmup"], k=plan["k_dpo"], windows=plan["windows"])
    trl.close()
    return [row("DPO step, 8 pairs x (64 + 64 tok), vs DPOTrainer", rates["ours"], rates["trl"],
                f"target >= {TARGETS['objective']:g}x; reference = frozen copy of the student on both sides"),
            row("DPO step, trainer.autocast=auto, vs DPOTrainer (fp32)", rates["ours_autocast"], rates["trl"],
                f"bf16 matmuls over fp32 weights where the probe picks bf16 ({_auto()} here)")], rates


def _auto() -> str:
    from tutorloop.hardware import auto_dtype

    return auto_dtype("cpu")


def generators(common: Any) -> tuple[Any, Any]:
    from tutorloop.generators.hf import HFGenerator

    assets = common.ensure_assets()
    return HFGenerator(str(assets / "student"), seed=0), HFGenerator(str(assets / "teacher"), seed=1)


def bench_opd(common: Any, plan: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    steps = plan["warmup"] + plan["windows"] * plan["k_opd"]
    conversations = gkd_data(common, steps * BATCH)
    student, teacher = generators(common)
    examples = opd_examples(conversations, student, teacher)
    trl = TRLProcess(common, "trl_gkd", conversations, steps, 0.0)
    contenders = {"ours": step_window(our_trainer(common, {"kd": 1}), batches(examples, "kd")), "trl": trl,
                  "score": teacher_score_window(teacher, [tuple(c[:1]) for c in conversations], examples)}
    rates = interleave(contenders, warmup=plan["warmup"], k=plan["k_opd"], windows=plan["windows"])
    trl.close()
    return [row("OPD step (JSD, teacher top-20 given), 8 x (63 + 64 tok), vs GKDTrainer lmbda=0", rates["ours"],
                rates["trl"],
                f"target >= {TARGETS['objective']:g}x; GKD runs the teacher forward (full vocab) inside its step"),
            row("OPD step + teacher top-20 scoring, vs GKDTrainer lmbda=0", serial(rates["ours"], rates["score"]),
                rates["trl"], f"teacher scoring alone: {median(rates['score']):.2f} batches/s")], rates


def bench_mixed(common: Any, plan: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    steps = plan["warmup"] + plan["windows"] * plan["k_mixed"]
    _, sft = sft_data(common, steps * BATCH)
    _, pairs = dpo_data(common, steps * BATCH)
    student, teacher = generators(common)
    opd = opd_examples(gkd_data(common, steps * BATCH), student, teacher)
    del student, teacher
    parts = {"sft": batches(sft, "sft"), "dpo": batches(pairs, "dpo"), "kd": batches(opd, "kd")}
    mixed = [s + d + o for s, d, o in zip(*parts.values())]
    contenders = {name: step_window(our_trainer(common, {name: 1}), b) for name, b in parts.items()}
    contenders["mixed"] = step_window(our_trainer(common, {"sft": 1, "dpo": 1, "kd": 1}), mixed)
    rates = interleave(contenders, warmup=plan["warmup"], k=plan["k_mixed"], windows=plan["windows"])
    mixed = row("mixed step (SFT + DPO + OPD batches above) vs the sum of our three steps", rates["mixed"],
                serial(*(rates[name] for name in parts)), "")
    mixed["note"] = f"time ratio mixed / sum = {1 / mixed['ratio']:.2f} (target <= {TARGETS['mixed']:g})"
    return [mixed], rates


def bench_round(common: Any, plan: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    steps = plan["warmup"] + plan["windows"] * plan["k_round"]
    conversations = gkd_data(common, steps * BATCH)
    prompts = [[tuple(c[:1]) for c in conversations[i:i + BATCH]] for i in range(0, len(conversations), BATCH)]
    student, teacher = generators(common)
    trl = TRLProcess(common, "trl_gkd", conversations, steps, 1.0)
    phases: dict[str, list[float]] = {}
    contenders = {"ours": round_window(our_trainer(common, {"kd": 1}), student, teacher, prompts, phases),
                  "trl": trl}
    rates = interleave(contenders, warmup=plan["warmup"], k=plan["k_round"], windows=plan["windows"])
    trl.close()
    split = ", ".join(f"{name} {1000 * median(seconds):.0f}" for name, seconds in phases.items())
    return [row("on-policy round (generate 8 x 64 tok, teacher top-20, update, sync) vs GKDTrainer lmbda=1",
                rates["ours"], rates["trl"],
                f"target >= {TARGETS['round']:g}x; T=0.9 sampling both; ours per round, ms: {split}",
                unit="rounds/s")], rates


GROUPS = {"sft": bench_sft, "dpo": bench_dpo, "opd": bench_opd, "mixed": bench_mixed, "round": bench_round}


def plan_for(args: argparse.Namespace) -> dict[str, int]:
    if args.quick:
        return {"warmup": 0, "windows": 1, "k_sft": 1, "k_dpo": 1, "k_opd": 1, "k_mixed": 1, "k_round": 1}
    # Many short windows: on a shared 2-core box a burst of someone else's work spoils a window or
    # two, and the medians of 15 (and their paired ratios) stay put.
    return {"warmup": args.warmup, "windows": args.windows, "k_sft": 5, "k_dpo": 2, "k_opd": 3, "k_mixed": 1,
            "k_round": 1}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| what | ours | TRL / baseline | unit | ratio | note |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['ours']:.2f} | {r['baseline']:.2f} | {r['unit']} | {r['ratio']:.2f}x | {r['note']} |"
              for r in rows]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one short window per comparison (smoke test)")
    ap.add_argument("--windows", type=int, default=15, help="timed windows per contender")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per contender first")
    ap.add_argument("--only", nargs="*", choices=list(GROUPS), default=list(GROUPS))
    ap.add_argument("--json", default=None, help="where to write the rows and raw windows")
    ap.add_argument("--model", default=None, help="one model as student and teacher (a path or embedded:NAME) "
                                                  "instead of the anchors' tiny pair")
    args = ap.parse_args(argv)
    if args.json is None:
        tag = args.model.split(":")[-1].split("/")[-1] if args.model else ""
        args.json = str(RESULTS.with_name(f"trl_speed_{tag}.json") if tag else RESULTS)
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the comparisons, print the markdown table, return its rows ({} rows if the anchors are absent)."""
    args = parse(argv)
    common = load_common()
    if common is None:
        print(f"skipped: {ANCHORS} (bench-anchors/common.py) is absent")
        write(Path(args.json), {"rows": [], "skipped": f"{ANCHORS} is absent"})
        return []
    common = ModelAssets(common, args.model) if args.model else common
    common.set_threads(THREADS)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # TRL's dataset preparation
    warnings.filterwarnings("ignore")
    plan = plan_for(args)
    rows: list[dict[str, Any]] = []
    raw: dict[str, dict[str, list[float]]] = {}
    for name in args.only:
        group_rows, raw[name] = GROUPS[name](common, plan)
        rows += group_rows
        gc.collect()
    print(table(rows))
    print("TRL: gradient checkpointing off; full-parameter, fp32, torch threads "
          f"{THREADS}; rates are medians of {plan['windows']} interleaved windows after {plan['warmup']} warm-up "
          "steps, ratios the medians of the per-window ratios")
    from tutorloop.hardware import machine

    write(Path(args.json), {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
                            "dtypes": {"ours": "float32 (autocast rows: bf16 matmuls where dtype auto picks "
                                               f"bf16, {_auto()} here)", "trl": "float32"},
                            "rows": rows, "quick": args.quick, "model": args.model or "anchors' tiny pair", "plan": plan, "windows_per_s": raw,
                            "versions": versions(), "trl_gradient_checkpointing": False, "threads": THREADS})
    return rows


def write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def versions() -> dict[str, str]:
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}


if __name__ == "__main__":
    main()
elif __name__ == CHILD:  # a TRLProcess's child
    _trl_child(*globals()["TRL_CHILD"])
