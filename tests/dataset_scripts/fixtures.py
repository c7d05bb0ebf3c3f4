"""Small fixture trees that imitate the extracted packages of the demo world (no real downloads)."""

import gzip
from pathlib import Path

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(n: int) -> str:
    out = ""
    while True:
        out = B64[n % 64] + out
        n //= 64
        if not n:
            return out


def write_dictd(root: Path, name: str, entries: list[tuple[str, str]], aliases=()) -> Path:
    """A dictd dictionary (``.dict.dz`` + ``.index``) under ``root/usr/share/dictd``."""
    base = root / "usr/share/dictd"
    base.mkdir(parents=True, exist_ok=True)
    data, index = b"", ["00-database-short\tA\tB"]
    data += b"meta entry\n"
    for word, body in entries:
        blob = f"{word}\n\n   {body}\n\n".encode()
        index.append(f"{word}\t{b64(len(data))}\t{b64(len(blob))}")
        for alias_of, alias in aliases:
            if alias_of == word:
                index.append(f"{alias}\t{b64(len(data))}\t{b64(len(blob))}")
        data += blob
    (base / f"{name}.dict.dz").write_bytes(gzip.compress(data))
    (base / f"{name}.index").write_text("\n".join(index) + "\n")
    return root


LONG = "This paragraph explains a feature of the library in plain words. " * 6
