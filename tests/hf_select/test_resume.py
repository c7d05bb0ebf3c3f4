"""The one resume mechanism (hf_select.resume) and its users: a marker cut by a kill never blocks a resume, the
resumed result equals the clean one, a run of another fingerprint is refused, orphans are removed."""

from __future__ import annotations

import json
import math

import pytest
from datasets import Dataset

from hf_select.sharded_map import load_sharded_output, sharded_map


def _data(n=13):
    return Dataset.from_dict({"text": [f"doc {i}" for i in range(n)], "i": list(range(n))})


def _double(batch):
    return {"score": [i * 2.0 for i in batch["i"]]}


def test_write_atomic_never_leaves_a_half_file(tmp_path):
    from hf_select.resume import ResumeFolder, read_marker, write_atomic, write_marker

    target = write_marker(tmp_path / "m.done", {"a": 1})

    def killed(tmp):
        tmp.write_text('{"a": ')  # half written, then the kill
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, killed)
    assert read_marker(target) == {"a": 1}  # the old marker, whole
    assert not list(tmp_path.glob("*.tmp"))  # an interrupted write cleans up after itself
    (tmp_path / "part.parquet.tmp").write_text("cut")  # what a SIGKILL mid-write leaves
    assert ResumeFolder(tmp_path, "fp").remove_orphans() == 1 and not list(tmp_path.glob("*.tmp"))


def test_an_unreadable_marker_is_removed_and_read_as_absent(tmp_path):
    from hf_select.resume import read_marker

    for text in ("", '{"fingerprint": "f', "[1, 2]"):
        (tmp_path / "m.done").write_text(text)
        assert read_marker(tmp_path / "m.done") is None and not (tmp_path / "m.done").exists()


def test_claim_refuses_another_run_and_names_the_settings(tmp_path):
    from hf_select.resume import ResumeFolder

    ResumeFolder(tmp_path, "a").claim({"model": "m1", "max_length": 8})
    ResumeFolder(tmp_path, "a").claim({"model": "m1", "max_length": 8})  # the same run resumes
    with pytest.raises(ValueError, match=r"another run.*model: 'm1' -> 'm2'"):
        ResumeFolder(tmp_path, "b").claim({"model": "m2", "max_length": 8})


# ---- every user: a marker emptied by a kill during its write, then a resume == the clean run ----------------


def _sharded(folder):
    sharded_map(_data(), _double, folder, "fp", part_size=4, batch_size=4)
    return load_sharded_output(folder, expected_input_rows=13).to_dict()


def _chunks(folder):
    from hf_select.datatrove.steps import ChunkCheckpoint

    pytest.importorskip("datatrove")
    out = []
    for index in range(3):
        ckpt = ChunkCheckpoint(folder, 0, 1, "fp")
        values = ckpt.load(index, [f"d{index}"])
        if values is None:
            values = [{"v": index * 1.5}]
            ckpt.save(index, [f"d{index}"], values)
        out.append(values)
    return out


def _groups(folder):
    from hf_select.data_whisperer.scorer import _GroupLog

    log = _GroupLog(folder, "k" * 32)
    done = log.load()
    new = [{"round": 0, "group": g, "seconds": 1.0} for g in range(3) if (0, g) not in done]
    log.append(new)
    return sorted(log.load())


def _stages(folder):
    from types import SimpleNamespace

    from hf_select.demo import runner

    calls = []
    module = SimpleNamespace(TITLE="t", run=lambda ctx: calls.append(1) or {"value": 7})
    ctx = SimpleNamespace(output_dir=folder, quick=True, seed=0, results={})
    original = runner.stage_module
    runner.stage_module = lambda name: module
    try:
        outcome = runner.run_stage(ctx, "x")
    finally:
        runner.stage_module = original
    return outcome.result["value"]


USERS = {
    "sharded parts": (_sharded, "part-r00000-of-00001-000001.done"),
    "sharded rank": (_sharded, "rank-00000-of-00001.done"),
    "datatrove chunks": (_chunks, "00000-of-00001/chunk-000001.json"),
    "data whisperer groups": (_groups, "run-kkkkkkkkkkkkkkkk/state.json"),
    "demo stages": (_stages, "stages/x.json"),
}


@pytest.mark.parametrize("user", USERS)
def test_a_marker_cut_by_a_kill_never_blocks_the_resume(tmp_path, user):
    run, marker = USERS[user]
    clean = run(tmp_path / "clean")
    assert run(tmp_path / "clean") == clean  # a plain re-run reuses everything
    run(tmp_path / "killed")
    (tmp_path / "killed" / marker).write_text("")  # the kill hit the write of this marker
    assert run(tmp_path / "killed") == clean


def test_a_sharded_run_of_another_fingerprint_is_refused_even_next_to_a_cut_marker(tmp_path):
    sharded_map(_data(), _double, tmp_path, "fp", part_size=4)
    (tmp_path / "part-r00000-of-00001-000000.done").write_text("")
    with pytest.raises(ValueError, match="another run"):
        sharded_map(_data(), _double, tmp_path, "other", part_size=4)
    marker = json.loads((tmp_path / "part-r00000-of-00001-000001.done").read_text())
    assert marker["fingerprint"] == "fp" and marker["start"] == 4 and marker["stop"] == 8
    assert not math.isnan(marker["rows"])
