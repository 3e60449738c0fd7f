"""Checkpoints without a model: atomic writes, half-written and damaged checkpoints never load, keep
the last K, config changes refused, and every piece of state (optimizer, RNG, lessons) round-trips
exactly. Also the JSONL trimming a resumed run relies on."""

import asyncio
import errno
import json
import random

import numpy as np
import pytest
import torch

from tutorloop.checkpoint import CheckpointStore, Progress, config_changes, restore, rng_state, set_rng_state
from tutorloop.errors import UserError
from tutorloop.metrics import keep_rounds_before
from tutorloop.trainers.replay import LessonBuffer
from tutorloop.types import Lesson, TokenScores

CONFIG = {"seed": 0, "run_dir": "runs/a", "loop": {"rounds": 4, "problems_per_round": 2}, "trainer": {"lr": 0.1}}


class TinyTrainer:
    """The checkpoint half of the Trainer protocol over one linear layer and AdamW."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(3, 2)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.1)
        self.version = 0

    def step(self):
        self.model(torch.randn(4, 3)).square().sum().backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.version += 1

    async def checkpoint_state(self):
        return {"weights": dict(self.model.named_parameters()), "optimizer": self.optimizer.state_dict(),
                "version": self.version}

    async def load_checkpoint_state(self, state):
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(state["weights"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = state["version"]

    async def weights(self):
        return self.version, list(self.model.state_dict().items())


class CountingGenerator:
    def __init__(self):
        self.calls, self.version = 0, 0

    async def sampling_state(self):
        return {"calls": self.calls}

    async def load_sampling_state(self, state):
        self.calls = state["calls"]

    async def load_weights(self, weights, version=None):
        self.version = weights[0] if version is None else version  # (version, weights) from Trainer.weights()
        return self.version


def _buffer():
    buffer = LessonBuffer(capacity=8)
    prompt = (1, 2, 3)
    scores = TokenScores(logprobs=(-0.1, -float("inf")), topk_ids=((1, 2), (3, 4)), topk_logprobs=((-0.1, -2.5), (-1e-9, -3.0)))
    buffer.add([Lesson("sft", prompt, (4, 5), token_weights=(0.0, 1.0), provenance="revision"),
                Lesson("dpo", prompt, (4,), rejected_ids=(5,), weight=0.5, provenance="x"),
                Lesson("kd", prompt, (5, 6), behavior_logprobs=(-0.25, -1 / 3), teacher=scores, policy_version=2)])
    buffer.dropped_stale = 3
    return buffer


class TinyLearner:
    """What a checkpoint reads of a learner: its trainer, its buffer, and the sync to its generator."""

    def __init__(self, trainer, generator, buffer):
        self.trainer, self.generator, self.buffer = trainer, generator, buffer

    async def sync(self):
        return await self.generator.load_weights(await self.trainer.weights())


def _save(store, rounds_done, trainer=None, generators=None, buffer=None, config=CONFIG, extra=None):
    """A checkpoint of the learner "student" (plus `extra` learners by name)."""
    trainer = trainer or TinyTrainer()
    generators = generators or {"student": CountingGenerator(), "teacher": CountingGenerator()}
    learners = {"student": TinyLearner(trainer, generators["student"], buffer or LessonBuffer(4))} | (extra or {})
    versions = {name: learner.trainer.version for name, learner in learners.items()}
    return asyncio.run(store.save(Progress(rounds_done=rounds_done, versions=versions, summary={"a": 0.5}),
                                  learners=learners, generators=generators, wandb_id="run123", config=config))


def test_save_then_restore_continues_bit_for_bit(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    trainer, student = TinyTrainer(), CountingGenerator()
    trainer.step()
    student.calls = 7
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    _save(store, 1, trainer, {"student": student, "teacher": CountingGenerator()}, _buffer())
    trainer.step()  # the run goes on after the checkpoint...
    expected = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))

    resumed, generators, buffer = TinyTrainer(seed=9), {"student": CountingGenerator(), "teacher": CountingGenerator()}, LessonBuffer(8)
    saved = store.latest(CONFIG, required=True)
    progress = asyncio.run(restore(saved, learners={"student": TinyLearner(resumed, generators["student"], buffer)},
                                   generators=generators))
    assert progress == Progress(rounds_done=1, versions={"student": 1}, summary={"a": 0.5}) and saved.wandb_id == "run123"
    assert generators["student"].calls == 7 and generators["student"].version == 1
    resumed.step()  # ...and the resumed one takes the same step, on the same random inputs
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws
    assert all(torch.equal(expected[k], v) for k, v in resumed.model.state_dict().items())
    assert buffer.state() == _buffer().state() and list(buffer.queues["kd"]) == list(_buffer().queues["kd"])


def test_two_learners_each_restore_their_own_state(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    student, mentor = TinyTrainer(seed=1), TinyTrainer(seed=2)
    student.step()
    mentor.step(), mentor.step()
    generators = {"student": CountingGenerator(), "mentor": CountingGenerator()}
    mentor_buffer = LessonBuffer(4)
    mentor_buffer.add([Lesson("sft", (1,), (2, 3), learner="mentor")])
    path = _save(store, 1, student, generators, _buffer(),
                 extra={"mentor": TinyLearner(mentor, generators["mentor"], mentor_buffer)})
    assert {p.name for p in path.iterdir()} == {"student", "mentor", "state.json"}

    fresh = {name: CountingGenerator() for name in generators}
    learners = {name: TinyLearner(TinyTrainer(seed=9), fresh[name], LessonBuffer(8)) for name in ("student", "mentor")}
    progress = asyncio.run(restore(store.latest(CONFIG, required=True), learners=learners, generators=fresh))
    assert progress.versions == {"student": 1, "mentor": 2}
    assert fresh["student"].version == 1 and fresh["mentor"].version == 2  # each agent synced to its own learner
    for name, want in (("student", student), ("mentor", mentor)):
        got = learners[name].trainer
        assert all(torch.equal(a, b) for a, b in zip(got.model.state_dict().values(), want.model.state_dict().values()))
        assert got.optimizer.state_dict()["state"][0]["step"] == want.optimizer.state_dict()["state"][0]["step"]
    assert learners["mentor"].buffer.state() == mentor_buffer.state()
    assert learners["student"].buffer.state() == _buffer().state()


def test_unfinished_write_is_ignored_and_removed(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    _save(store, 2)
    torn = store.root / ".tmp-round-000003-abcd"
    torn.mkdir()
    (torn / "weights.safetensors").write_bytes(b"\x00" * 10)  # killed mid-write: no state.json, never renamed
    saved = store.latest(CONFIG, required=False)
    assert saved.path.name == "round-000002" and not torn.exists()


def test_damaged_checkpoint_is_skipped_for_the_previous_one(tmp_path, capsys):
    store = CheckpointStore(tmp_path / "checkpoints", keep=3)
    _save(store, 1)
    newest = _save(store, 2)
    with open(newest / "student" / "optimizer.safetensors", "r+b") as f:
        f.truncate(20)
    assert store.latest(CONFIG, required=True).path.name == "round-000001"
    assert "skipping damaged checkpoint" in capsys.readouterr().err


def test_keeps_only_the_newest_k(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    for r in range(1, 5):
        _save(store, r)
    assert [p.name for p in store.complete()] == ["round-000003", "round-000004"]


def test_full_disk_is_one_line_and_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    _save(store, 1)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", no_space)
    with pytest.raises(UserError) as info:
        _save(store, 2)
    assert "cannot write checkpoint round-000002 (No space left on device)" in str(info.value)
    assert "\n" not in str(info.value)
    assert [p.name for p in store.root.iterdir()] == ["round-000001"]  # no temp dir left behind
    assert store.latest(CONFIG, required=True).path.name == "round-000001"


def test_resume_with_a_changed_config_names_the_keys(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    _save(store, 1)
    changed = CONFIG | {"seed": 1, "trainer": {"lr": 0.2}}
    with pytest.raises(UserError, match="different config \\(seed, trainer.lr differ\\)"):
        store.latest(changed, required=False)
    more_rounds = CONFIG | {"run_dir": "elsewhere", "loop": {"rounds": 10, "problems_per_round": 2}}
    assert store.latest(more_rounds, required=True) is not None
    assert config_changes({"loop": {"rounds": 1, "buffer_size": 2}}, {"loop": {"rounds": 3}}) == ["loop.buffer_size"]
    moved = {"runtime": {"kind": "ray", "address": "auto"}, "agents": {"student": {"resources": {"gpus": 1}}}}
    assert config_changes({"runtime": {"kind": "local"}, "agents": {"student": {"resources": {"gpus": 0}}}}, moved) == []


def test_resume_without_a_checkpoint_is_an_error_only_when_required(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    assert store.latest(CONFIG, required=False) is None
    with pytest.raises(UserError, match="--resume: no complete checkpoint in"):
        store.latest(CONFIG, required=True)


def test_rng_state_survives_json():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = json.loads(json.dumps(rng_state()))
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    set_rng_state(state)
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == first


def test_resumed_logs_drop_rounds_to_be_redone_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"round": r, "loss": 0.1 * r}) for r in range(4)]
    path.write_text("\n".join(rows) + '\n{"round": 4, "lo')  # killed while writing round 4
    keep_rounds_before(path, 3)
    assert [json.loads(line)["round"] for line in path.read_text().splitlines()] == [0, 1, 2]
    keep_rounds_before(path, 0)
    assert path.read_text() == ""
    keep_rounds_before(tmp_path / "absent.jsonl", 0)  # nothing to trim


def test_a_key_added_since_the_checkpoint_counts_as_its_default():
    from tutorloop.config import config_dict, load_config

    now = config_dict(load_config("configs/default.yaml"))
    saved = {**now, "tasks": {k: v for k, v in now["tasks"].items() if k not in ("split", "question_field")}}
    assert config_changes(saved, now) == []  # written before tasks.split and tasks.question_field existed
    assert config_changes(saved, {**now, "tasks": now["tasks"] | {"split": "test"}}) == ["tasks.split"]
    assert config_changes({**saved, "seed": now["seed"] + 1}, now) == ["seed"]
    # A key today's schema does not know: both compared as they are, so absent keys differ again.
    assert config_changes({**saved, "gone": 1}, now) == ["gone", "tasks.question_field", "tasks.split"]


def test_episodes_ahead_round_trip_exactly(tmp_path):
    """The episodes a mid-overlap checkpoint holds come back equal, tuples, enum and floats alike, so
    the lessons a resumed run makes from them equal the uninterrupted run's."""
    from tutorloop.checkpoint import Checkpoint, episodes_ahead
    from tutorloop.types import Episode, Problem, StopReason, TokenScores, Turn

    scores = TokenScores(logprobs=(-0.1, -1 / 3), topk_ids=((1, 2), (3, 4)), topk_logprobs=((-0.2, -0.7), (-1e-9, -5.0)))
    turn = Turn(role="student", text="The answer is 1.", prompt=({"role": "user", "content": "1+0?"},),
                token_ids=(5, 6), logprobs=(-0.123456789012345, -2.5), policy_version=3, correct=True, answer="1",
                teacher_scores=scores, alternatives=("2",))
    episode = Episode(Problem(id="p1", prompt="1+0?", answer="1"), (turn, Turn(role="teacher", text="ok", prompt=())),
                      {"solved": 1.0}, StopReason.SOLVED)
    store = CheckpointStore(tmp_path, keep=2)
    path = asyncio.run(store.save(Progress(rounds_done=1), learners={}, generators={}, wandb_id=None, config={},
                                  ahead={1: [episode]}))
    back = episodes_ahead(Checkpoint(path, json.loads((path / "state.json").read_text())))
    assert back == {1: [episode]} and type(back[1][0].turns) is tuple and back[1][0].stop is StopReason.SOLVED
    assert episodes_ahead(None) == {}
