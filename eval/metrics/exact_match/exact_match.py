"""Exact match with number normalisation, as an ``evaluate`` module (offline: ``evaluate.load(<this folder>)``).

Numbers compare by value ("1,000.0" == "1000", "$12" == "12"); when the reference is a number the last number of
the prediction also counts (GSM8K-style). Other answers compare after SQuAD-style normalisation (lower case, no
punctuation or articles). Grading is :func:`hf_select.text_metrics.exact_match`.
"""

import datasets
import evaluate

from hf_select.text_metrics import exact_match

_DESCRIPTION = "Share of predictions that equal their reference after number / text normalisation."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model answers.
    references (list of str): gold answers.
Returns:
    exact_match (float): mean of the per-example 0/1 matches.
Examples:
    >>> metric = evaluate.load("eval/metrics/exact_match")
    >>> metric.compute(predictions=["1,000", "The Cat"], references=["1000", "dog"])
    {'exact_match': 0.5}
"""
_CITATION = "hf-select (Data Whisperer, arXiv 2505.12212, grades numeric answers by exact match)"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        scores = [exact_match(p, r) for p, r in zip(predictions, references)]
        return {"exact_match": sum(scores) / len(scores) if scores else 0.0}
