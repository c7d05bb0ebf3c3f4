import pytest

from hf_select.demo.students import heldout_documents, pool_documents
from hf_select.testing import TINY_CORPUS


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
