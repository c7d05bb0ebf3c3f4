"""Output folders a command may write: never an input, never shared by two live runs, checked up front.

:func:`guard_output_dirs` is what ``hf-select`` wraps every command in. It reads the command's config
dataclasses and, for every field named in :data:`OUTPUT_FIELDS` (``output_dir``, ``local_dir``):

- refuses a path that is a file, or a folder this process cannot create or write (one line, exit 2);
- refuses an output folder equal to an input dataset folder (:data:`DATASET_INPUT_FIELDS`) or inside one (a
  folder of data files read with ``load_dataset`` would pick up the outputs written inside it as data), or
  equal to an input model folder (:data:`MODEL_INPUT_FIELDS`; a subfolder of a model, e.g. eval results next
  to the weights, is allowed);
- takes an advisory lock on the folder (:class:`OutputLock`): a lock file ``.hf_select.lock`` holding the
  pid, host and command of the run, locked with ``fcntl.flock``. A second run into the same folder is refused
  at once with the holder's pid and host. The kernel releases the lock when its process dies, however it
  dies, so a lock file left by a dead run is simply taken over. The ranks of one ``torchrun`` / ``accelerate``
  job share the folder: they carry the same run id (rendezvous address, port and run id) and join the lock.

Only local paths are checked (``s3://``, ``hf://`` outputs of the datatrove path are left to their filesystem).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

# config fields holding a folder the command writes
OUTPUT_FIELDS = ("output_dir", "local_dir")
# config fields holding a dataset the command reads: an output may be neither the folder nor inside it
DATASET_INPUT_FIELDS = (
    "dataset_name_or_path",
    "cooldown_dataset_name_or_path",
    "heldout_name_or_path",
    "proxy_dataset",
    "values_dataset",
    "source",
)
# config fields holding a model the command reads: an output may not be the folder itself
MODEL_INPUT_FIELDS = (
    "model_name_or_path",
    "ref_model_name_or_path",
    "tokenizer_name_or_path",
    "student_tokenizer",
    "checkpoints",
    "resume_from_checkpoint",
)
LOCK_NAME = ".hf_select.lock"


class OutputDirError(ValueError):
    """An output folder that cannot be used: a file, not writable, an input, or in use by another run."""


def _is_remote(path: str) -> bool:
    return "://" in path


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _values(config, names: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for f in dataclasses.fields(config):
        if f.name not in names:
            continue
        value = getattr(config, f.name)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, os.PathLike)) and str(item).strip() and not _is_remote(str(item)):
                yield f.name, str(item)


def output_dirs(configs) -> list[tuple[str, str]]:
    """``(field name, path)`` of every local output folder set in ``configs`` (dataclass instances).

    A config whose runs write below a shared root (each into its own subfolder) names the folders it writes
    with an ``output_folders()`` method returning such pairs; its fields are then not scanned.
    """
    found = []
    for config in configs:
        if dataclasses.is_dataclass(config):
            own = getattr(config, "output_folders", None)
            pairs = own() if callable(own) else _values(config, OUTPUT_FIELDS)
            found += [pair for pair in pairs if pair not in found]
    return found


def check_not_an_input(output: str, configs, flag: str = "output_dir") -> None:
    """Raise :class:`OutputDirError` when ``output`` is an input of ``configs`` (see the module docstring).

    Only inputs that exist on this machine are compared (a Hub id names no local folder)."""
    target = _resolved(output)
    for config in configs:
        if not dataclasses.is_dataclass(config):
            continue
        for name, value in _values(config, DATASET_INPUT_FIELDS):
            source = _resolved(value)
            if not source.exists():
                continue
            if target == source or (source.is_dir() and source in target.parents):
                where = "is" if target == source else "is inside"
                raise OutputDirError(
                    f"--{flag} {output} {where} the input --{name} {value}: writing there would replace or "
                    "mix into the input; choose another output folder"
                )
        for name, value in _values(config, MODEL_INPUT_FIELDS):
            if _resolved(value) == target and target.exists():
                raise OutputDirError(
                    f"--{flag} {output} is the input --{name} {value}: writing there would replace the "
                    "model; choose another output folder"
                )


def prepare_output_dir(output: str, flag: str = "output_dir") -> bool:
    """Create ``output`` (and its parents) if needed and check it is a writable folder.

    Returns whether the folder was created here. Raises :class:`OutputDirError` with one line otherwise."""
    path = Path(output).expanduser()
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == path else f"is under {parent}, which is a file"
            raise OutputDirError(f"--{flag} {output} {what}, not a folder")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot create --{flag} {output}: {exc.strerror or exc}") from None
    probe = path / f".hf_select_write_test.{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputDirError(f"--{flag} {output} is not writable: {exc.strerror or exc}") from None
    return created


def _run_id() -> str | None:
    """An id shared by the processes of one torchrun / accelerate job, None for a single process."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return None
    parts = [os.environ.get(k, "") for k in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")]
    return "/".join(parts)


class OutputLock:
    """An advisory lock on an output folder (see the module docstring); a context manager.

    Args:
        folder: the output folder (must exist).
        description: what holds the lock, shown to a refused run (e.g. the command line).
        flag: the option naming the folder, for messages.
    """

    def __init__(self, folder: str | os.PathLike, description: str = "", flag: str = "output_dir"):
        self.folder, self.description, self.flag = Path(folder), description, flag
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def _holder(self) -> dict:
        for _ in range(20):  # the holder writes its line right after taking the lock
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                return {}
            if text.strip():
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    pass
            time.sleep(0.05)
        return {}

    def acquire(self) -> OutputLock:
        import fcntl

        run = _run_id()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                holder = self._holder()
                if run is not None and holder.get("run") == run:
                    return self  # another rank of this job holds it
                if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                    return self  # a command run inside another one of this process
                who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
                what = f" ({holder['command']})" if holder.get("command") else ""
                raise OutputDirError(
                    f"--{self.flag} {self.folder} is in use by another run, {who}{what}; wait for it to finish "
                    f"or choose another output folder"
                ) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and flock
                os.close(fd)
                continue
            break
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.description,
            "run": run,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def guard_output_dirs(configs, description: str = "") -> Iterator[list[str]]:
    """Check and lock every output folder of ``configs`` for the duration of a command (module docstring).

    A folder created here that is still empty when the command ends (it failed before writing) is removed.
    Yields the guarded folders."""
    folders = output_dirs(configs)
    for flag, folder in folders:
        check_not_an_input(folder, configs, flag)
    created: list[Path] = []
    with contextlib.ExitStack() as stack:
        for flag, folder in folders:
            if prepare_output_dir(folder, flag):
                created.append(Path(folder).expanduser())
            stack.enter_context(OutputLock(folder, description, flag))
        try:
            yield [folder for _, folder in folders]
        finally:
            stack.close()
            for path in created:
                with contextlib.suppress(OSError):
                    path.rmdir()  # only when empty
