"""The demo world's manifest: every source with its licence and counts, and the sha256 of every output file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(root: str | Path, skip: tuple[str, ...] = ("manifest.json",)) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``root`` (sorted; hidden files and ``skip`` left out)."""
    root = Path(root)
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and path.name not in skip
        and not any(p.startswith(".") for p in path.relative_to(root).parts)
    }


def write_manifest(world_dir: str | Path, sections: dict[str, Any]) -> Path:
    """Write ``world_dir/manifest.json`` = ``sections`` + ``files`` (sha256 of every output)."""
    world_dir = Path(world_dir)
    manifest = {**sections, "files": file_hashes(world_dir)}
    path = world_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return path
