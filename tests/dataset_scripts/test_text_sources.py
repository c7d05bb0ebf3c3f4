import gzip

import pytest

from hf_select.dataset_scripts import text_sources as ts

from .fixtures import LONG, write_dictd


def test_split_paragraphs_respects_the_limit_and_keeps_text():
    text = "\n\n".join(f"para {i} " + "x" * 40 for i in range(10))
    parts = ts.split_paragraphs(text, max_chars=100)
    assert all(len(p) <= 100 for p in parts)
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")
    assert ts.split_paragraphs("y" * 250, max_chars=100) == ["y" * 100, "y" * 100, "y" * 50]
    with pytest.raises(ValueError, match="max_chars"):
        ts.split_paragraphs("a", 0)


def test_dictd_entries_skip_metadata_and_aliases(tmp_path):
    write_dictd(
        tmp_path,
        "foldoc",
        [("Lisp", "A programming language."), ("CPU", "The processor.")],
        aliases=[("CPU", "processor")],
    )
    entries = list(ts.dictd_entries(*ts._dictd_files(tmp_path, "foldoc")))
    assert [w for w, _ in entries] == ["Lisp", "CPU"]
    assert entries[1][1] == "CPU\n\n   The processor."
    docs = list(ts.foldoc_docs(tmp_path))
    assert docs[0]["url"] == "https://foldoc.org/Lisp" and docs[0]["title"] == "Lisp"


def test_dictionary_urls_on_the_real_sites(tmp_path):
    write_dictd(tmp_path, "jargon", [("hacker ethic", "The belief...")])
    write_dictd(tmp_path, "wn", [("keuka lake", "n 1: a lake")])
    write_dictd(tmp_path, "gcide", [("Abacus", "A counting frame.")])
    assert next(ts.jargon_docs(tmp_path))["url"] == "http://www.catb.org/jargon/html/H/hacker-ethic.html"
    assert (
        next(ts.wordnet_docs(tmp_path))["url"] == "http://wordnetweb.princeton.edu/perl/webwn?s=keuka%20lake"
    )
    assert next(ts.gcide_docs(tmp_path))["url"] == "https://gcide.gnu.org.ua/?q=Abacus"


def test_python_docs_urls_titles_and_skipped_folders(tmp_path):
    base = tmp_path / "usr/share/doc/python3.11/html/_sources"
    for rel in ("library/os.rst.txt", "faq/general.rst.txt", "whatsnew/3.11.rst.txt"):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(f":mod:`os` --- OS interfaces\n==========================\n\n{LONG}\n")
    docs = list(ts.python_doc_docs(tmp_path))
    assert len(docs) == 1
    assert docs[0]["url"] == "https://docs.python.org/3.11/library/os.html"
    assert docs[0]["title"] == "mod:`os` --- OS interfaces"


def test_linux_docs_gzipped_rst(tmp_path):
    path = tmp_path / "usr/share/doc/linux-doc-6.1/Documentation/admin-guide/sysrq.rst.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(f"Linux Magic System Request Key Hacks\n====\n\n{LONG}".encode()))
    (doc,) = ts.linux_doc_docs(tmp_path)
    assert doc["url"] == "https://www.kernel.org/doc/html/v6.1/admin-guide/sysrq.html"
    assert doc["title"] == "Linux Magic System Request Key Hacks"


def test_perl_docs_skip_faq_and_deltas(tmp_path):
    base = tmp_path / "usr/share/perl/5.36.0/pod"
    base.mkdir(parents=True)
    for name in ("perlfunc", "perlfaq4", "perl5360delta"):
        (base / f"{name}.pod").write_text(
            f"=head1 NAME\n\n{name} - text\n\n=head2 Section\n\n{LONG}\n\n=cut\n"
        )
    docs = list(ts.perl_doc_docs(tmp_path))
    assert [d["url"] for d in docs] == ["https://perldoc.perl.org/perlfunc"]
    assert "=head" in docs[0]["text"] and "=cut" not in docs[0]["text"]


def test_tex_sections_and_pari_urls(tmp_path):
    base = tmp_path / "usr/share/pari/doc"
    base.mkdir(parents=True)
    (base / "usersch3.tex").write_text(
        f"% comment\n\\section{{Arithmetic functions}}\n{LONG}\n\\subsection{{GCD}}\n{LONG}"
    )
    docs = list(ts.pari_doc_docs(tmp_path))
    assert [d["url"] for d in docs] == [
        "https://pari.math.u-bordeaux.fr/dochtml/html/Arithmetic_functions.html",
        "https://pari.math.u-bordeaux.fr/dochtml/html/GCD.html",
    ]
    assert "comment" not in docs[0]["text"]


def test_html_to_text_drops_tags_and_scripts():
    markup = (
        "<html><head><title>t</title></head><body><script>x=1</script><p>A &amp; B</p><p>C</p></body></html>"
    )
    assert ts.html_to_text(markup) == "A & B\n\nC"


def test_stdlib_code_split_between_code_and_tests(tmp_path):
    (tmp_path / "json").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "json/decoder.py").write_text('"""JSON decoder."""\n' + "x = 1\n" * 80)
    (tmp_path / "test/test_json.py").write_text("import unittest\n" * 40)
    code = list(ts.stdlib_code_docs(tmp_path))
    tests = list(ts.stdlib_code_docs_tests(tmp_path))
    assert [d["title"] for d in code] == ["json/decoder.py"]
    assert (
        code[0]["url"].endswith("/Lib/json/decoder.py")
        and "github.com/python/cpython/blob/3." in code[0]["url"]
    )
    assert [d["title"] for d in tests] == ["test/test_json.py"]


def test_docstrings_without_importing(tmp_path):
    pkg = tmp_path / "sympy/solvers"
    pkg.mkdir(parents=True)
    (pkg / "solvers.py").write_text(
        "raise ImportError('never imported')\n"
        f"def solve(f):\n    '''{LONG}'''\n\nclass Solver:\n    def run(self):\n        '''{LONG}'''\n"
    )
    docs = list(ts.sympy_docs(tmp_path))
    assert [d["title"] for d in docs] == ["sympy.solvers.solvers.solve", "sympy.solvers.solvers.Solver.run"]
    assert (
        docs[0]["url"]
        == "https://docs.sympy.org/latest/modules/solvers/solvers.html#sympy.solvers.solvers.solve"
    )
