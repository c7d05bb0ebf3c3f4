"""Resumable, multi-process ``Dataset.map`` for expensive scorers (AttentionInfluence, reference losses, ...).

Each process (``torchrun`` / ``accelerate launch`` set ``RANK`` and ``WORLD_SIZE``; several nodes work the same
way) takes its shard with ``datasets.distributed.split_dataset_by_node`` and maps it part by part
(``part_size`` rows). Every finished part is written as one parquet file (written to a temporary name, then
renamed) followed by a JSON completion marker, in the spirit of datatrove. A killed job re-run with the same
arguments skips every part that has a marker, so no finished part is scored twice. When a rank has finished
all its parts it writes a rank marker; :func:`load_sharded_output` reads the parts in order once every rank
is done (for a map-style dataset the order is the original row order, since the split is contiguous).

A resume must use the same world size and part size (the file names record them) and the same
``fingerprint`` (an id of the data, scorer and parameters); a different fingerprint in the folder is an error
rather than a silent mix of two runs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers.utils import logging

logger = logging.get_logger(__name__)


def distributed_rank_and_world_size() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from the environment set by torchrun / accelerate (``(0, 1)`` without them)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _part_name(rank: int, world_size: int, part: int) -> str:
    return f"part-r{rank:05d}-of-{world_size:05d}-{part:06d}"


def _rank_marker(output_dir: Path, rank: int, world_size: int) -> Path:
    return output_dir / f"rank-{rank:05d}-of-{world_size:05d}.done"


def _check_fingerprint(output_dir: Path, fingerprint: str) -> None:
    for marker in output_dir.glob("*.done"):
        found = json.loads(marker.read_text()).get("fingerprint")
        if found != fingerprint:
            raise ValueError(
                f"{output_dir} holds results of another run (fingerprint {found} != {fingerprint}); "
                "use a new output folder or delete it"
            )


def _write_part(dataset, path: Path, meta: dict[str, Any]) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    dataset.to_parquet(str(tmp))
    os.replace(tmp, path.with_suffix(".parquet"))
    path.with_suffix(".done").write_text(json.dumps(meta))


def _parts_of(shard, part_size: int, skip_parts: int):
    """``(part index, Dataset)`` for a map-style shard or an iterable one (resumed after ``skip_parts``)."""
    from datasets import Dataset

    if isinstance(shard, Dataset):
        for part, start in enumerate(range(0, len(shard), part_size)):
            yield part, lambda start=start: shard.select(range(start, min(start + part_size, len(shard))))
        return
    rows: list[dict] = []
    part = skip_parts
    for row in shard.skip(skip_parts * part_size):
        rows.append(row)
        if len(rows) == part_size:
            yield part, lambda rows=rows: Dataset.from_list(rows)
            rows, part = [], part + 1
    if rows:
        yield part, lambda rows=rows: Dataset.from_list(rows)


def sharded_map(
    dataset,
    function: Callable,
    output_dir: str | Path,
    fingerprint: str,
    part_size: int = 10_000,
    batch_size: int = 64,
    rank: int | None = None,
    world_size: int | None = None,
    map_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Map ``function`` (``batched=True``) over this rank's shard of ``dataset``, resumably; see module docs.

    Args:
        dataset: a ``Dataset`` or ``IterableDataset``.
        function: batched map function (e.g. :class:`hf_select.AttentionInfluence`).
        output_dir: folder shared by all ranks (parquet parts + markers).
        fingerprint: id of (data, scorer, parameters); guards resumes against mixing runs.
        part_size: rows per parquet part (the unit of resumption).
        batch_size: ``map`` batch size.
        rank, world_size: default from the environment (:func:`distributed_rank_and_world_size`).
        map_kwargs: more ``Dataset.map`` arguments (e.g. ``remove_columns``).

    Returns the output folder.
    """
    from datasets.distributed import split_dataset_by_node

    env_rank, env_world = distributed_rank_and_world_size()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world size {world_size}")
    if part_size < 1:
        raise ValueError(f"part_size must be >= 1, got {part_size}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _check_fingerprint(output_dir, fingerprint)
    shard = split_dataset_by_node(dataset, rank=rank, world_size=world_size) if world_size > 1 else dataset
    done = {p.stem for p in output_dir.glob(f"{_part_name(rank, world_size, 0)[:-6]}*.done")}
    skip = 0
    while _part_name(rank, world_size, skip) in done:
        skip += 1
    kwargs = {"batched": True, "batch_size": batch_size, **(map_kwargs or {})}
    scored_parts = 0
    for part, make in _parts_of(shard, part_size, skip):
        name = _part_name(rank, world_size, part)
        if name in done:
            continue
        mapped = make().map(function, load_from_cache_file=False, keep_in_memory=True, **kwargs)
        _write_part(mapped, output_dir / name, {"fingerprint": fingerprint, "rows": len(mapped)})
        scored_parts += 1
    _rank_marker(output_dir, rank, world_size).write_text(json.dumps({"fingerprint": fingerprint}))
    logger.info(f"rank {rank}/{world_size}: {scored_parts} parts scored, {len(done)} reused")
    return output_dir


def wait_for_ranks(
    output_dir: str | Path, world_size: int, timeout: float = 86_400, poll: float = 2.0
) -> None:
    """Block until every rank of ``world_size`` has written its completion marker (or raise on timeout)."""
    output_dir = Path(output_dir)
    deadline = time.monotonic() + timeout
    while not all(_rank_marker(output_dir, r, world_size).exists() for r in range(world_size)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every rank of {world_size} finished in {output_dir}")
        time.sleep(poll)


def load_sharded_output(output_dir: str | Path, world_size: int | None = None):
    """The ``Dataset`` of all parts in rank / part order; raises if a rank has not finished."""
    from datasets import Dataset

    output_dir = Path(output_dir)
    markers = sorted(output_dir.glob("rank-*-of-*.done"))
    if not markers:
        raise FileNotFoundError(f"no finished rank in {output_dir}")
    sizes = {int(m.stem.split("-of-")[1].split(".")[0]) for m in markers}
    world_size = world_size or (sizes.pop() if len(sizes) == 1 else None)
    if world_size is None:
        raise ValueError(f"{output_dir} mixes runs with world sizes {sorted(sizes)}")
    missing = [r for r in range(world_size) if not _rank_marker(output_dir, r, world_size).exists()]
    if missing:
        raise RuntimeError(f"ranks {missing} of {world_size} have not finished in {output_dir}")
    files = sorted(str(p) for p in output_dir.glob(f"part-r*-of-{world_size:05d}-*.parquet"))
    if not files:
        return Dataset.from_dict({})
    return Dataset.from_parquet(files, keep_in_memory=True)
