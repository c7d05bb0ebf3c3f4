"""``hf-select compare`` under torchrun: 2 processes (gloo on CPU) give the 1-process results."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

import hf_select.cli
from hf_select.compare import run_study
from hf_select.testing import run_torchrun


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_two_processes_equal_one(study_config, tmp_path):
    one = study_config("one", seeds=[0])
    single = run_study(one)
    config = {k: v for k, v in asdict(study_config("two", seeds=[0])).items()}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run_torchrun(Path(hf_select.cli.__file__), "compare", path, nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]
    double = json.loads((tmp_path / "two" / "results.json").read_text())
    for arm in ("baseline", "random"):
        a, b = single["arms"][arm]["runs"][0], double["arms"][arm]["runs"][0]
        assert b["init_checksum"] == a["init_checksum"]
        assert b["tokens_seen"] == a["tokens_seen"]  # gathered over both processes
        assert [x for _, x in b["loss_curve"]] == pytest.approx([x for _, x in a["loss_curve"]], rel=1e-4)
        assert b["metrics"] == pytest.approx(a["metrics"], rel=1e-4)
