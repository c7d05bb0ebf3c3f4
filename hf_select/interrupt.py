"""SIGTERM and SIGINT stop a command cleanly: finished parts are kept, nothing half-written stays behind.

:func:`exit_on_signals` (what ``hf-select`` wraps every command in) turns SIGTERM, like SIGINT, into an
exception, :class:`Interrupted` (a ``KeyboardInterrupt``, so no ``except Exception`` swallows it). It unwinds
through the ``finally`` blocks that remove temporary files, and the command exits with ``128 + signal``: 130
for SIGINT, 143 for SIGTERM (what a shell reports for a process killed by the signal). A scorer that writes
parts with completion markers resumes from the finished ones when re-run.

A training run stops at the end of its current optimizer step instead and saves a checkpoint there (see
:class:`hf_select.trainer_ext.resume.ResumableTrainerMixin`, built on :func:`deferred_signals`); a second
signal during that step stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGINT or SIGTERM.

    Attributes:
        signum: the signal number.
        exit_code: ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, message: str | None = None):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name
        super().__init__(
            message or f"interrupted by {name}; finished parts are kept, re-run the same command to resume"
        )


def _raise(signum, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _handlers(handler: Callable) -> Iterator[bool]:
    if threading.current_thread() is not threading.main_thread():
        yield False  # signal handlers belong to the main thread; elsewhere nothing changes
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, handler)
    try:
        yield True
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """Raise :class:`Interrupted` in the main thread on SIGINT or SIGTERM while the block runs."""
    with _handlers(_raise):
        yield


class DeferredSignal:
    """The first SIGINT / SIGTERM received inside :func:`deferred_signals` (``signum`` is None until then)."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def deferred_signals() -> Iterator[DeferredSignal]:
    """Record the first SIGINT / SIGTERM instead of raising, so that the caller can stop at a safe point
    (check the yielded :class:`DeferredSignal`); a second signal raises :class:`Interrupted` at once."""
    received = DeferredSignal()

    def handler(signum, frame):
        if received:
            raise Interrupted(signum)
        received.signum = signum

    with _handlers(handler):
        yield received
