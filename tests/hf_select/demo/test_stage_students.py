"""The students stage is one compare study: every arm over every seed, paired by seed, equal update tokens; the
first seed's models land where the evaluation stage finds them; the first screen reads the study."""

from __future__ import annotations

import json

import pytest

from hf_select.demo.runner import run_stage
from hf_select.demo.students import pool_documents
from hf_select.demo.summary import summary_rows
from hf_select.testing import TINY_CORPUS


@pytest.fixture
def world(fake_world):
    sentences = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()]
    rows = [
        {"text": " ".join(sentences[i % 5 :] * 3), "domain": ["prose", "code"][i % 2], "source": "s",
         "url": f"https://{['prose', 'code'][i % 2]}.org/{i}"}
        for i in range(40)
    ]  # fmt: skip
    lowq = [{**r, "text": r["text"].upper()} for r in rows[:10]]
    return fake_world(model=True, model_overrides={"vocab_size": 300}, pretrain=rows, heldout=8, lowq=lowq)


@pytest.mark.slow  # ~1 min: 6 arms x 3 seeds of a tiny student (quick mode)
@pytest.mark.usefixtures("one_thread")
def test_students_stage_runs_every_arm_as_one_compare_study(world, tmp_path):
    ctx = world
    pool = pool_documents(ctx).filter(lambda q: q == "clean", input_columns="quality")
    scored = pool.add_column("ai_score", [float(i) for i in range(len(pool))])
    # reference losses of the AttentionInfluence stage's base pass for half the clean documents
    from hf_select.demo.stage_pretrained_model import load_pretrained
    from hf_select.demo.students import load_tokenizer
    from hf_select.slm.cross_tokenizer import cross_tokenizer_reference_losses

    model, tokenizer = load_pretrained(ctx)
    half = len(pool) // 2
    given = cross_tokenizer_reference_losses(pool["text"][:half], model, tokenizer, load_tokenizer(ctx), max_length=1024)
    scored = scored.add_column("ref_loss", [d["ref_loss"] for d in given] + [None] * (len(pool) - half))
    scored.save_to_disk(str(tmp_path / "scored"))
    ctx.results["attention_influence"] = {"scored_dataset": str(tmp_path / "scored")}
    outcome = run_stage(ctx, "students")
    assert outcome.status == "done", outcome.error
    result = outcome.result
    assert set(result["arms"]) == {"baseline", "attention_influence", "random", "slm", "meco", "opus"}
    s = ctx.student_settings
    compare = json.loads((ctx.output_dir / "stages" / "students" / "compare" / "results.json").read_text())
    for name, arm in compare["arms"].items():
        assert [r["seed"] for r in arm["runs"]] == list(s.seeds)
        assert {r["tokens_seen"] for r in arm["runs"]} == {s.max_steps * s.batch_size * s.seq_length}, name
        assert (ctx.students_dir / name / "model.safetensors").exists()
    for i in range(len(s.seeds)):
        assert len({arm["runs"][i]["init_checksum"] for arm in compare["arms"].values()}) == 1
    assert compare["arms"]["slm"]["runs"][0]["info"]["documents_with_given_reference_losses"] == half
    ai, rnd = compare["arms"]["attention_influence"]["runs"][0], compare["arms"]["random"]["runs"][0]
    assert ai["info"]["selected_domains"] == rnd["info"]["selected_domains"]  # same size per domain
    rows = {}
    for row in summary_rows({"students": result}):
        rows.setdefault(row.method, row)  # MeCo's second row compares its own URL to an unrelated one
    for method in ("AttentionInfluence mix", "RHO-1 SLM", "MeCo", "OPUS", "Random mix (control)"):
        assert rows[method].verdict.split(" -- ")[0] in ("better", "worse", "undetermined"), method
        assert "cost x" in rows[method].figure
