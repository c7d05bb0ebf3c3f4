"""``hf-select compare``: --help documents every field, --plan sizes a study, a bad config is one error line."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict

import pytest
import yaml

from hf_select.cli import main
from hf_select.compare import StudyConfig, arm_types


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(StudyConfig):
        assert f"--{f.name}" in text and f.metadata.get("help"), f.name
    for kind, arm in arm_types().items():
        assert f"{kind}: " in text
        for f in dataclasses.fields(arm.config_class):
            assert f.name == "name" or f"    {f.name} (default" in text, (kind, f.name)
            assert f.metadata.get("help"), (kind, f.name)


def _write(study_config, tmp_path, **overrides):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(asdict(study_config(**overrides))))
    return path


@pytest.mark.usefixtures("one_thread")
def test_plan_prints_seeds_tokens_and_cost(study_config, tmp_path, capsys):
    path = _write(study_config, tmp_path, max_steps=4, plan_points=2)
    assert main(["compare", "--plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "update tokens" in out and "seeds" in out
    plan = json.loads((tmp_path / "study" / "plan" / "plan.json").read_text())
    assert [r["steps"] for r in plan["budgets"]] == [2, 4]
    assert [r["update_tokens"] for r in plan["budgets"]] == [256, 512]
    last = plan["budgets"][-1]
    assert last["seeds_needed"] is None or last["seeds_needed"] >= 2
    assert last["paired_sd_estimate"] == pytest.approx(2**0.5 * last["seed_sd"])


def test_bad_config_is_one_line(study_config, tmp_path, capsys):
    path = _write(study_config, tmp_path, arms=["baseline", {"type": "random", "fractoin": 0.5}])
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hf-select compare: error: arm 'random' has no field(s) ['fractoin']")
    path.write_text("arms: [baseline]\nbogus: 1\n")
    assert main(["compare", "--plan", str(path)]) == 2
    assert "unknown option(s) ['bogus']" in capsys.readouterr().err
