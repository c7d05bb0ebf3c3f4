"""AttentionInfluence's prefilter (exact dedup + datatrove's Gopher filters): a repetitive table is dropped and
prose kept, dropped rows keep a null score and their reason, kept rows score exactly as without the prefilter,
and the Dataset.map and datatrove paths drop the same documents."""

import math

import pytest

pytest.importorskip("datatrove")
pytest.importorskip("spacy")

from datasets import Dataset

from hf_select.attention_influence import AttentionInfluence, AttentionInfluenceConfig, score_dataset
from hf_select.attention_influence.prefilter import REASON_COLUMN, filter_reasons, gopher_filters
from hf_select.testing import tiny_model, tiny_tokenizer

HEADS = [(1, 0), (1, 2)]
# the demo's highest-scored "code" document before filtering: a table of Unicode code points
TABLE = ",\n".join(
    ", ".join(f"0x{0x1D579 + 4 * row + col:x}:'{chr(97 + (4 * row + col) % 26)}'" for col in range(4))
    for row in range(30)
)
PROSE = (
    "The river was wide and slow where it passed the old mill, and the children of the village liked to sit on "
    "the stone wall to watch the boats. In the spring the water rose high enough to cover the lowest steps, so "
    "the miller kept a careful record of each flood in a book that he had inherited from his father. Visitors "
    "who came to see the wheel often asked to read it, and he would show them the pages with some pride."
)
PROSE_2 = (
    "A good recipe for bread needs only flour, water, salt and yeast, but the baker must learn to judge the "
    "dough by touch. When it is ready, it springs back slowly under a finger and smells faintly of beer. Most "
    "beginners add too much flour because the dough feels sticky at first; with patience and a little practice "
    "they find that a wetter dough gives a lighter loaf with a crisp crust and an open crumb."
)


def test_reasons_table_dropped_prose_kept_duplicate_flagged():
    texts = [PROSE, TABLE, PROSE_2, PROSE]
    for prefilter in ("repetition", "gopher"):
        reasons = filter_reasons(texts, prefilter)
        assert reasons[0] == "" and reasons[2] == "", reasons
        assert reasons[1] != "", reasons
        assert reasons[3] == "duplicate"
    assert filter_reasons(texts, "repetition")[1].startswith("repetition:")
    assert filter_reasons(texts, "none") == ["", "", "", ""]


def test_options_override_datatrove_thresholds_and_unknown_is_refused():
    (_, rep), (_, quality) = gopher_filters("gopher", '{"dup_line_frac": 0.5, "min_doc_words": 20}')
    assert rep.dup_line_frac == 0.5 and quality.min_doc_words == 20
    assert rep.dup_para_frac == 0.3  # datatrove's default kept
    # loose enough thresholds keep the table: the override reaches the filter
    loose = {"top_n_grams": [], "dup_n_grams": [], "dup_line_frac": None, "dup_line_char_frac": None}
    assert filter_reasons([TABLE], "repetition", loose) == [""]
    with pytest.raises(ValueError, match="not arguments"):
        gopher_filters("repetition", {"min_doc_words": 20})  # a quality option without the quality filter
    with pytest.raises(ValueError, match="prefilter must be one of"):
        AttentionInfluenceConfig(heads=["1:0"], prefilter="strict")
    with pytest.raises(ValueError, match="prefilter is 'none'"):
        AttentionInfluenceConfig(heads=["1:0"], prefilter_options='{"dup_line_frac": 0.5}')


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return tiny_model("llama").eval(), tiny_tokenizer()


def _docs():
    return Dataset.from_dict({"text": [PROSE, TABLE, PROSE_2, PROSE], "id": ["a", "b", "c", "d"]})


def test_map_path_null_scores_with_reasons_and_exact_kept_scores(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    plain = score_dataset(_docs(), AttentionInfluence(model, tokenizer, HEADS, max_length=32, min_tokens=1))
    config = AttentionInfluenceConfig(heads=HEADS, max_length=32, min_tokens=1, prefilter="gopher")
    filtered = score_dataset(_docs(), AttentionInfluence(model, tokenizer, config=config))
    reasons = filtered[REASON_COLUMN]
    assert reasons[0] == "" and reasons[2] == "" and reasons[1] and reasons[3] == "duplicate"
    for i in (1, 3):
        assert math.isnan(filtered["ai_score"][i]) and filtered["ai_num_tokens"][i] == 0
        assert filtered["text"][i] == _docs()["text"][i]  # the row is kept, never lost
    for i in (0, 2):  # kept documents: the same losses as without the prefilter (batch composition differs)
        for column in ("ai_loss_base", "ai_loss_ref"):
            assert filtered[column][i] == pytest.approx(plain[column][i], rel=1e-5)
        assert filtered["ai_num_tokens"][i] == plain["ai_num_tokens"][i]
    with pytest.raises(Exception, match=REASON_COLUMN):  # Dataset.map without prefilter_dataset: refused
        _docs().map(AttentionInfluence(model, tokenizer, config=config), batched=True)


def test_datatrove_path_drops_the_same_documents(model_and_tokenizer, tmp_path):
    import pandas as pd

    from hf_select.datatrove import PrefilterFlagger, attention_influence_pipeline, make_executor

    model, tokenizer = model_and_tokenizer
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    inputs = tmp_path / "in"
    inputs.mkdir()
    _docs().to_json(inputs / "docs.jsonl")
    config = AttentionInfluenceConfig(heads=HEADS, max_length=32, min_tokens=1, prefilter="gopher")
    pipeline = attention_influence_pipeline(str(inputs), str(tmp_path / "out"), str(tmp_path / "model"), config=config)
    flaggers = [step for step in pipeline if isinstance(step, PrefilterFlagger)]
    assert [f.label for f in flaggers] == ["duplicate", "repetition", "quality"]
    make_executor(pipeline, "local", tasks=1, workers=1, logging_dir=str(tmp_path / "logs")).run()
    out = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "out").glob("*.parquet")))
    out = out.set_index("id").loc[["a", "b", "c", "d"]]
    mapped = score_dataset(_docs(), AttentionInfluence(model, tokenizer, config=config))
    assert list(out[REASON_COLUMN]) == mapped[REASON_COLUMN]
    for column in ("ai_score", "ai_loss_base", "ai_loss_ref"):
        for i, value in enumerate(out[column]):
            expected = mapped[column][i]
            assert (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected, rel=1e-4, abs=1e-9)
