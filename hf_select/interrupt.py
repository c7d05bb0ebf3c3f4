"""SIGTERM and SIGINT stop a command cleanly: finished parts are kept, nothing half-written stays behind.

:func:`exit_on_signals` (what ``hf-select`` wraps every command in) turns SIGTERM, like SIGINT, into an
exception, :class:`Interrupted` (a ``KeyboardInterrupt``, so no ``except Exception`` swallows it). It unwinds
through the ``finally`` blocks that remove temporary files, and the command exits with ``128 + signal``: 130
for SIGINT, 143 for SIGTERM (what a shell reports for a process killed by the signal). A scorer that writes
parts with completion markers resumes from the finished ones when re-run.

A worker process started for a job (the datatrove Local executor's pool) calls :func:`die_with_parent`, so a
``kill -9`` of the main process never leaves a worker scoring and writing on its own.

A training run stops at the end of its current optimizer step instead and saves a checkpoint there (see
:class:`hf_select.trainer_ext.resume.ResumableTrainerMixin`, built on :func:`deferred_signals`); a second
signal during that step stops at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
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


# the active exit_on_signals block (None outside one): a signal is delivered again every second until it ends
_BLOCK: list[object | None] = [None]
_BLOCK_LOCK = threading.Lock()
REDELIVER_SECONDS = 1.0


def _redeliver(signum: int, block: object) -> None:
    """Some libraries run code under a bare ``except:`` (``datasets`` hashing a map function, for one), which
    swallows the exception; deliver the signal again until the block is left."""
    main = threading.main_thread().ident

    def again():
        while True:
            time.sleep(REDELIVER_SECONDS)
            with _BLOCK_LOCK:  # never after the block is left
                if _BLOCK[0] is not block:
                    return
                signal.pthread_kill(main, signum)  # to the main thread, which wakes from a blocking call

    threading.Thread(target=again, name="hf_select-signal-redeliver", daemon=True).start()


class _Block:
    def __init__(self):
        self.redelivering = False


def _raise(signum, frame) -> None:
    block = _BLOCK[0]
    if block is not None and not block.redelivering:
        block.redelivering = True
        _redeliver(signum, block)
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
    with _handlers(_raise) as installed:
        outer = _BLOCK[0]
        if installed:
            _BLOCK[0] = _Block()
        try:
            yield
        finally:
            _BLOCK[0] = outer
            with _BLOCK_LOCK:  # wait for a redelivery in flight: it lands while our handler is installed
                pass


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process stays a zombie until its parent reaps it: it is dead all the same
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


_WATCHED: set[int] = set()


def die_with_parent(parent_pid: int, poll: float = 0.5) -> None:
    """End this process (SIGKILL) as soon as process ``parent_pid`` is gone, however it ended.

    On Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` ties this process to its direct parent (for a forkserver pool
    that is the fork server, which exits with the main process); a daemon thread also polls ``parent_pid``
    every ``poll`` seconds, which covers other platforms and parents further up. Calling it again for the same
    ``parent_pid`` does nothing.
    """
    if parent_pid in _WATCHED:
        return
    _WATCHED.add(parent_pid)
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG

    def watch():
        while _alive(parent_pid):
            time.sleep(poll)
        os.kill(os.getpid(), signal.SIGKILL)

    if not _alive(parent_pid):
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="hf_select-parent-watch", daemon=True).start()
