"""`loop.overlap`: the next round's episodes are generated while the learners step, with the weights
from before the step, and the staleness bound holds for every lesson trained on."""

import asyncio
import json

import pytest

from tutorloop import loop
from tutorloop.objectives import REGISTRY
from tutorloop.trainers.replay import LessonBuffer

from test_loop import tiny_config

pytestmark = pytest.mark.integration


def _run(tmp_path, student, teacher, monkeypatch, **loop_cfg):
    """Three rounds of correction with kd (on-policy); returns the metrics rows, each round's student
    turn versions, and every batch taken: (the generator's version, the lessons' versions)."""
    taken = []
    original = LessonBuffer.take

    def spy(self, *, version, max_staleness, max_per_kind):
        batch = original(self, version=version, max_staleness=max_staleness, max_per_kind=max_per_kind)
        taken.append((version, [x.policy_version for x in batch if REGISTRY[x.objective].on_policy]))
        return batch

    monkeypatch.setattr(LessonBuffer, "take", spy)
    cfg = tiny_config(tmp_path, student, teacher, loop={"rounds": 3, "problems_per_round": 2} | loop_cfg,
                      eval={"before": False, "after": False})
    asyncio.run(loop.run(cfg))
    run_dir = tmp_path / "run"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    turns: dict[int, set[int]] = {}
    for line in (run_dir / "episodes.jsonl").read_text().splitlines():
        episode = json.loads(line)
        turns.setdefault(episode["round"], set()).update(t["policy_version"] for t in episode["turns"]
                                                          if t["role"] == "student")
    return rows, turns, taken


def test_overlap_one_samples_the_pre_step_weights_within_the_staleness_bound(tmp_path, tiny_lm_dir,
                                                                          tiny_teacher_dir, monkeypatch):
    """Catches: round r + 1 generated after round r's sync (no overlap at all), a sync that raced the
    generation (a round mixing versions), and a lesson trained beyond max_staleness."""
    rows, turns, taken = _run(tmp_path, tiny_lm_dir, tiny_teacher_dir, monkeypatch, overlap=1, max_staleness=1)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(r["policy_version"] == r["round"] + 1 for r in rows)  # every round still stepped once
    # Round 0 had nothing ahead of it; rounds 1 and 2 were sampled while rounds 0 and 1 trained.
    assert turns == {0: {0}, 1: {0}, 2: {1}}
    assert len(taken) == 3 and all(v >= version - 1 for version, versions in taken for v in versions)
    assert [len(versions) > 0 for _, versions in taken] == [True] * 3  # the stale-by-one kd lessons trained
    assert {version - v for version, versions in taken[1:] for v in versions} == {1}
    assert all(r["buffer/dropped_stale"] == 0 for r in rows)


def test_overlap_zero_samples_the_newest_weights(tmp_path, tiny_lm_dir, tiny_teacher_dir, monkeypatch):
    """Today's behaviour: each round samples the weights its previous round synced."""
    rows, turns, taken = _run(tmp_path, tiny_lm_dir, tiny_teacher_dir, monkeypatch)
    assert turns == {0: {0}, 1: {1}, 2: {2}}
    assert all(v == version for version, versions in taken for v in versions)
    assert all(r["buffer/dropped_stale"] == 0 for r in rows)
