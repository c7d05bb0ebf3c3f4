"""Resumable, multi-process ``Dataset.map`` for expensive scorers (AttentionInfluence, reference losses, ...).

Each process (``torchrun`` / ``accelerate launch`` set ``RANK`` and ``WORLD_SIZE``; several nodes work the same
way) takes its shard with ``datasets.distributed.split_dataset_by_node`` and maps it part by part
(``part_size`` rows). Every finished part is written as one parquet file followed by a JSON completion marker,
both atomically (:class:`hf_select.resume.ResumeFolder`, the resume mechanism shared by every long job). A killed job re-run with the same
arguments skips every part that has a marker, so no finished part is scored twice. When a rank has finished
all its parts it writes a rank marker; :func:`load_sharded_output` reads the parts in order once every rank
is done (for a map-style dataset the order is the original row order, since the split is contiguous).

A resume must use the same world size, part size and ``fingerprint`` (an id of the data, scorer and
parameters). Every part marker records its fingerprint, part size, rank, world size and row range, and a resume
whose settings differ from a marker's is refused with a message naming the setting (parts are found by
index, so another part size would skip rows). A marker cut by a kill is removed and its part scored again.
Every rank marker records the rows its
rank mapped, and :func:`load_sharded_output` checks the row count of the parts against the markers and, when
given, against the dataset's length before merging. Temporary files live in ``output_dir`` only.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers.utils import logging

from .resume import ResumeFolder, read_marker, write_marker

logger = logging.get_logger(__name__)


def distributed_rank_and_world_size() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from the environment set by torchrun / accelerate (``(0, 1)`` without them)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _part_name(rank: int, world_size: int, part: int) -> str:
    return f"part-r{rank:05d}-of-{world_size:05d}-{part:06d}"


def _rank_marker(output_dir: Path, rank: int, world_size: int) -> Path:
    return output_dir / f"rank-{rank:05d}-of-{world_size:05d}.done"


def _check_resume(output_dir: Path, rank: int, world_size: int, part_size: int) -> None:
    """Refuse to resume when a finished part was written with another world size or part size."""
    for marker in sorted(output_dir.glob("part-r*-of-*.done")):
        meta = read_marker(marker)
        if meta is None:
            continue
        other_world = int(marker.stem.split("-of-")[1].split("-")[0])
        if other_world != world_size:
            raise ValueError(
                f"{output_dir} holds parts of a run with world size {other_world}, this run has {world_size}; "
                f"resume with {other_world} processes or use a new output folder"
            )
        if meta.get("part_size") != part_size:
            raise ValueError(
                f"{marker.name} was written with part_size {meta.get('part_size')}, this run uses "
                f"{part_size}; resume with --part_size {meta.get('part_size')} or use a new output folder"
            )
        part = int(marker.stem.rsplit("-", 1)[1])
        if meta.get("start") != part * part_size:
            raise ValueError(
                f"{marker.name} covers rows from {meta.get('start')}, expected {part * part_size}; "
                "the folder is corrupted: use a new output folder"
            )


def _parts_of(shard, part_size: int, skip_parts: int):
    """``(part index, number of input rows, Dataset factory)`` for a map-style shard or an iterable one
    (resumed after ``skip_parts``)."""
    from datasets import Dataset

    if isinstance(shard, Dataset):
        for part, start in enumerate(range(0, len(shard), part_size)):
            stop = min(start + part_size, len(shard))
            yield part, stop - start, lambda start=start, stop=stop: shard.select(range(start, stop))
        return
    rows: list[dict] = []
    part = skip_parts
    for row in shard.skip(skip_parts * part_size):
        rows.append(row)
        if len(rows) == part_size:
            yield part, len(rows), lambda rows=rows: Dataset.from_list(rows)
            rows, part = [], part + 1
    if rows:
        yield part, len(rows), lambda rows=rows: Dataset.from_list(rows)


def _finished_parts(folder: ResumeFolder, rank: int, world_size: int) -> tuple[set[str], int, int, int]:
    """This rank's finished parts, how many lead without a gap (an iterable shard never yields them again)
    and the input and output rows of those."""
    prefix = _part_name(rank, world_size, 0)[:-6]
    folder.remove_orphans(f"{prefix}*")  # left by a kill during a write
    done = {p.stem for p in folder.folder.glob(f"{prefix}*.done") if folder.finished(p.stem) is not None}
    skip, total_in, total_out = 0, 0, 0
    while _part_name(rank, world_size, skip) in done:
        meta = folder.finished(_part_name(rank, world_size, skip))
        total_in, total_out = total_in + meta.get("input_rows", meta["rows"]), total_out + meta["rows"]
        skip += 1
    return done, skip, total_in, total_out


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
    folder = ResumeFolder(output_dir, fingerprint)
    folder.check()
    _check_resume(output_dir, rank, world_size, part_size)
    shard = split_dataset_by_node(dataset, rank=rank, world_size=world_size) if world_size > 1 else dataset
    done, skip, total_in, total_out = _finished_parts(folder, rank, world_size)
    kwargs = {"batched": True, "batch_size": batch_size, **(map_kwargs or {})}
    scored_parts = 0
    for part, n_in, make in _parts_of(shard, part_size, skip):
        name = _part_name(rank, world_size, part)
        start = part * part_size
        if part < skip:
            continue
        if name in done:
            meta = folder.finished(name)
            if meta.get("input_rows", n_in) != n_in:
                raise ValueError(
                    f"{name}.done covers {meta.get('input_rows')} input rows, this run's part has {n_in}: "
                    "the dataset changed since the first run; use a new output folder"
                )
            total_in, total_out = total_in + n_in, total_out + meta["rows"]
            continue
        # an explicit fingerprint: datasets would otherwise hash the function (a scorer holding a model) per
        # part, under a bare except that also swallows a SIGTERM arriving meanwhile
        part_kwargs = {"new_fingerprint": hashlib.sha256(f"{fingerprint}/{name}".encode()).hexdigest()[:32]}
        part_kwargs.update(kwargs)
        mapped = make().map(function, load_from_cache_file=False, keep_in_memory=True, **part_kwargs)
        meta = {
            "rows": len(mapped),
            "input_rows": n_in,
            "part_size": part_size,
            "start": start,
            "stop": start + n_in,
            "rank": rank,
            "world_size": world_size,
        }
        folder.commit(name, meta, lambda tmp, mapped=mapped: mapped.to_parquet(str(tmp)), ".parquet")
        scored_parts += 1
        total_in, total_out = total_in + n_in, total_out + len(mapped)
    write_marker(
        _rank_marker(output_dir, rank, world_size),
        {"fingerprint": fingerprint, "part_size": part_size, "input_rows": total_in, "rows": total_out},
    )
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


def load_sharded_output(
    output_dir: str | Path, world_size: int | None = None, expected_input_rows: int | None = None
):
    """The ``Dataset`` of all parts in rank / part order; raises if a rank has not finished.

    Before merging, the rows of the part files are checked against their markers and the rank markers, and
    the input rows covered by all ranks against ``expected_input_rows`` (the dataset's length, when known):
    a missing, extra or foreign part is an error, never a silently shorter result.
    """
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
    parts = sorted(output_dir.glob(f"part-r*-of-{world_size:05d}-*.parquet"))
    rank_meta = [read_marker(_rank_marker(output_dir, r, world_size)) for r in range(world_size)]
    if None in rank_meta:
        raise RuntimeError(f"a rank marker of {output_dir} was cut by a kill; re-run to finish")
    part_meta = {}
    for path in parts:
        meta = read_marker(path.with_suffix(".done"))
        if meta is None:
            raise RuntimeError(
                f"{path.name} has no completion marker (an interrupted write); re-run to finish"
            )
        part_meta[path] = meta
    if all("input_rows" in m for m in rank_meta):
        covered = sum(m["input_rows"] for m in rank_meta)
        written = sum(m["rows"] for m in rank_meta)
        in_parts = sum(m.get("rows", 0) for m in part_meta.values())
        if in_parts != written:
            raise RuntimeError(
                f"{output_dir}: the parts hold {in_parts} rows but the rank markers record {written}; "
                "parts are missing or foreign: use a new output folder"
            )
        if expected_input_rows is not None and covered != expected_input_rows:
            raise RuntimeError(
                f"{output_dir}: the parts cover {covered} input rows but the dataset has {expected_input_rows}; "
                "use a new output folder"
            )
    elif expected_input_rows is not None:
        raise RuntimeError(f"{output_dir} was written without row counts (an older version); re-run it")
    if not parts:
        return Dataset.from_dict({})
    return Dataset.from_parquet([str(p) for p in parts], keep_in_memory=True)
