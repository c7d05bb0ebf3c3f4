"""Which parallel set-ups the hf-select trainers accept, and FSDP2 sharding of a frozen side model.

Tested here (``tests/trainer_ext/test_fsdp.py``, 2 processes on CPU/gloo): DDP, and the Trainer's own FSDP
path with FSDP2 (``fsdp=True``, ``fsdp_config={"version": 2, ...}``). FSDP1 and DeepSpeed have not been run with
these trainers, so they are refused rather than run unverified (see docs/scale.md).
"""

from __future__ import annotations

from torch import nn


def check_parallelism(trainer, name: str) -> None:
    """Refuse DeepSpeed and FSDP1 for ``trainer`` (an hf-select ``Trainer`` subclass called ``name``)."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        raise ValueError(
            f"{name} has not been run under DeepSpeed (ZeRO-1/2/3): its selection reads per-token losses, "
            "optimizer state or gathered gradients that DeepSpeed partitions, and none of that is tested. Use "
            "FSDP2 instead (fsdp=True, fsdp_config={'version': 2}) or DDP"
        )
    if getattr(trainer, "is_fsdp_enabled", False):
        version = getattr(trainer.accelerator.state.fsdp_plugin, "fsdp_version", 1)
        if version != 2:
            raise ValueError(
                f"{name} is tested with FSDP2 only (fully_shard); FSDP{version} is untested: set "
                "fsdp_config={'version': 2}"
            )


def shard_frozen_model(trainer, model: nn.Module) -> nn.Module:
    """``fully_shard`` a frozen model (every decoder layer, then the root) like the trainer's own FSDP2 plugin.

    Used for SLM's online reference, so that no rank holds a full replica: each rank keeps ``1 / world_size``
    of its decoder layers' weights, and a forward gathers one decoder layer at a time. The
    plugin's mixed-precision and offload policies and the accelerator's device mesh are reused. The model must
    be in eval mode without gradients; every rank must run its forwards in the same order.
    """
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    from hf_select.model_adapter import get_model_adapter

    if isinstance(model, FSDPModule):
        return model
    plugin = trainer.accelerator.state.fsdp_plugin
    mesh = getattr(trainer.accelerator, "torch_device_mesh", None)
    kwargs = {
        "reshard_after_forward": True,
        "mp_policy": plugin.mixed_precision_policy or MixedPrecisionPolicy(),
        "offload_policy": plugin.cpu_offload or OffloadPolicy(),
    }
    if mesh is not None:
        kwargs["mesh"] = mesh[tuple(trainer.accelerator.parallelism_config.fsdp_dim_names)]
    for layer in get_model_adapter(model).layers:
        fully_shard(layer, **kwargs)
    # the root (embeddings, final norm, LM head) stays gathered after a forward, as FSDP2 recommends for the
    # root: hf-select applies the LM head by hand after the backbone's forward
    fully_shard(model, **{**kwargs, "reshard_after_forward": False})
    return model
