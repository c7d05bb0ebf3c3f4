import evaluate
import pytest

from hf_select.eval.metric_modules import available_metrics, load_metric, metrics_path


def test_exact_match_module_known_values():
    metric = load_metric("exact_match")
    out = metric.compute(
        predictions=["1,000", "The Cat!", "71", "so the answer is 72"], references=["1000", "cat", "72", "72"]
    )
    assert out == {"exact_match": pytest.approx(0.75)}


def test_rouge_l_module_known_values_and_stemming():
    metric = evaluate.load(metrics_path("rouge_l"))
    preds = ["the cat sat on the mat", "police killed the gunman"]
    refs = ["the cat is on the mat", "police kill the gunman"]
    assert metric.compute(predictions=preds, references=refs) == {
        "rouge_l": pytest.approx((5 / 6 + 0.75) / 2)
    }
    stemmed = metric.compute(predictions=preds, references=refs, use_stemmer=True)
    assert stemmed["rouge_l"] == pytest.approx((5 / 6 + 1.0) / 2)


def test_combine_and_incremental():
    combined = evaluate.combine([metrics_path("exact_match"), metrics_path("rouge_l")])
    out = combined.compute(predictions=["a b c", "x"], references=["a b c", "y"])
    assert out == {"exact_match": 0.5, "rouge_l": 0.5}
    metric = load_metric("rouge_l")
    metric.add_batch(predictions=["a b"], references=["a c"])
    metric.add(prediction="z", reference="z")
    assert metric.compute()["rouge_l"] == pytest.approx((0.5 + 1) / 2)


def test_unknown_metric_is_clear():
    assert {"exact_match", "rouge_l"} <= set(available_metrics())
    with pytest.raises(ValueError, match="no hf-select metric module 'bleu'"):
        metrics_path("bleu")
