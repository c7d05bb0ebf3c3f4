"""A ``Trainer`` whose loss applies the LM head at labelled positions only.

With prompt-masked fine-tuning, answer-only rows or copy curricula, many positions carry ``-100``; the stock
causal-LM loss still projects every position through the LM head, which is about half of a step for a small
model with an 8k vocabulary. The loss (:func:`hf_select.token_loss.labelled_positions_loss`) is the same value
with the same gradients, normalised by ``num_items_in_batch`` as the Trainer expects (gradient accumulation safe).
"""

from __future__ import annotations

from transformers import Trainer

from hf_select.token_loss import labelled_positions_loss


class LabelledLossTrainer(Trainer):
    """``transformers.Trainer`` with the LM head and cross-entropy computed at labelled positions only.

    Batches need ``labels`` (HF convention, not shifted). Evaluation (``return_outputs=True``) uses the stock
    loss, since it needs the logits.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return labelled_positions_loss(model, inputs, num_items_in_batch)
