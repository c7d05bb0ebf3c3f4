"""The replication runner: steps computed once, a finished section reused, profiles merged, placeholders
resolved, bad options named, and the results page rendered from every finished section."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from cli_checks import run_cli

from hf_select.compare.stats import paired_comparison
from hf_select.replicate import (
    REPLICATIONS,
    ReplicationConfig,
    ReplicationContext,
    Row,
    Section,
    register_replication,
    render_results,
    run_replication,
)

CALLS: dict[str, int] = {}


@dataclass
class ToyOptions:
    steps: int = 3
    data: str = ""


@pytest.fixture
def toy():
    CALLS.clear()

    @register_replication("toy", ToyOptions)
    def replicate_toy(ctx: ReplicationContext) -> Section:
        def work():
            CALLS["work"] = CALLS.get("work", 0) + 1
            return {"total": sum(range(ctx.options.steps))}

        value = ctx.step("work", work)
        CALLS["run"] = CALLS.get("run", 0) + 1
        path = ctx.figure("curve", b"\x89PNG fake")
        return Section(
            setting=f"steps={ctx.options.steps} data={ctx.options.data} seeds={ctx.study.get('seeds')}",
            rows=[Row("total", "toy", "paper 3", str(value["total"]), "[1, 2]", "better")],
            body=f"![curve]({path})",
        )

    yield
    REPLICATIONS.pop("toy", None)


def _config(tmp_path, **kw):
    base = dict(
        method="toy", title="Toy replication", paper={"figure": "3"}, study={"seeds": [0, 1]},
        options={"steps": 3, "data": "{world}/pretrain"}, profiles={"gpu": {"options": {"steps": 5}, "study": {"seeds": [0, 1, 2]}}},
        output_dir=str(tmp_path / "out"), results=str(tmp_path / "docs" / "results.md"), cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    return ReplicationConfig(**{**base, **kw})


def test_step_once_section_reused_and_profile_rerun(toy, tmp_path):
    first = run_replication(_config(tmp_path))
    assert first["section"]["rows"][0]["ours"] == "3"
    assert first["cpu_seconds"] >= 0 and first["wall_seconds"] > 0
    assert first["section"]["setting"] == f"steps=3 data={tmp_path / 'cache' / 'world'}/pretrain seeds=[0, 1]"
    again = run_replication(_config(tmp_path))
    assert again["fingerprint"] == first["fingerprint"] and CALLS == {"work": 1, "run": 1}
    # the gpu profile changes the settings: the function runs again, its step (same folder) is reused
    gpu = run_replication(_config(tmp_path, profile="gpu"))
    assert gpu["section"]["setting"].startswith("steps=5") and "seeds=[0, 1, 2]" in gpu["section"]["setting"]
    assert CALLS == {"work": 1, "run": 2}
    assert gpu["fingerprint"] != first["fingerprint"] and gpu["wall_seconds"] >= first["wall_seconds"]


def test_results_page(toy, tmp_path):
    config = _config(tmp_path)
    run_replication(config)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "toy.md").write_text("The toy total is 3, as planned.\n")
    page = render_results(config.output_dir, config.results, tmp_path / "notes").read_text()
    assert "| [Toy replication](#toy-replication) | better 1 |" in page
    assert "**Reading (written after the run).** The toy total is 3, as planned." in page
    assert "## Toy replication" in page and "| total | toy | paper 3 | 3 | [1, 2] | better |" in page
    assert "*figure:* 3" in page and "not run yet: attention_influence, slm" in page
    assert (tmp_path / "docs" / "results" / "toy" / "curve.png").read_bytes() == b"\x89PNG fake"
    assert "![curve](results/toy/curve.png)" in page


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"options": {"stepz": 1}}, "have no field(s) ['stepz']"),
        ({"method": "nope"}, "unknown replication 'nope'"),
        ({"profile": "tpu"}, "profile 'tpu' is not among"),
        ({"profiles": {"gpu": {"arms": []}}}, "may hold 'study' and 'options' only"),
    ],
)
def test_bad_settings_are_named(toy, tmp_path, kw, message):
    with pytest.raises(ValueError, match=None) as info:
        run_replication(_config(tmp_path, **kw))
    assert message in str(info.value)


def test_cli_runs_a_file_and_renders_the_page(toy, tmp_path, capsys):
    config = _config(tmp_path)
    path = tmp_path / "toy.yaml"
    fields = {k: getattr(config, k) for k in ("method", "title", "paper", "study", "options", "profiles", "output_dir", "results", "cache_dir")}
    path.write_text(json.dumps(fields))  # JSON is YAML
    code, err = run_cli(["replicate", str(path), "--profile", "gpu"], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "toy" / "section.json").read_text())
    assert record["profile"] == "gpu" and record["section"]["setting"].startswith("steps=5")
    assert "## Toy replication" in (tmp_path / "docs" / "results.md").read_text()
    code, err = run_cli(["replicate", str(path), "--profile", "tpu"], capsys)
    assert code == 2 and "profile 'tpu' is not among this file's profiles ['gpu']" in err


def test_two_methods_share_the_root_but_not_a_folder(toy, tmp_path):
    from hf_select.output_dir import LOCK_NAME, guard_output_dirs

    with guard_output_dirs([_config(tmp_path), _config(tmp_path, method="other")]) as held:
        assert held == [str(tmp_path / "out" / "toy"), str(tmp_path / "out" / "other")]
        assert (tmp_path / "out" / "toy" / LOCK_NAME).exists() and not (tmp_path / "out" / LOCK_NAME).exists()


def test_compare_rows_against_the_paired_statistics(tmp_path):
    base, arm = [3.30, 3.32, 3.31], [3.28, 3.31, 3.29]
    comp = paired_comparison(arm, base, lower_is_better=True)
    results = {
        "baseline": "baseline",
        "arms": {
            "baseline": {"type": "baseline", "metrics": {"heldout_bpb": {"mean": 3.31, "sd": 0.01}}, "vs_baseline": {},
                         "cost": {"ratio_to_baseline_training": 1.0}},
            "slm": {"type": "slm", "metrics": {"heldout_bpb": {"mean": sum(arm) / 3, "sd": 0.015}},
                    "vs_baseline": {"heldout_bpb": comp}, "cost": {"ratio_to_baseline_training": 1.2}},
        },
    }  # fmt: skip
    ctx = ReplicationContext("x", None, {}, {}, "cpu", tmp_path, tmp_path)
    (row,) = ctx.compare_rows(results, paper="lower")
    assert row.arm == "slm" and row.verdict == comp["verdict"]
    assert row.ours.startswith(f"{comp['difference']:+.4f}")
    lo, hi = comp["ci"]
    assert row.interval == f"[{lo:+.4f}, {hi:+.4f}]"
    assert row.detectable == ("" if comp["verdict"] != "undetermined" else f"{comp['detectable_effect']:.4f}")
