"""One forward of SmolLM2 for two methods: AttentionInfluence's base (unmasked) pass also gives RHO-1's reference
losses.

The main job runs SmolLM2 over the students' pool twice otherwise: the AttentionInfluence stage's base pass
(arXiv 2505.07293, ``L_base``) and the SLM arm's reference pass (arXiv 2404.07965), the same model over the same
documents. :class:`ScoresWithReferenceLosses` scores a batch with AttentionInfluence and, from the base pass's
hidden states and per-token losses (:meth:`~hf_select.attention_influence.AttentionInfluence.score_token_ids`'s
``base_pass_hook``), projects each document's reference losses onto the students' tokenizer
(:class:`~hf_select.slm.cross_tokenizer.CrossTokenizerProjection`): the same values
:func:`~hf_select.slm.cross_tokenizer.cross_tokenizer_reference_losses` computes with a pass of its own
(``tests/hf_select/demo/test_shared_pass.py``).

That needs both passes to read the same tokens: the scorer encodes with ``add_bos`` (BOS + tokens, the reference
encoding without its EOS; the EOS loss comes from the last hidden state), and a document counts only when the
scorer read it whole in one chunk (at most ``max_length`` tokens). Documents it did not read whole get ``None``:
the SLM arm computes those itself (``reference_losses_column``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..fingerprint import fingerprint


class ScoresWithReferenceLosses:
    """``Dataset.map(batched=True)`` function: the AttentionInfluence columns plus ``ref_loss``, the document's
    reference losses on the student's encoding BOS + tokens + EOS, or ``None`` (see the module docstring).

    Args:
        scorer: an :class:`~hf_select.attention_influence.AttentionInfluence` with ``add_bos``; its model is
            the reference model.
        student_tokenizer: the tokenizer the reference losses are projected onto.
        split: the projection's split rule (``exact``, as the SLM arm uses, or ``uniform``).
    """

    def __init__(self, scorer, student_tokenizer, split: str = "exact"):
        from ..slm.cross_tokenizer import CrossTokenizerProjection

        if not scorer.config.add_bos:
            raise ValueError("the shared pass needs the scorer's add_bos encoding (that of the reference pass)")
        self.scorer = scorer
        self.student_tokenizer = student_tokenizer
        self.projection = CrossTokenizerProjection(scorer.model, scorer.tokenizer, student_tokenizer, split)

    def fingerprint(self, dataset=None) -> str:
        """A ``new_fingerprint`` for ``Dataset.map``: the scorer's, the student tokenizer and the split."""
        vocab = sorted(self.student_tokenizer.get_vocab().items())
        return fingerprint("ai+reference_losses/v1", self.scorer.fingerprint(dataset), vocab, self.projection.split)

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        texts = list(batch[self.scorer.text_column])
        ref_ids, ref_offsets = self.projection.encode_reference(texts)
        found: dict[int, list[float]] = {}
        has_eos = int(self.scorer.tokenizer.eos_token_id is not None)

        def hook(doc, start, ids, hidden, losses, mask):
            reference = ref_ids[doc][: len(ref_ids[doc]) - has_eos]  # the scorer's encoding has no EOS
            whole = start == 0 and list(ids) == reference
            if not whole:  # chunked, or another encoding: the SLM arm scores it itself
                return
            token_losses = torch.where(mask, losses, math.nan).double().cpu().numpy()
            offsets = ref_offsets[doc][: len(ids)]
            found[doc] = self.projection.project(texts[doc], ids, offsets, token_losses, hidden, ends_document=True)[
                "ref_loss"
            ]

        out = self.scorer(batch, base_pass_hook=hook)
        out["ref_loss"] = [found.get(i) for i in range(len(texts))]
        return out
