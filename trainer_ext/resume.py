"""One resume mechanism for the hf-select trainers (SLM, MeCo, OPUS): checkpoints in, signals out.

:class:`ResumableTrainerMixin` goes before ``transformers.Trainer`` in a trainer's bases. Its ``train``:

- resumes from ``resume_from_checkpoint`` (the argument, else ``args.resume_from_checkpoint``, which
  ``TrainingArguments`` documents as "not directly used by Trainer": here it is, so ``--resume_from_checkpoint``
  on the command line resumes every trainer the same way). A path resumes from that checkpoint; ``True``
  (or the strings ``true`` / ``last``) from the last *complete* checkpoint in ``output_dir`` -- one with its
  ``trainer_state.json``, which the Trainer writes last, so a checkpoint cut by a kill is skipped with a
  warning. A path that does not exist, or a folder that is not a Trainer checkpoint, is an error naming it.
  The Trainer restores model, optimizer, scheduler, RNG states and the data position, so a resumed run gives
  the same weights as an uninterrupted one (the hf-select trainers draw their own randomness from seeded
  generators keyed by the step).
- stops cleanly on SIGTERM / SIGINT: the first signal ends the run at the end of the current optimizer step
  with a checkpoint saved there (on every rank together under torch.distributed), then raises
  :class:`hf_select.interrupt.Interrupted` (exit code 143 / 130 from ``hf-select``); a second signal stops at
  once. Re-run with ``--resume_from_checkpoint True`` to continue.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from hf_select.interrupt import Interrupted, deferred_signals

logger = logging.get_logger(__name__)

TRAINER_STATE = "trainer_state.json"
_LAST = ("true", "last")
_NONE = ("", "false", "none")


def resolve_checkpoint(value: str | bool | None, output_dir: str | os.PathLike | None) -> str | None:
    """The checkpoint folder to resume from, or None to start fresh (see the module docstring).

    Raises:
        FileNotFoundError: a path that does not exist, or ``True`` with no complete checkpoint in
            ``output_dir``.
        ValueError: a folder that is not a Trainer checkpoint.
    """
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in _NONE):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in _LAST):
        folder = Path(output_dir or ".")
        steps = []
        if folder.is_dir():
            for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
                tail = path.name.rsplit("-", 1)[1]
                if path.is_dir() and tail.isdigit():
                    steps.append((int(tail), path))
        for _, path in sorted(steps, reverse=True):
            if (path / TRAINER_STATE).is_file():
                return str(path)
            logger.warning(f"{path} has no {TRAINER_STATE} (a save cut short); resuming from an earlier one")
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value}: no complete {PREFIX_CHECKPOINT_DIR}-* folder in {folder}"
        )
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--resume_from_checkpoint {value} does not exist")
    if not (path / TRAINER_STATE).is_file():
        raise ValueError(
            f"--resume_from_checkpoint {value} is not a Trainer checkpoint (no {TRAINER_STATE}); pass a "
            f"{PREFIX_CHECKPOINT_DIR}-N folder of an earlier run"
        )
    return str(path)


class _StopOnSignal(TrainerCallback):
    """Ends training with a checkpoint at the end of the optimizer step during which a signal arrived."""

    def __init__(self, received, device):
        self.received, self.device = received, device

    def _anyone(self) -> bool:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return bool(self.received)
        import torch

        flag = torch.tensor([1.0 if self.received else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._anyone():
            control.should_save = True
            control.should_training_stop = True
        return control


class ResumableTrainerMixin:
    """``train`` that honours ``args.resume_from_checkpoint`` and stops cleanly on signals (module docs)."""

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        if resume_from_checkpoint is None:
            resume_from_checkpoint = self.args.resume_from_checkpoint
        checkpoint = resolve_checkpoint(resume_from_checkpoint, self.args.output_dir)
        if checkpoint is not None:
            logger.warning(f"resuming from {checkpoint}")
        with deferred_signals() as received:
            callback = _StopOnSignal(received, self.args.device)
            self.add_callback(callback)
            try:
                output = super().train(checkpoint, *args, **kwargs)
            finally:
                self.remove_callback(callback)
        if received:
            step = self.state.global_step
            saved = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"
            raise Interrupted(
                received.signum,
                f"training stopped by {_name(received.signum)} at step {step}, checkpoint {saved}; re-run "
                "with --resume_from_checkpoint True to continue",
            )
        return output


def _name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name
