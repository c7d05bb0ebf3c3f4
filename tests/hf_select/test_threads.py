"""hf_select.threads: torch threads from the process's share of the cores, set once by every command."""

import sys
import types
from dataclasses import dataclass

import pytest
import torch

from hf_select import threads

REAL_CGROUP_QUOTA = threads._cgroup_quota


@pytest.fixture
def machine(monkeypatch):
    """A machine with ``cores`` CPUs in this process's affinity set and no cgroup quota; restores torch threads."""
    before = torch.get_num_threads()
    for name in ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)

    def cores(n):
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)

    yield cores
    torch.set_num_threads(before)


def test_share_of_cores_from_launcher_and_workers(machine, monkeypatch):
    machine(8)
    assert threads.thread_count() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun --nproc_per_node 2
    assert threads.thread_count() == 4
    assert threads.thread_count(workers=3) == 1  # 6 processes on 8 cores: 1 each, never 2
    machine(2)
    assert threads.thread_count() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # more processes than cores: still one thread
    assert threads.thread_count() == 1


def test_user_omp_num_threads_caps_and_bad_values_are_named(machine, monkeypatch):
    machine(8)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.thread_count() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    assert threads.thread_count() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="LOCAL_WORLD_SIZE='two'"):
        threads.thread_count()
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        threads.thread_count(workers=0)


def test_cgroup_quota_lowers_the_cores(tmp_path, machine, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert REAL_CGROUP_QUOTA(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert REAL_CGROUP_QUOTA(tmp_path) is None
    machine(8)
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)
    assert threads.available_cores() == 2


def test_set_torch_threads_sets_and_logs_once(machine, monkeypatch, caplog):
    machine(4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(threads, "_logged", None)
    logged = []
    monkeypatch.setattr(threads.logger, "warning", lambda message: logged.append(message))
    assert threads.set_torch_threads() == 2 and torch.get_num_threads() == 2
    threads.set_torch_threads()
    assert len(logged) == 1 and "2 torch thread(s): 4 core(s) available, 2 process(es)" in logged[0]


def test_every_command_and_the_demo_set_threads_through_the_helper(monkeypatch):
    from hf_select import cli
    from hf_select.demo import runner

    calls = []
    monkeypatch.setattr(threads, "set_torch_threads", lambda workers=None: calls.append("set") or 1)

    @dataclass
    class Args:
        x: int = 0

    module = types.ModuleType("fake_command")
    module.CONFIG_CLASSES = (Args,)
    module.run = lambda args: calls.append(("run", args.x)) or 0
    monkeypatch.setitem(sys.modules, "fake_command", module)
    monkeypatch.setitem(cli.COMMANDS, ("fake",), ("fake_command", "a fake command"))
    monkeypatch.setattr(cli, "_available", lambda name: True)
    assert cli.main(["fake", "--x", "3"]) == 0
    assert calls == ["set", ("run", 3)]  # threads are set before the command runs
    assert runner.pin_threads() == 1 and calls[-1] == "set"
