"""One resume mechanism for every long job: atomic files, completion markers, refusal of a mismatched run.

A long job (sharded scoring, datatrove chunks, Data Whisperer groups, demo stages) writes its results in units
(a part, a chunk, a group log, a stage). Each unit is

* written atomically: to a temporary name in the same folder, flushed to disk, then renamed
  (:func:`write_atomic`), so a kill leaves either the whole unit or (after a SIGKILL) an orphan temporary
  file, which the next run removes (:meth:`ResumeFolder.remove_orphans`);
* completed by a JSON marker, written atomically too, that records the run's ``fingerprint`` (an id of the
  data, the method's config and the weights) and what the unit covers (its rows, its ids);
* reused by a re-run only when its marker carries the same fingerprint: a marker of another run is refused
  with a message, never mixed in silently. A marker that cannot be read (a kill during the write of a
  marker written before writes were atomic, a truncated disk) is removed with a warning and its unit is
  done again: it never blocks a resume.

A whole run may also claim its folder (:meth:`ResumeFolder.claim`): the claim records the fingerprint and the
settings it was built from, so a run with other settings into the same folder is refused with the settings
that differ, before it reuses or mixes anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers.utils import logging

logger = logging.get_logger(__name__)

__all__ = ["ResumeFolder", "read_marker", "write_atomic", "write_marker"]

TMP_SUFFIX = ".tmp"


def write_atomic(path: str | os.PathLike, data: str | bytes | Callable[[Path], None]) -> Path:
    """Write ``data`` (text, bytes, or a function that writes the file it is given) to ``path`` atomically.

    The data goes to ``<path>.tmp`` in the same folder, is flushed to disk and renamed over ``path``, so readers
    see the old file or the whole new one, never a part of it.
    """
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # an error or a signal mid-write leaves no temporary file (a SIGKILL does: orphan)
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_marker(path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write the JSON marker ``meta`` to ``path`` atomically (:func:`write_atomic`)."""
    return write_atomic(path, json.dumps(meta, default=str))


def read_marker(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object of the marker at ``path``; None when it does not exist or cannot be read.

    An unreadable marker (empty, cut, not an object) is removed with a warning: the unit it stood for is done
    again instead of blocking every resume.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        meta = None
    if isinstance(meta, dict):
        return meta
    logger.warning(f"{path} is not a complete marker (a kill during its write?); removed, its work is redone")
    path.unlink(missing_ok=True)
    return None


def _differences(found: dict[str, Any], wanted: dict[str, Any]) -> str:
    keys = sorted(k for k in {*found, *wanted} if found.get(k) != wanted.get(k))
    return ", ".join(f"{k}: {found.get(k)!r} -> {wanted.get(k)!r}" for k in keys)


class ResumeFolder:
    """A folder of resumable units of one run (see the module docstring).

    Args:
        folder: the folder (created).
        fingerprint: the run's id; every marker records it and a marker of another fingerprint is refused.
        marker_suffix: the file ending of the unit markers (``.done``; a unit that is its own marker, such as a
            JSON chunk, uses its data suffix).
        what: how the refusal message names the folder's content (``results``, ``checkpoints`` ...).
    """

    def __init__(
        self, folder: str | os.PathLike, fingerprint: str, marker_suffix: str = ".done", what: str = "results"
    ):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.marker_suffix = marker_suffix
        self.what = what

    def marker(self, name: str) -> Path:
        return self.folder / f"{name}{self.marker_suffix}"

    def remove_orphans(self, pattern: str = "*") -> int:
        """Remove the temporary files a kill left behind (those matching ``pattern + '.tmp'``)."""
        removed = 0
        for orphan in self.folder.glob(f"{pattern}{TMP_SUFFIX}"):
            orphan.unlink(missing_ok=True)
            removed += 1
        return removed

    def _refuse(self, path: Path, found: Any, detail: str = "") -> None:
        raise ValueError(
            f"{path} holds {self.what} of another run (fingerprint {found} != {self.fingerprint}"
            f"{': ' + detail if detail else ''}); use a new output folder or delete it"
        )

    def check(self, pattern: str = "*") -> None:
        """Refuse the run if any readable marker matching ``pattern`` was written with another fingerprint."""
        for path in sorted(self.folder.glob(f"{pattern}{self.marker_suffix}")):
            meta = read_marker(path)
            if meta is not None and meta.get("fingerprint") != self.fingerprint:
                self._refuse(path, meta.get("fingerprint"))

    def finished(self, name: str) -> dict[str, Any] | None:
        """The marker of unit ``name`` when it is finished by this run; None when it is not (or unreadable)."""
        meta = read_marker(self.marker(name))
        if meta is not None and meta.get("fingerprint") != self.fingerprint:
            self._refuse(self.marker(name), meta.get("fingerprint"))
        return meta

    def commit(
        self,
        name: str,
        meta: dict[str, Any],
        write: Callable[[Path], None] | None = None,
        data_suffix: str = "",
    ) -> None:
        """Finish unit ``name``: its data (``write`` writes the file it is given, then it is renamed to
        ``<name><data_suffix>``) and then its marker, both atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if write is not None:
            write_atomic(self.folder / f"{name}{data_suffix}", write)
        write_marker(self.marker(name), {**meta, "fingerprint": self.fingerprint})

    def claim(self, settings: dict[str, Any] | None = None, name: str = "run.json") -> None:
        """Record this run in ``<folder>/<name>``, or refuse when the folder was claimed by another run.

        ``settings`` (JSON-ready) are what the fingerprint was built from; a refusal names those that differ.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        settings = json.loads(json.dumps(settings or {}, default=str))
        path = self.folder / name
        meta = read_marker(path)
        if meta is not None and meta.get("fingerprint") != self.fingerprint:
            self._refuse(path, meta.get("fingerprint"), _differences(meta.get("settings") or {}, settings))
        if meta is None:
            write_marker(path, {"fingerprint": self.fingerprint, "settings": settings})

    def release(self, name: str = "run.json") -> None:
        """Remove the claim (a run that produced nothing leaves the folder free for a corrected re-run)."""
        (self.folder / name).unlink(missing_ok=True)
