"""Two Ray nodes on this machine, each with its own custom resource: the teacher is placed on one,
the student and trainer on the other, and two rounds complete."""

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tutorloop import loop

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray")
sys.path.insert(0, str(Path(__file__).parent))
from test_ray import ray_config  # noqa: E402


@pytest.fixture
def two_nodes():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"node_a": 4},
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=2, resources={"node_b": 4})
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _node_of(handle) -> str:
    return ray.get(handle.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


def test_roles_on_different_nodes_complete_two_rounds(two_nodes, tmp_path, tiny_lm_dir, tiny_teacher_dir,
                                                      monkeypatch, captured_generators):
    generators = captured_generators
    node_a, node_b = {"cpus": 0.5, "custom": {"node_a": 1}}, {"cpus": 0.5, "custom": {"node_b": 1}}
    cfg = ray_config(tmp_path, tiny_lm_dir, tiny_teacher_dir, **{
        "runtime.address": two_nodes.address, "agents.teacher.resources": node_a, "agents.mentor.resources": node_a,
        "agents.student.resources": node_b, "trainer.resources": node_b, "eval.after": False})
    teacher_node, student_node = [], []

    from tutorloop.envs.correction import CorrectionEnv

    real_env_run = CorrectionEnv.run

    async def run_and_locate(self, problem, agents):  # read placements while the actors are alive
        if not teacher_node:
            teacher_node.append(_node_of(generators["teacher"].handles[0]))
            student_node.append(_node_of(generators["student"].handles[0]))
        return await real_env_run(self, problem, agents)

    monkeypatch.setattr(CorrectionEnv, "run", run_and_locate)
    asyncio.run(loop.run(cfg))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    assert teacher_node[0] != student_node[0]
