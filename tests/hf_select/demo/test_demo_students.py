import pytest
import torch

from hf_select.demo.runner import run_stage
from hf_select.demo.students import fresh_student, heldout_documents, pool_documents
from hf_select.testing import TINY_CORPUS, tiny_tokenizer


@pytest.fixture
def world(fake_world):
    """Tokenizer only (no pretrained model): 40 prose/code documents, 8 held out, 10 upper-cased low-quality."""
    sentences = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()]
    rows = []
    for i in range(40):
        domain = ["prose", "code"][i % 2]
        rows.append(
            {
                "text": " ".join(sentences[i % 5 :] * 2),
                "domain": domain,
                "source": domain,
                "url": f"https://{domain}.org/{i}",
            }
        )
    lowq = [{**r, "text": r["text"].upper()} for r in rows[:10]]
    return fake_world(model=False, pretrain=rows, heldout=8, lowq=lowq)


def test_pool_mixes_clean_and_low_quality_documents(world):
    ctx = world
    s = ctx.student_settings
    pool = pool_documents(ctx)
    assert pool["quality"].count("clean") == 2 * s.pool_documents_per_domain
    assert pool["quality"].count("lowq") == s.lowq_documents and set(pool["domain"]) == {
        "prose",
        "code",
        "lowq",
    }
    assert max(len(t) for t in pool["text"]) <= s.max_chars
    assert (
        all(n >= len(t) for n, t in zip(pool["doc_chars"], pool["text"]))
        and max(pool["doc_chars"]) > s.max_chars
    )
    assert pool["text"] == pool_documents(ctx)["text"]  # seeded: every student sees the same pool
    assert len(heldout_documents(ctx)) > 0


def test_the_same_seed_gives_every_method_the_same_initialisation(world):
    ctx = world
    tok = tiny_tokenizer()
    a, b, c = fresh_student(ctx, tok, 0), fresh_student(ctx, tok, 0), fresh_student(ctx, tok, 1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    assert a.config.vocab_size == len(tok) and a.config.hidden_size == ctx.student_settings.hidden_size


@pytest.mark.slow  # ~20 s: 3 seeds x 2 methods of a tiny student
def test_baseline_and_ai_mix_students_train_per_seed(world, tmp_path):
    ctx = world
    baseline = run_stage(ctx, "student_baseline")
    assert baseline.status == "done", baseline.error
    result = baseline.result
    assert [r["seed"] for r in result["per_seed"]] == list(ctx.student_settings.seeds)
    values = [r["heldout_bits_per_byte"] for r in result["per_seed"]]
    assert result["heldout_bits_per_byte"]["values"] == values and len(set(values)) == 3  # seeds differ
    # the AI mix up-weights the selected documents of the AttentionInfluence stage
    pool = pool_documents(ctx).filter(lambda q: q == "clean", input_columns="quality")
    scored = pool.add_column("ai_score", [float(i) for i in range(len(pool))])
    scored = scored.add_column("ai_selected", [i >= len(pool) - 2 for i in range(len(pool))])
    scored.save_to_disk(str(tmp_path / "scored"))
    ctx.results["attention_influence"] = {"scored_dataset": str(tmp_path / "scored")}
    mix = run_stage(ctx, "student_ai_mix")
    assert mix.status == "done", mix.error
    assert mix.result["upweighted_documents"] == 2 and mix.result["mix_rows"] >= result["pool_rows"]
    assert (ctx.students_dir / "ai_mix" / "model.safetensors").exists()
