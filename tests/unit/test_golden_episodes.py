"""The correction episodes of one round, held against a golden file made by the code before issue
13's restructuring: scripted student, teacher and mentor on three built-in arithmetic problems, wired
as `loop.run` wires them (tasks, agents, env, the run log that writes episodes.jsonl), so every
turn's text, prompt, verdict, provenance and reward is fixed. No model is loaded.

The episodes cover a right first attempt; a wrong one fixed by the teacher's second candidate, with
feedback that states the answer (redacted) and a right revision; and a wrong one where no candidate
passes (reference fallback) and the revision is still wrong. Nothing in episodes.jsonl varies run
to run (no timings, no paths), so no field is dropped; to remake the file after an intended change,
run this test with TUTORLOOP_REGOLD=1 and read the diff.
"""

import asyncio
import json
import os
from pathlib import Path

from tutorloop.agents import Agent, build_agents, sampling
from tutorloop.config import config_dict, validate_config
from tutorloop.envs import build_env
from tutorloop.generators.scripted import ScriptedGenerator
from tutorloop.metrics import RunLog
from tutorloop.runtime.local import LocalRuntime
from tutorloop.tasks import build_tasks

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "correction_episodes.jsonl"

# Round 0 samples 22 (57 - 35), 11 (45 - 34) and 56 (49 + 7), in that order (arithmetic, seed 0).
# Scripted replies come in call order, and each episode runs to its end before the next starts
# (no scripted call waits), so a revision follows its own attempt.
STUDENT = ("57 - 35 = 22. The answer is 22.",  # right on the first try
           "45 - 34 = 79. The answer is 79.",  # wrong: corrected, then revised
           "45 - 34 = 11. The answer is 11.",  # its revision: right
           "49 + 7 = 42. The answer is 42.",  # wrong: no candidate passes, reference fallback
           "49 + 7 = 55. The answer is 55.")  # its revision: still wrong
TEACHER = ("Mistake: you added.\nSolution: 45 - 34 = 12. The answer is 12.",  # two candidates a mistake
           "Mistake: 34 was added, not taken away.\nSolution: 45 - 34 = 11.\nThe answer is 11.",
           "Mistake: none.\nSolution: The answer is 42.",
           "Solution: 49 + 7 = 54. The answer is 54.")
MENTOR = ("Take away instead of adding: 45 - 34 is 11.",  # states the answer: redacted
          "Check the addition digit by digit.")


def golden_config(tmp_path):
    """The student's model is never loaded: its generator is scripted below (validation allows only
    model generators for the trainable role). A scripted teacher cannot score tokens: no OPD."""
    return validate_config({
        "name": "golden", "run_dir": str(tmp_path / "run"), "seed": 0,
        "agents": {"student": {},
                   "teacher": {"generator": {"kind": "scripted", "replies": list(TEACHER)}},
                   "mentor": {"generator": {"kind": "scripted", "replies": list(MENTOR)}}},
        "env": {"name": "correction", "student": "student", "teacher": "teacher", "mentor": "mentor",
                "num_candidates": 2},
        "tasks": {"source": "arithmetic", "difficulty": 1, "num_train": 3, "num_eval": 1},
        "trainer": {"objectives": {"sft": 1.0, "dpo": 0.5}},
        "loop": {"rounds": 1, "problems_per_round": 3},
        "log": {"console": False, "wandb": {"mode": "disabled"}},
    })


async def write_one_round(cfg):
    runtime = LocalRuntime()
    agents = build_agents(runtime, cfg.agents, trained={}, seed=cfg.seed, names=("teacher", "mentor")) | {
        "student": Agent("student", ScriptedGenerator(STUDENT), sampling(cfg.agents["student"]))}
    tasks = build_tasks(cfg.tasks.source, path=None, difficulty=cfg.tasks.difficulty, num_train=cfg.tasks.num_train,
                        num_eval=cfg.tasks.num_eval, seed=cfg.seed)
    env = build_env(cfg)
    episodes = await asyncio.gather(*(env.run(p, agents) for p in tasks.sample(cfg.loop.problems_per_round, 0)))
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True)
    log = RunLog(run_dir, name=cfg.name, config=config_dict(cfg), console=False, wandb_cfg=cfg.log.wandb)
    log.write(0, env.metrics(episodes), episodes)
    log.finish({})
    return (run_dir / "episodes.jsonl").read_text(encoding="utf-8")


def test_correction_episodes_match_the_golden_file(tmp_path):
    written = asyncio.run(write_one_round(golden_config(tmp_path)))
    if os.environ.get("TUTORLOOP_REGOLD"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(written, encoding="utf-8")
    episodes = [json.loads(line) for line in written.splitlines()]
    golden = [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines()]
    assert [e["problem"]["id"] for e in episodes] == [e["problem"]["id"] for e in golden]
    for got, want in zip(episodes, golden):  # one episode at a time, so a failure names it
        assert got == want, f"episode {want['problem']['id']} differs from {GOLDEN.name}"


def test_the_golden_file_covers_every_step():
    """Guards the golden file itself: a remade one that lost a case would pass the test above."""
    golden = [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines()]
    shapes = [[(t["role"], t["kind"], t["correct"], t["provenance"]) for t in e["turns"]] for e in golden]
    assert shapes == [
        [("student", "attempt", True, "model")],
        [("student", "attempt", False, "model"), ("teacher", "correction", True, "model"),
         ("mentor", "feedback", None, "redacted"), ("student", "revision", True, "model")],
        [("student", "attempt", False, "model"), ("teacher", "correction", True, "reference"),
         ("mentor", "feedback", None, "model"), ("student", "revision", False, "model")],
    ]
    assert [e["stop"] for e in golden] == ["solved", "solved", "max_rounds"]
