"""Kill a run with SIGKILL at a random moment and run it again: it continues from its last
checkpoint, loses at most one round, writes each round's metrics once, keeps its W&B run id, and
ends with the same student weights, bit for bit, as a run that was never interrupted.

Exactness holds because everything a round draws from is restored: the trainer's tensors and
AdamW moments, the lesson buffer, the policy version, each generator's seeded call counter (every
generate call reseeds torch from it), and the python / numpy / torch RNG states. Set
TUTORLOOP_KILL_SEED to replay a given kill point.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_ones_and_twos
import torch

from tutorloop.cli import main

pytestmark = pytest.mark.integration

ROUNDS = 3


LORA = "{r: 4, alpha: 8, target_modules: [q_proj, v_proj]}"
ONE_LEARNER = f"""
env: {{name: correction, num_candidates: 2}}
tasks: {{num_train: 24, num_eval: 3}}
trainer: {{lr: 0.01, lora: {LORA}, objectives: {{sft: 1.0, dpo: 0.5, kd: {{top_k: 4}}}}}}
loop: {{rounds: {ROUNDS}, problems_per_round: 2}}"""
TWO_LEARNERS = f"""
env: {{name: correction, num_candidates: 2, feedback_candidates: 2}}
tasks: {{source: jsonl, path: {{tasks}}, num_train: 24, num_eval: 3}}
learners:
  student: {{agent: student, lr: 0.01, lora: {LORA}, objectives: {{sft: 1.0, dpo: 0.5, kd: {{top_k: 4}}}}}}
  mentor: {{agent: mentor, lr: 0.02, lora: {LORA}, objectives: {{sft: 1.0, dpo: 0.5}}}}
loop: {{rounds: {ROUNDS}, problems_per_round: 4}}"""
"""The student and the mentor learn side by side, both on the tiny model that answers 1 or 2
(`save_answering_lm`), on problems whose answer is 1 or 2: some revisions are right and some wrong,
so the mentor has outcomes to learn from."""
OVERLAP = ONE_LEARNER.replace("problems_per_round: 2}", "problems_per_round: 2, overlap: 1, max_staleness: 1}")
"""Round r + 1's episodes generated while round r trains: every checkpoint is written mid-overlap,
holding the next round's episodes, which the resumed run trains on instead of sampling them again."""


def _tasks(tmp_path: Path) -> Path:
    return write_ones_and_twos(tmp_path, 30)


def _config(tmp_path: Path, name: str, student: Path, teacher: Path, wandb: str = "disabled",
            learners: str = ONE_LEARNER) -> str:
    path = tmp_path / f"{name}.yaml"
    # Two learners: "The answer is 1." takes 16 byte tokens; the mentor plays on the student's model.
    mentor, tokens, mentor_tokens = (student, 20, 20) if learners is TWO_LEARNERS else (teacher, 8, 6)
    path.write_text(f"""
name: {name}
run_dir: {tmp_path / name}
agents:
  student: {{model: {student}, sampling: {{max_new_tokens: {tokens}}}}}
  teacher: {{model: {teacher}, sampling: {{max_new_tokens: 8}}}}
  mentor: {{model: {mentor}, sampling: {{max_new_tokens: {mentor_tokens}}}}}
{learners.replace("{tasks}", str(_tasks(tmp_path)))}
eval: {{before: true, after: false, max_new_tokens: 6}}
checkpoint: {{every: 1, keep: 2}}
log: {{console: false, wandb: {{mode: {wandb}}}}}
""")
    return str(path)


def _tutorloop(*args: str) -> subprocess.Popen:
    # Each run gets its own W&B service: one inherited from this process (an earlier test's in-process
    # W&B run sets WANDB_SERVICE) would outlive the killed run and still hold its run id.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {"WANDB_SILENT": "true"}
    return subprocess.Popen([sys.executable, "-m", "tutorloop.cli", "run", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def _untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(("round/", "gen/")) and not k.endswith(("seconds", "_per_s"))}


def _finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]


def _checkpoints(run_dir: Path) -> list[int]:
    root = run_dir / "checkpoints"
    return sorted(int(p.name.removeprefix("round-")) for p in root.glob("round-*")) if root.exists() else []


