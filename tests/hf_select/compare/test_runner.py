"""The compare runner on tiny models, 2 arms x 2 seeds: paired initial weights, equal update tokens, resume after
a kill equals a clean run, finished runs are never repeated, a custom arm registers, the report is written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from figure_checks import embedded_pngs, is_drawn
from transformers import AutoModelForCausalLM, TrainerCallback

from hf_select.compare import ARMS, ArmConfig, ArmSetup, register_arm, run_study
from hf_select.compare.config import parse_arm
from hf_select.fingerprint import weights_checksum

pytestmark = pytest.mark.usefixtures("one_thread")


def _yes_no_task(folder: Path) -> str:
    rows = [{"query": f"Question {i}?\nAnswer:", "choices": ["yes", "no"], "gold": i % 2} for i in range(4)]
    (folder / "yn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "yn.yaml").write_text("name: yn\ntype: multiple_choice\ndata_files:\n  test: yn.jsonl\n")
    return str(folder / "yn.yaml")


def test_paired_weights_equal_tokens_and_report(study_config, tmp_path):
    config = study_config(tasks=[_yes_no_task(tmp_path)])
    results = run_study(config)
    arms = results["arms"]
    assert set(arms) == {"baseline", "random"}
    for seed in config.seeds:
        saved = AutoModelForCausalLM.from_pretrained(config.output_dir + f"/init/seed{seed}")
        checksums = {a["runs"][i]["init_checksum"] for a in arms.values() for i in range(2) if a["seeds"][i] == seed}
        assert checksums == {weights_checksum(saved)}  # every arm of seed s starts from the same bytes
    assert arms["baseline"]["runs"][0]["init_checksum"] != arms["baseline"]["runs"][1]["init_checksum"]
    expected = config.max_steps * config.batch_size * config.seq_length
    assert {r["tokens_seen"] for a in arms.values() for r in a["runs"]} == {expected}  # counted by the Trainer
    comp = arms["random"]["vs_baseline"]["heldout_bpb"]
    diffs = [r["metrics"]["heldout_bpb"] - b["metrics"]["heldout_bpb"]
             for r, b in zip(arms["random"]["runs"], arms["baseline"]["runs"])]  # fmt: skip
    assert comp["difference"] == pytest.approx(sum(diffs) / 2)
    assert comp["verdict"] in ("better", "worse", "undetermined") and comp["detectable_effect"] > 0
    assert arms["baseline"]["cost"]["ratio_to_baseline_training"] == pytest.approx(1.0)
    assert "heldout_bpb/alpha" in arms["baseline"]["metrics"]
    assert 0 <= arms["baseline"]["metrics"]["task/yn/acc"]["mean"] <= 1  # harness task, higher is better
    assert "task/yn/acc" in arms["random"]["vs_baseline"]
    page = Path(config.output_dir, "report.html").read_text()
    pngs = embedded_pngs(page)
    assert len(pngs) == 2 and all(is_drawn(p) for p in pngs)
    assert json.loads(Path(config.output_dir, "results.json").read_text())["arms"]["random"]["vs_baseline"]
    # a finished run is never repeated
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    original = transformers.Trainer.train
    transformers.Trainer.train = refuse
    try:
        again = run_study(config)
    finally:
        transformers.Trainer.train = original
    assert again["arms"]["random"]["vs_baseline"] == results["arms"]["random"]["vs_baseline"]


class KillAt(TrainerCallback):
    """Raise once at ``step`` (after the checkpoint of step 2), as a killed process would stop."""

    armed = True

    def on_step_end(self, args, state, control, **kwargs):
        if KillAt.armed and state.global_step == 3:
            KillAt.armed = False
            raise KeyboardInterrupt("killed")


@dataclass
class KillableConfig(ArmConfig):
    fraction: float = field(default=0.5, metadata={"help": "Share of documents kept (shortest first)."})


def test_custom_arm_and_resume_after_kill_equal_a_clean_run(study_config):
    @register_arm("shortest_killable", KillableConfig)
    def shortest(study, config, seed):
        """Trains on the shortest documents; killed once at step 3."""
        docs = study.pool.sort("doc_chars").select(range(int(config.fraction * len(study.pool))))
        return ArmSetup(train_dataset=study.pack(docs), callbacks=[KillAt()])

    try:
        assert parse_arm({"type": "shortest_killable", "fraction": 0.6})[1].fraction == 0.6
        arms = ["baseline", {"type": "shortest_killable", "name": "short"}]
        KillAt.armed = False
        clean = run_study(study_config("clean", arms=arms, seeds=[0]))
        KillAt.armed = True
        killed = study_config("killed", arms=arms, seeds=[0])
        with pytest.raises(KeyboardInterrupt):
            run_study(killed)
        resumed = run_study(killed)
    finally:
        ARMS.pop("shortest_killable", None)
    a, b = clean["arms"]["short"]["runs"][0], resumed["arms"]["short"]["runs"][0]
    assert b["resumed"] and not a["resumed"]
    assert [s for s, _ in b["loss_curve"]] == [s for s, _ in a["loss_curve"]] == [1, 2, 3, 4]
    assert [x for _, x in b["loss_curve"]] == pytest.approx([x for _, x in a["loss_curve"]], rel=1e-5)
    assert b["metrics"] == pytest.approx(a["metrics"], rel=1e-5)
    assert b["tokens_seen"] == a["tokens_seen"]


def test_bad_configs_fail_clearly(study_config):
    with pytest.raises(ValueError, match="unknown arm type 'nope'"):
        study_config(arms=["baseline", "nope"]).arm_configs()
    with pytest.raises(ValueError, match="has no field"):
        study_config(arms=["baseline", {"type": "random", "fractoin": 0.5}]).arm_configs()
    with pytest.raises(ValueError, match="unique"):
        study_config(arms=["baseline", "random", "random"]).arm_configs()
    with pytest.raises(ValueError, match="baseline arm"):
        study_config(arms=["random"]).arm_configs()
    with pytest.raises(ValueError, match="candidate pool"):
        study_config(dataset_name_or_path=None)


def test_changed_configuration_is_not_mixed_with_old_runs(study_config):
    config = study_config(seeds=[0], arms=["baseline"], max_steps=2)
    run_study(config)
    with pytest.raises(ValueError, match="another configuration"):
        run_study(study_config(seeds=[0], arms=["baseline"], max_steps=2, learning_rate=5e-3))
    assert torch.get_num_threads() == 1


def test_a_cut_result_marker_is_removed_and_its_run_redone(study_config):
    # result.json is the completion marker (hf_select.resume): a kill mid-write must not block the resume
    config = study_config(seeds=[0], arms=["baseline"], max_steps=2)
    first = run_study(config)["arms"]["baseline"]["runs"][0]
    marker = Path(config.output_dir) / "runs" / "baseline" / "seed0" / "result.json"
    marker.write_text(marker.read_text()[:40])
    again = run_study(config)["arms"]["baseline"]["runs"][0]
    assert json.loads(marker.read_text())["fingerprint"] == first["fingerprint"]
    assert again["metrics"] == pytest.approx(first["metrics"], rel=1e-5)
    assert [x for _, x in again["loss_curve"]] == pytest.approx([x for _, x in first["loss_curve"]], rel=1e-5)
    assert not list(marker.parent.glob("*.tmp"))


def test_same_rows_give_the_same_run_as_the_baseline(study_config):
    # a random "subset" of everything is the pool itself: same initial weights and same data order per seed
    # make it the very same run, so any difference between arms comes from the mechanism
    config = study_config(seeds=[1], arms=["baseline", {"type": "random", "fraction": 1.0, "mode": "filter"}])
    arms = run_study(config)["arms"]
    base, same = arms["baseline"]["runs"][0], arms["random"]["runs"][0]
    assert same["loss_curve"] == base["loss_curve"]
    assert same["metrics"] == base["metrics"]


def test_every_trainer_config_gets_the_study_optimiser(study_config, tmp_path):
    """Arms differ in their data only: a method's own config defaults (MeCo's paper beta2 0.95, lr 3e-3, ...) never
    reach a compare run."""
    from types import SimpleNamespace

    from transformers import TrainingArguments

    from hf_select.compare.study import Study
    from hf_select.trainer_ext.meco_config import MeCoConfig
    from hf_select.trainer_ext.opus_config import OPUSConfig
    from hf_select.trainer_ext.slm_config import SLMConfig

    config = study_config()
    shared = Study.training_arguments(SimpleNamespace(config=config, world_size=1), tmp_path / "run", 0)
    keys = ("learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "lr_scheduler_type", "warmup_steps")
    values = {cls.__name__: tuple(getattr(cls(**shared), k) for k in keys)
              for cls in (TrainingArguments, SLMConfig, MeCoConfig, OPUSConfig)}  # fmt: skip
    assert len(set(values.values())) == 1, values
    assert values["MeCoConfig"][3] == config.adam_beta2 == 0.999
