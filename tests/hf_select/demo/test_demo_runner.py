import json
import sys
import types

from hf_select.demo.context import DemoContext
from hf_select.demo.runner import run_demo


def test_missing_stage_is_pending_and_finished_stage_reused(tmp_path, monkeypatch):
    calls = []
    module = types.ModuleType("hf_select.demo.stage_fake_done")
    module.TITLE = "Fake"
    module.run = lambda ctx: calls.append(1) or {"value": 3}
    monkeypatch.setitem(sys.modules, "hf_select.demo.stage_fake_done", module)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name in sys.modules else None)
    ctx = DemoContext(tmp_path / "out", tmp_path / "cache")
    outcomes = run_demo(ctx, ("fake_done", "not_built_yet"))
    assert [o.status for o in outcomes] == ["done", "pending"]
    assert json.loads((tmp_path / "out/stages/fake_done.json").read_text())["value"] == 3
    report = (tmp_path / "out/report.html").read_text()
    assert "Pending" in report and "not installed" in report
    outcomes = run_demo(DemoContext(tmp_path / "out", tmp_path / "cache"), ("fake_done",))
    assert outcomes[0].status == "reused" and calls == [1]
    # results of a quick run (or another seed) are not reused by a full run: it runs again
    outcomes = run_demo(DemoContext(tmp_path / "out", tmp_path / "cache", quick=True), ("fake_done",))
    assert outcomes[0].status == "done" and calls == [1, 1]
    outcomes = run_demo(DemoContext(tmp_path / "out", tmp_path / "cache", quick=True), ("fake_done",))
    assert outcomes[0].status == "reused" and calls == [1, 1]
    outcomes = run_demo(DemoContext(tmp_path / "out", tmp_path / "cache", seed=1), ("fake_done",))
    assert outcomes[0].status == "done" and calls == [1, 1, 1]


def test_failed_stage_is_reported_and_later_stages_still_run(tmp_path, monkeypatch):
    bad = types.ModuleType("hf_select.demo.stage_bad")
    bad.run = lambda ctx: 1 / 0
    good = types.ModuleType("hf_select.demo.stage_good")
    good.run = lambda ctx: {"ok": True}
    monkeypatch.setitem(sys.modules, "hf_select.demo.stage_bad", bad)
    monkeypatch.setitem(sys.modules, "hf_select.demo.stage_good", good)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name in sys.modules else None)
    outcomes = run_demo(DemoContext(tmp_path / "o", tmp_path / "c"), ("bad", "good"))
    assert [o.status for o in outcomes] == ["failed", "done"]
    assert "ZeroDivisionError" in (tmp_path / "o/report.html").read_text()
