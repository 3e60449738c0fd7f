"""The Ray runtime on this machine: the same loop with every role in an actor, replicas,
data-parallel gradients equal to one worker's, and a run that survives a killed actor."""

import asyncio
import json

import pytest

from tutorloop import loop
from tutorloop.config import validate_config

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, logging_level="ERROR", namespace="tests")
    yield
    ray.shutdown()


def ray_config(tmp_path, student, teacher, **sections):
    light = {"cpus": 0.5}
    raw = {
        "name": "tiny-ray", "run_dir": str(tmp_path / "run"), "runtime": {"kind": "ray", "threads_per_actor": 1},
        "agents": {"student": {"model": str(student), "sampling": {"max_new_tokens": 8}, "resources": light},
                   "teacher": {"model": str(teacher), "sampling": {"max_new_tokens": 8}, "resources": light},
                   "mentor": {"model": str(teacher), "sampling": {"max_new_tokens": 6}, "resources": light}},
        "tasks": {"num_train": 16, "num_eval": 4},
        "trainer": {"lr": 1e-2, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                    "objectives": {"sft": 1.0, "dpo": 0.5, "kd": {"top_k": 4}}, "resources": light},
        "loop": {"rounds": 2, "problems_per_round": 4},
        "eval": {"before": False, "max_new_tokens": 6},
        "log": {"console": False, "wandb": {"mode": "disabled"}},
    }
    for path, value in sections.items():
        node = raw
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return validate_config(raw)



def _rounds(tmp_path):
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_loop_runs_with_every_role_in_an_actor_and_replicas(ray_local, tmp_path, tiny_lm_dir, tiny_teacher_dir,
                                                            captured_generators):
    generators = captured_generators
    cfg = ray_config(tmp_path, tiny_lm_dir, tiny_teacher_dir, **{"agents.student.resources.replicas": 2})
    summary = asyncio.run(loop.run(cfg))
    assert [r["policy_version"] for r in _rounds(tmp_path)] == [1.0, 2.0]
    assert "eval/accuracy_after" in summary
    assert len(generators["student"].handles) == 2
    assert (tmp_path / "run" / "student" / "adapter_model.safetensors").exists()
    episodes = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    versions = {t["policy_version"] for e in episodes for t in e["turns"] if t["role"] == "student"}
    assert versions == {0, 1}  # both replicas received round 0's update before round 1


def test_a_killed_actor_is_restarted_and_the_round_retried(ray_local, tmp_path, tiny_lm_dir, tiny_teacher_dir,
                                                           monkeypatch, captured_generators):
    from tutorloop.envs.correction import CorrectionEnv

    generators = captured_generators
    killed, real_run = [], CorrectionEnv.run

    async def run_and_kill(self, problem, agents):
        if len(killed) == 0 and generators:  # first episode: kill the teacher mid-round
            ray.kill(generators["teacher"].handles[0], no_restart=False)
            killed.append(problem.id)
        return await real_run(self, problem, agents)

    monkeypatch.setattr(CorrectionEnv, "run", run_and_kill)
    cfg = ray_config(tmp_path, tiny_lm_dir, tiny_teacher_dir, **{"eval.after": False})
    asyncio.run(loop.run(cfg))
    assert killed and [r["round"] for r in _rounds(tmp_path)] == [0, 1]


def test_data_parallel_gradients_equal_one_workers(ray_local, tiny_lm_dir, tiny_teacher_dir):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_trainer import LORA, _batch  # the same mixed batch the trainer invariants use

    from tutorloop.config import Resources, RuntimeConfig
    from tutorloop.runtime.ray import RayRuntime
    from tutorloop.trainers.data_parallel import DataParallelTrainer
    from tutorloop.trainers.online import OnlineTrainer

    batch = _batch(tiny_lm_dir, tiny_teacher_dir)
    kwargs = dict(objectives={"sft": 1.0, "dpo": 0.5, "kd": 1.0}, lr=1e-3, lora=LORA, seed=0, max_grad_norm=1e9)
    single = asyncio.run(OnlineTrainer(str(tiny_lm_dir), **kwargs).step(batch))
    runtime = RayRuntime(RuntimeConfig(kind="ray", threads_per_actor=1))
    workers = [runtime.spawn(OnlineTrainer, str(tiny_lm_dir), resources=Resources(cpus=0.5), world_size=2, **kwargs)
               for _ in range(2)]
    both = asyncio.run(DataParallelTrainer(workers).step(batch))
    runtime.shutdown()
    assert both["train/world_size"] == 2.0
    for key in ("train/grad_norm", "loss/sft", "loss/dpo", "loss/kd", "sft/units", "kd/units", "dpo/units"):
        assert both[key] == pytest.approx(single[key], rel=1e-4), key


