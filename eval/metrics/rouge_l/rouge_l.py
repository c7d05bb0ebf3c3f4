"""ROUGE-L F1 (Lin 2004) over lower-cased word tokens, as an ``evaluate`` module that loads offline.

``use_stemmer=True`` strips common English suffixes first. Grading is :func:`hf_select.text_metrics.rouge_l_f1`
(longest common subsequence, beta = 1), averaged over examples.
"""

import datasets
import evaluate

from hf_select.text_metrics import rouge_l_f1

_DESCRIPTION = "Mean ROUGE-L F1 between predictions and references (longest common word subsequence)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model answers.
    references (list of str): gold answers.
    use_stemmer (bool): strip common suffixes before matching (default False).
Returns:
    rouge_l (float): mean per-example ROUGE-L F1.
Examples:
    >>> metric = evaluate.load("eval/metrics/rouge_l")
    >>> metric.compute(predictions=["the cat sat on the mat"], references=["the cat is on the mat"])
    {'rouge_l': 0.8333333333333334}
"""
_CITATION = "Lin, C.-Y. (2004). ROUGE: A Package for Automatic Evaluation of Summaries."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, use_stemmer=False):
        scores = [rouge_l_f1(p, r, stem=use_stemmer) for p, r in zip(predictions, references)]
        return {"rouge_l": sum(scores) / len(scores) if scores else 0.0}