@pytest.mark.parametrize("learners", [ONE_LEARNER, TWO_LEARNERS, OVERLAP], ids=["student", "student+mentor", "overlap"])
def test_sigkill_at_a_random_moment_then_resume_is_exact(tmp_path, tiny_lm_dir, tiny_teacher_dir, learners, request):
    from safetensors.torch import load_file

    if learners is TWO_LEARNERS:
        tiny_lm_dir = request.getfixturevalue("tiny_answering_lm_dir")
    seed = int(os.environ.get("TUTORLOOP_KILL_SEED", random.SystemRandom().randrange(2**31)))
    rng = random.Random(seed)
    reference = tmp_path / "reference"
    assert main(["run", _config(tmp_path, "reference", tiny_lm_dir, tiny_teacher_dir, learners=learners)]) == 0
    expected_rows = _rows(reference)  # in-process: faster
    round_seconds = sum(r["round/seconds"] for r in expected_rows) / len(expected_rows)
    trained = ["student", "mentor"] if learners is TWO_LEARNERS else ["student"]
    if learners is OVERLAP:  # the checkpoint before the last round holds that round's episodes, generated ahead
        assert json.loads((reference / "checkpoints" / f"round-{ROUNDS - 1:06d}" / "ahead.json").read_text()).keys() == {
            str(ROUNDS - 1)}
    if "mentor" in trained:  # the mentor had outcomes to learn from: its weights moved
        assert sum(r.get("mentor/lessons/sft", 0) for r in expected_rows) > 0

    victim = tmp_path / "victim"
    config = _config(tmp_path, "victim", tiny_lm_dir, tiny_teacher_dir, wandb="offline", learners=learners)
    process = _tutorloop(config)
    # Kill once this many rounds are logged, plus a random fraction of one. Overlap: never after the
    # second-to-last row, whose last round only trains (its episodes were generated ahead) and can end
    # within the pause on a fast machine, leaving no checkpoint with rounds to go (CI, seed 1160986517).
    after_rows = rng.randrange(ROUNDS - 1 if learners is OVERLAP else ROUNDS)
    deadline = time.monotonic() + 300  # a hang guard: a loaded shared machine starts a run slowly
    while len(_rows(victim)) < after_rows or not (victim / "metrics.jsonl").exists() or (
            learners is OVERLAP and not _checkpoints(victim)):  # overlap: once a checkpoint holds episodes ahead
        assert process.poll() is None and time.monotonic() < deadline, "run ended before the kill point"
        time.sleep(0.02)
    pause = rng.uniform(0, 0.5 * round_seconds) if learners is OVERLAP else rng.uniform(0, 1.5 * round_seconds)
    time.sleep(rng.choice([0.0, pause]))  # 0: most likely mid-checkpoint
    process.send_signal(signal.SIGKILL)
    process.communicate()
    logged, saved = len(_rows(victim)), _checkpoints(victim)
    done = saved[-1] if saved else 0
    where = f"kill seed {seed}: {logged} rounds logged, checkpoints {saved}"
    assert logged - done <= 1, f"more than one round lost ({where})"
    if learners is OVERLAP:  # the resume starts from a checkpoint with rounds to go and their episodes generated ahead
        assert 0 < done < ROUNDS and (victim / "checkpoints" / f"round-{done:06d}" / "ahead.json").exists(), where

    began = time.monotonic()
    _finish(_tutorloop(config, "--resume") if saved else _tutorloop(config))
    print(f"\n{where}; resume took {time.monotonic() - began:.1f} s")

    rows = _rows(victim)
    assert [r["round"] for r in rows] == list(range(ROUNDS)), where  # each round once, in order
    for got, want in zip(rows, expected_rows):  # every round computed the same numbers
        assert _untimed(got) == _untimed(want), where
    for name in trained:  # every learner's final weights, bit for bit
        a = load_file(victim / name / "adapter_model.safetensors")
        b = load_file(reference / name / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name}'s weights differ ({where})"
        assert any(b[k].abs().sum() > 0 for k in b if "lora_B" in k), f"{name} never learned"  # B starts at 0
    runs = {p.name.rsplit("-", 1)[-1] for p in (victim / "wandb").glob("offline-run-*")}
    if saved:  # a run killed before its first checkpoint starts afresh, under a new W&B id
        assert len(runs) == 1, f"the resumed run started a new W&B run: {runs} ({where})"
    episodes = [json.loads(line)["round"] for line in (victim / "episodes.jsonl").read_text().splitlines()]
    per_round = 4 if "mentor" in trained else 2
    assert episodes == sorted(episodes) and len(episodes) == per_round * ROUNDS


def test_full_finetuning_run_extended_by_a_round_equals_a_longer_run(tmp_path, tiny_lm_dir, tiny_teacher_dir):
    """Full fine-tuning checkpoints all weights and AdamW's moments; `loop.rounds` may grow between
    two commands, so a finished run goes on where it ended."""
    from safetensors.torch import load_file

    full = ["trainer.lora=null", "trainer.objectives={sft: 1, dpo: 0.5}", "eval.before=false", "loop.rounds=2"]
    assert main(["run", _config(tmp_path, "longer", tiny_lm_dir, tiny_teacher_dir), *full]) == 0
    extended = _config(tmp_path, "extended", tiny_lm_dir, tiny_teacher_dir)
    assert main(["run", extended, *full[:-1], "loop.rounds=1"]) == 0
    assert main(["run", extended, *full]) == 0
    assert [r["round"] for r in _rows(tmp_path / "extended")] == [0, 1]
    a = load_file(tmp_path / "longer" / "student" / "model.safetensors")
    b = load_file(tmp_path / "extended" / "student" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