def test_a_crashed_run_continues_on_ray_with_the_same_rounds_and_data(ray_local, tmp_path, tiny_lm_dir,
                                                                       tiny_teacher_dir, monkeypatch):
    """A run dies in round 1 (an exception here, a lost node in life) and the same command continues
    from round 0's checkpoint with every role in a Ray actor. The first part runs in-process, which
    is cheaper and shows that a checkpoint moves between runtimes. On Ray the result is not
    bit-exact: each actor batches the requests that happen to reach it together, network arrival
    order changes the batch shapes (padding), and so the float rounding of teacher scores. What is
    exact: each round once, the same problems in the same order, and the policy versions."""
    from tutorloop.tasks import build_tasks

    real, calls = loop.run_episodes, []

    async def node_lost_in_round_1(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionError("node lost")
        return await real(*args, **kwargs)

    sections = {"loop.rounds": 2, "loop.problems_per_round": 2, "eval.after": False}
    cfg = ray_config(tmp_path, tiny_lm_dir, tiny_teacher_dir, **sections)
    monkeypatch.setattr(loop, "run_episodes", node_lost_in_round_1)
    with pytest.raises(ConnectionError):
        asyncio.run(loop.run(ray_config(tmp_path, tiny_lm_dir, tiny_teacher_dir, runtime={"kind": "local"}, **sections)))
    monkeypatch.setattr(loop, "run_episodes", real)
    asyncio.run(loop.run(cfg, resume=True))
    rows = _rounds(tmp_path)
    assert [(r["round"], r["policy_version"]) for r in rows] == [(0, 1.0), (1, 2.0)]
    tasks = build_tasks(cfg.tasks.source, path=None, difficulty=cfg.tasks.difficulty, num_train=cfg.tasks.num_train,
                        num_eval=cfg.tasks.num_eval, seed=cfg.seed)
    episodes = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    assert [(e["round"], e["problem"]["id"]) for e in episodes] == \
           [(r, p.id) for r in range(2) for p in tasks.sample(2, r)]
    assert (tmp_path / "run" / "checkpoints" / "round-000002").is_dir()  # saved from the actors


def test_same_node_sync_goes_through_shared_memory_and_lands_exactly(ray_local, tiny_lm_dir):
    import torch

    from tutorloop.config import Resources, RuntimeConfig
    from tutorloop.generators.hf import HFGenerator
    from tutorloop.runtime.ray import RayRuntime
    from tutorloop.trainers.online import OnlineTrainer
    from tutorloop.trainers.weight_sync import PackedWeights, SharedWeights, sync_weights, unpack
    from tutorloop.types import Lesson

    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}
    runtime = RayRuntime(RuntimeConfig(kind="ray", threads_per_actor=1))
    trainer = runtime.spawn(OnlineTrainer, str(tiny_lm_dir), resources=Resources(cpus=0.5), objectives={"sft": 1.0},
                            lr=1e-2, lora=lora)
    generator = runtime.spawn(HFGenerator, str(tiny_lm_dir), resources=Resources(cpus=0.5), lora=lora)

    def adapter(actor):
        return ray.get(actor.__ray_call__.remote(
            lambda g: {n: p.detach().clone() for n, p in g._sync_targets().items()}))

    async def scenario():
        assert await trainer.colocated_with(generator)
        _, handle = await trainer.weights(shared=True)
        assert isinstance(handle, SharedWeights) and handle.nbytes > 0
        _, packed = await trainer.weights()
        assert isinstance(packed, PackedWeights)
        for step in (1, 2):  # the second sync reuses the segment and the generator's flat layout
            await trainer.step((Lesson("sft", (1, 40, 41), (42, 43, 2)),))
            assert await sync_weights(trainer, generator) == step
        return await trainer.weights()

    version, packed = asyncio.run(scenario())
    sent = dict(unpack(packed))
    got = adapter(generator.handles[0])
    assert version == 2 and sent.keys() == got.keys()
    assert all(torch.equal(sent[n], got[n]) for n in sent)
    assert ray.get(generator.handles[0].__ray_call__.remote(lambda g: g.version)) == 2
    runtime.shutdown()


def test_concurrent_requests_reach_the_actors_as_one_batch_split_across_replicas(ray_local):
    from tutorloop.config import Resources, RuntimeConfig
    from tutorloop.runtime.ray import RayRuntime
    from tutorloop.types import SamplingParams

    class Recorder:  # defined here so Ray ships it by value
        def __init__(self) -> None:
            self.batches = []

        async def generate(self, prompts, params):
            self.batches.append(len(prompts))
            return [f"{p}/{i}" for p in prompts for i in range(params.n)]

        async def score(self, prompts, target_ids, top_k):
            self.batches.append(len(prompts))
            return [f"{p}:{t}" for p, t in zip(prompts, target_ids)]

        async def seen(self):
            return self.batches

    runtime = RayRuntime(RuntimeConfig(kind="ray", threads_per_actor=1))
    proxy = runtime.spawn(Recorder, resources=Resources(cpus=0.1, replicas=2))

    async def scenario():
        two = SamplingParams(n=2)
        generated = await asyncio.gather(*(proxy.generate([f"p{i}"], two) for i in range(8)))
        scored = await asyncio.gather(*(proxy.score([f"p{i}"], [i], 3) for i in range(6)))
        return generated, scored

    generated, scored = asyncio.run(scenario())
    assert generated == [[f"p{i}/0", f"p{i}/1"] for i in range(8)]  # each caller gets its own n completions
    assert scored == [[f"p{i}:{i}"] for i in range(6)]
    assert [ray.get(h.seen.remote()) for h in proxy.handles] == [[4, 3], [4, 3]]  # one call per stage and replica
    runtime.shutdown()


def test_each_actor_gets_its_nodes_cores_and_takes_turns_on_them(ray_local):
    from tutorloop.config import Resources, RuntimeConfig
    from tutorloop.hardware import usable_cores
    from tutorloop.generators.scripted import ScriptedGenerator
    from tutorloop.runtime.ray import RayRuntime

    runtime = RayRuntime(RuntimeConfig(kind="ray"))
    try:  # Ray alone would give a `cpus: 0.5` actor 1 thread
        runtime.spawn(ScriptedGenerator, ("hi",), resources=Resources(cpus=0.5))
        runtime.spawn(ScriptedGenerator, ("hi",), resources=Resources(cpus=0.5, replicas=2))  # they split
        reports = asyncio.run(runtime.thread_reports())
    finally:
        runtime.shutdown()
    cores = usable_cores()
    assert [r["torch_threads"] for r in reports] == [cores, max(1, cores // 2), max(1, cores // 2)]
    assert all(r["takes_turns"] and r["cores"] == cores for r in reports)
