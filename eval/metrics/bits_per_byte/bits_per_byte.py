"""Bits per byte: summed negative log-likelihood (nats) / ln 2 / UTF-8 bytes, pooled over items.

Used for the gold continuation of a task (sum of -log p over its tokens) and for held-out text (perplexity
tasks); comparable across tokenizers, unlike token perplexity. Computed by
:func:`hf_select.eval.results.bits_per_byte`, the function the harness uses.
"""

import datasets
import evaluate

from hf_select.eval.results import bits_per_byte

_DESCRIPTION = """Bits per byte = sum(nll) / ln(2) / sum(num_bytes), with nll the summed negative log-likelihood in
nats of each text and num_bytes its UTF-8 length (lm-evaluation-harness ``bits_per_byte``)."""

_KWARGS_DESCRIPTION = """
Args:
    nll (list of float): summed negative log-likelihood (nats) of each scored text.
    num_bytes (list of int): UTF-8 bytes of each scored text.
Returns:
    bits_per_byte (float)
Examples:
    >>> metric = evaluate.load("eval/metrics/bits_per_byte")
    >>> metric.compute(nll=[math.log(2) * 8], num_bytes=[4])
    {'bits_per_byte': 2.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BitsPerByte(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"nll": datasets.Value("float64"), "num_bytes": datasets.Value("int64")}
            ),
        )

    def _compute(self, nll, num_bytes):
        return {"bits_per_byte": bits_per_byte(list(nll), list(num_bytes))}
