"""Accuracy: the fraction of predicted indices (or labels) equal to the reference, as lm-eval's ``acc``.

Grading is :func:`hf_select.eval.results.accuracy`, the function the harness uses.
"""

import datasets
import evaluate

from hf_select.eval.results import accuracy

_DESCRIPTION = """Accuracy = mean(prediction == reference). For multiple-choice log-likelihood tasks the prediction
is the argmax of the per-choice log-likelihoods (lm-evaluation-harness ``acc``)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted choice indices.
    references (list of int): gold choice indices.
Returns:
    accuracy (float): in [0, 1].
Examples:
    >>> metric = evaluate.load("eval/metrics/accuracy")
    >>> metric.compute(predictions=[0, 1, 2], references=[0, 1, 1])
    {'accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        return {"accuracy": accuracy(predictions, references)}
