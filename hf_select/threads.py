"""Torch threads from this process's share of the cores, so that processes on one machine never oversubscribe.

torch's intra-op threads busy-wait: two processes of 2 threads each on 2 cores made one greedy ``generate``
8x slower (134 s vs 17 s with 1 thread). Every ``hf-select`` command (in ``hf_select.cli``'s dispatch) and the
demo call :func:`set_torch_threads` once at start:

``threads = max(1, cores // processes)``, where

- ``cores`` = the CPUs this process may run on (``os.sched_getaffinity``), lowered to a cgroup CPU quota
  (``cpu.max``, as ``docker --cpus`` sets) when there is one;
- ``processes`` = the processes launched beside this one on the machine: the local world size of
  ``torchrun`` / ``accelerate launch`` (``LOCAL_WORLD_SIZE``; MPI's local size), times ``workers`` (datatrove
  local workers, ``Dataset.map(num_proc=...)`` processes) when the caller runs that many.

An ``OMP_NUM_THREADS`` the user set caps the result (a launcher that pins each rank to its own cores, or a
user who wants fewer threads, sets it). The choice is logged once per process.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)

_LOCAL_SIZE_VARIABLES = ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")
_logged: tuple | None = None


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), or None without one."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cores() -> int:
    """CPUs this process may use: its affinity set, lowered to the cgroup quota (rounded up) if smaller."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    if quota:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def local_processes(workers: int | None = None) -> int:
    """Processes sharing this machine's cores with this one: the launcher's local world size x ``workers``."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    local = 1
    for name in _LOCAL_SIZE_VARIABLES:
        value = os.environ.get(name)
        if value:
            try:
                local = int(value)
            except ValueError:
                raise ValueError(f"{name}={value!r} is not an integer") from None
            if local < 1:
                raise ValueError(f"{name}={value!r} must be >= 1")
            break
    return local * (workers or 1)


def thread_count(workers: int | None = None) -> int:
    """Intra-op threads for this process: ``max(1, cores // processes)``, capped by a user's OMP_NUM_THREADS."""
    threads = max(1, available_cores() // local_processes(workers))
    omp = os.environ.get("OMP_NUM_THREADS")
    if omp:
        try:
            threads = min(threads, max(1, int(omp)))
        except ValueError:
            raise ValueError(f"OMP_NUM_THREADS={omp!r} is not an integer") from None
    return threads


def set_torch_threads(workers: int | None = None) -> int:
    """Set torch's intra-op threads to this process's share of the cores (see the module docstring) and keep
    the tokenizers' Rust pool off (``TOKENIZERS_PARALLELISM=false`` unless set); returns the thread count.

    Args:
        workers: worker processes this process runs side by side on the machine (datatrove local workers,
            ``Dataset.map`` ``num_proc``); each worker calls this with the same number.
    """
    import torch

    threads = thread_count(workers)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(threads)
    global _logged
    choice = (threads, available_cores(), local_processes(workers))
    if _logged != choice:
        logger.warning(
            f"[threads] {threads} torch thread(s): {choice[1]} core(s) available, {choice[2]} process(es) "
            f"on them"
            + (
                f", OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
                if "OMP_NUM_THREADS" in os.environ
                else ""
            )
        )
        _logged = choice
    return threads
