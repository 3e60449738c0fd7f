"""Torch threads per process (issue 12): planned from the node's own cores, applied where a model
loads, reported; and the CPU turn lock under which generators on one node compute one at a time."""

import multiprocessing
import time

import pytest
import torch

from tutorloop import hardware


@pytest.mark.parametrize(("spec", "cores", "threads"), [("auto", 2, 2), ("auto", 16, 16), ("auto/2", 16, 8),
                                                        ("auto/4", 2, 1), ("3", 16, 3)])
def test_the_plan_follows_the_nodes_cores(spec, cores, threads):
    assert hardware.planned_threads(spec, cores) == threads


def test_an_actor_sizes_its_pool_from_its_own_cores_once(monkeypatch):
    before = torch.get_num_threads()
    hardware.configure_threads.cache_clear()
    monkeypatch.setenv(hardware.THREADS_ENV, "auto/2")
    monkeypatch.setattr(hardware, "usable_cores", lambda: 2)
    try:
        report = hardware.configure_threads()
        assert report["torch_threads"] == torch.get_num_threads() == 1 and report["plan"] == "auto/2"
    finally:
        torch.set_num_threads(before)
        hardware.configure_threads.cache_clear()


def test_outside_ray_torch_keeps_its_default(monkeypatch):
    monkeypatch.delenv(hardware.THREADS_ENV, raising=False)
    hardware.configure_threads.cache_clear()
    before = torch.get_num_threads()
    assert hardware.configure_threads()["torch_threads"] == before
    hardware.configure_threads.cache_clear()


def _hold_the_turn(path: str, held: multiprocessing.Event, seconds: float) -> None:
    import os

    os.environ[hardware.TURNS_ENV] = path
    with hardware.cpu_turn():
        held.set()
        time.sleep(seconds)


def test_a_second_process_waits_for_the_turn(tmp_path, monkeypatch):
    path = str(tmp_path / "turns")
    held = multiprocessing.get_context("fork").Event()
    other = multiprocessing.get_context("fork").Process(target=_hold_the_turn, args=(path, held, 0.6))
    other.start()
    assert held.wait(10)
    monkeypatch.setenv(hardware.TURNS_ENV, path)
    began = time.perf_counter()
    with hardware.cpu_turn():
        waited = time.perf_counter() - began
    other.join(10)
    assert waited > 0.3


def test_without_the_variable_no_turn_is_taken(monkeypatch):
    monkeypatch.delenv(hardware.TURNS_ENV, raising=False)
    with hardware.cpu_turn():
        pass
