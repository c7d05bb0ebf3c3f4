import json
import textwrap
from pathlib import Path

import pytest
from datasets import Dataset

from hf_select.sharded_map import load_sharded_output, sharded_map
from hf_select.testing import run_torchrun


def _data(n=23):
    return Dataset.from_dict({"text": [f"doc {i}" for i in range(n)], "i": list(range(n))})


class _Scorer:
    def __init__(self, fail_after=None):
        self.seen, self.fail_after, self.calls = [], fail_after, 0

    def __call__(self, batch):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("killed")
        self.seen.extend(batch["i"])
        return {"score": [i * 0.5 for i in batch["i"]]}


@pytest.mark.parametrize("iterable", [False, True])
def test_resume_skips_finished_parts_and_equals_clean_run(tmp_path, iterable):
    data = _data()
    source = data.to_iterable_dataset() if iterable else data
    clean = sharded_map(source, _Scorer(), tmp_path / "clean", "fp", part_size=5, batch_size=5)
    crashing = _Scorer(fail_after=2)
    with pytest.raises(RuntimeError, match="killed"):
        sharded_map(source, crashing, tmp_path / "run", "fp", part_size=5, batch_size=5)
    assert crashing.seen == list(range(10))
    resumed = _Scorer()
    sharded_map(source, resumed, tmp_path / "run", "fp", part_size=5, batch_size=5)
    assert resumed.seen == list(range(10, 23))  # finished parts are never scored twice
    a, b = load_sharded_output(clean), load_sharded_output(tmp_path / "run")
    assert a.to_dict() == b.to_dict() and a["score"] == [i * 0.5 for i in range(23)]


def test_two_ranks_in_one_process_and_fingerprint_guard(tmp_path):
    data = _data(11)
    for rank in range(2):
        sharded_map(data, _Scorer(), tmp_path, "fp", part_size=4, rank=rank, world_size=2)
    assert load_sharded_output(tmp_path)["i"] == list(range(11))
    with pytest.raises(ValueError, match="another run"):
        sharded_map(data, _Scorer(), tmp_path, "other", part_size=4, rank=0, world_size=2)


def test_unfinished_rank_is_an_error(tmp_path):
    sharded_map(_data(6), _Scorer(), tmp_path, "fp", part_size=4, rank=0, world_size=2)
    with pytest.raises(RuntimeError, match=r"ranks \[1\] of 2"):
        load_sharded_output(tmp_path)


WORKER = textwrap.dedent(
    """
    import os, sys, json
    from datasets import Dataset
    from hf_select.sharded_map import sharded_map

    out, log = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    crash_after = int(os.environ.get("CRASH_AFTER", "0"))
    data = Dataset.from_dict({"i": list(range(40))})
    calls = []

    def score(batch):
        calls.append(1)
        if crash_after and rank == 1 and len(calls) > crash_after:
            os._exit(3)  # a hard kill in the middle of the run
        with open(f"{log}.{rank}", "a") as f:
            f.write(json.dumps(batch["i"]) + "\\n")
        return {"double": [2 * i for i in batch["i"]]}

    sharded_map(data, score, out, "fp", part_size=4, batch_size=4)
    """
)


def _torchrun(tmp_path, out, log, crash_after=0):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return run_torchrun(script, out, log, env={"CRASH_AFTER": str(crash_after)})


def _logged(log: Path) -> list[int]:
    rows = []
    for rank in range(2):
        path = Path(f"{log}.{rank}")
        if path.exists():
            rows += [i for line in path.read_text().splitlines() for i in json.loads(line)]
    return rows


@pytest.mark.slow
def test_torchrun_killed_midway_resumes_to_the_clean_result(tmp_path):
    assert _torchrun(tmp_path, tmp_path / "clean", tmp_path / "clean_log").returncode == 0
    crashed = _torchrun(tmp_path, tmp_path / "run", tmp_path / "log1", crash_after=2)
    assert crashed.returncode != 0
    first = _logged(tmp_path / "log1")
    assert 0 < len(first) < 40
    finished = {p.stem for p in (tmp_path / "run").glob("part-*.done")}
    assert _torchrun(tmp_path, tmp_path / "run", tmp_path / "log2").returncode == 0
    second = _logged(tmp_path / "log2")
    assert len(finished) * 4 + len(second) == 40  # only the unfinished parts were scored again
    clean, resumed = load_sharded_output(tmp_path / "clean"), load_sharded_output(tmp_path / "run")
    assert resumed.to_dict() == clean.to_dict() and resumed["double"] == [2 * i for i in range(40)]


def test_resume_with_another_part_size_is_refused(tmp_path):
    data = _data(30)
    with pytest.raises(RuntimeError, match="killed"):
        sharded_map(data, _Scorer(fail_after=2), tmp_path, "fp", part_size=10, batch_size=5)
    # parts are keyed by their row ranges: another part_size is refused, never read as other rows
    with pytest.raises(ValueError, match="part_size 10"):
        sharded_map(data, _Scorer(), tmp_path, "fp", part_size=8, batch_size=4)
    sharded_map(data, _Scorer(), tmp_path, "fp", part_size=10, batch_size=5)
    assert load_sharded_output(tmp_path, expected_input_rows=30)["i"] == list(range(30))


def test_markers_record_part_size_range_and_fingerprint(tmp_path):
    sharded_map(_data(7), _Scorer(), tmp_path, "fp", part_size=4)
    meta = json.loads((tmp_path / "part-r00000-of-00001-000001.done").read_text())
    assert (meta["fingerprint"], meta["part_size"], meta["start"], meta["stop"], meta["rows"]) == (
        "fp",
        4,
        4,
        7,
        3,
    )


def test_row_count_is_checked_before_merging(tmp_path):
    sharded_map(_data(12), _Scorer(), tmp_path, "fp", part_size=4)
    with pytest.raises(RuntimeError, match="cover 12 input rows but the dataset has 13"):
        load_sharded_output(tmp_path, expected_input_rows=13)
    for suffix in (".parquet", ".done"):
        (tmp_path / f"part-r00000-of-00001-000001{suffix}").unlink()
    with pytest.raises(RuntimeError, match="hold 8 rows but the rank markers record 12"):
        load_sharded_output(tmp_path)


def test_a_part_of_another_world_size_is_refused(tmp_path):
    sharded_map(_data(6), _Scorer(), tmp_path, "fp", part_size=4, rank=0, world_size=2)
    with pytest.raises(ValueError, match="world size 2"):
        sharded_map(_data(6), _Scorer(), tmp_path, "fp", part_size=4)


def test_an_orphan_temporary_part_is_removed_on_resume(tmp_path):
    (tmp_path / "part-r00000-of-00001-000009.parquet.tmp").write_text("half written")
    sharded_map(_data(3), _Scorer(), tmp_path, "fp", part_size=4)
    assert not list(tmp_path.glob("*.tmp"))
