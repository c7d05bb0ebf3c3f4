"""acc and acc_norm of multiple-choice items from per-choice log-likelihoods, as lm-evaluation-harness 0.4.13.

acc = argmax(loglikelihood) == gold; acc_norm = argmax(loglikelihood / character length of the choice) == gold
(the first maximum wins ties, as ``numpy.argmax``).
"""

import datasets
import evaluate
import numpy as np

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
        acc, acc_norm = [], []
        for lls, gold, item_choices in zip(predictions, references, choices):
            lls = np.asarray(lls, dtype=np.float64)
            if len(lls) != len(item_choices) or len(lls) == 0:
                raise ValueError(f"{len(lls)} log-likelihoods for {len(item_choices)} choices")
            lengths = np.asarray([float(len(c)) for c in item_choices])
            acc.append(float(int(np.argmax(lls)) == gold))
            acc_norm.append(float(int(np.argmax(lls / lengths)) == gold))
        return {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(acc_norm))}
