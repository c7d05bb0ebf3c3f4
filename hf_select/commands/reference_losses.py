"""``hf-select reference-losses``: precompute RHO-1 reference losses on packed training rows, resumably
(:func:`hf_select.slm.jobs.reference_losses_to_disk`)."""

from __future__ import annotations

from ..loading import ModelArguments
from ..slm.jobs import ReferenceLossArguments, reference_losses_job

CONFIG_CLASSES = (ModelArguments, ReferenceLossArguments)


def run(model_args: ModelArguments, args: ReferenceLossArguments) -> int:
    reference_losses_job(model_args, args)
    return 0
