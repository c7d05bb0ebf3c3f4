"""acc and acc_norm of multiple-choice items from per-choice log-likelihoods, as lm-evaluation-harness 0.4.13.

acc = argmax(loglikelihood) == gold; acc_norm = argmax(loglikelihood / character length of the choice) == gold
(the first maximum wins ties, as ``numpy.argmax``). Grading is
:func:`hf_select.eval.results.multiple_choice_metrics`, the function the harness aggregates with.
"""

import datasets
import evaluate
import numpy as np

from hf_select.eval.results import multiple_choice_metrics

_DESCRIPTION = """acc / acc_norm of multiple-choice items: acc_norm divides each choice's summed log-likelihood by
the number of characters of the choice (lm-evaluation-harness ``acc_norm``)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): summed log-likelihood of each choice, per item.
    references (list of int): gold choice index per item.
    choices (list of list of str): the choice strings per item (their character lengths normalise).
Returns:
    acc (float), acc_norm (float): in [0, 1].
Examples:
    >>> metric = evaluate.load("eval/metrics/acc_norm")
    >>> metric.compute(predictions=[[-2.0, -3.0]], references=[1], choices=[["ab", "abcdefgh"]])
    {'acc': 0.0, 'acc_norm': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AccNorm(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                    "choices": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, choices):
        if len(predictions) == 0:
            raise ValueError("acc_norm of an empty list is undefined")
        items = [
            multiple_choice_metrics(lls, item_choices, gold)
            for lls, gold, item_choices in zip(predictions, references, choices)
        ]
        return {metric: float(np.mean([item[metric] for item in items])) for metric in ("acc", "acc_norm")}
