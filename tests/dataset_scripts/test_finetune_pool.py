from hf_select.dataset_scripts import finetune_pool as ft

from .fixtures import write_dictd


def test_rst_questions_only_headings_ending_with_a_question_mark():
    text = (
        "General FAQ\n===========\n\nIntro.\n\n"
        "What is Python?\n---------------\n\nPython is a programming language.\n\n"
        "History\n-------\n\nLong ago.\n"
    )
    assert list(ft.rst_questions(text)) == [("What is Python?", "Python is a programming language.")]


def test_python_faq_and_perlfaq_pairs(tmp_path):
    faq = tmp_path / "usr/share/doc/python3.11/html/_sources/faq/general.rst.txt"
    faq.parent.mkdir(parents=True)
    faq.write_text(
        "Why is Python slow?\n===================\n\nBecause :func:`eval` interprets bytecode one step at a time.\n"
    )
    pod = tmp_path / "usr/share/perl/5.36.0/pod/perlfaq4.pod"
    pod.parent.mkdir(parents=True)
    pod.write_text(
        "=head1 NAME\n\nperlfaq4\n\n=head2 How do I round a number?\n\nUse C<sprintf> with a format of two digits.\n\n=cut\n"
    )
    (p,) = ft.python_faq_pairs(tmp_path)
    assert p == {
        "question": "Why is Python slow?",
        "answer": "Because eval interprets bytecode one step at a time.",
        "tier": "high",
        "source": "python-faq",
    }
    (q,) = ft.perlfaq_pairs(tmp_path)
    assert (
        q["question"] == "How do I round a number?"
        and q["answer"] == "Use sprintf with a format of two digits."
    )


def test_dictionary_pairs_template_tier_and_cap(tmp_path):
    from hf_select.dataset_scripts import text_sources as ts

    write_dictd(tmp_path, "foldoc", [(f"word{i}", f"A {{linked}} definition of word {i}.") for i in range(5)])
    pairs = list(
        ft.dictionary_pairs(ts.foldoc_docs(tmp_path), "foldoc", "medium", "What is {word}?", max_pairs=3)
    )
    assert len(pairs) == 3
    assert pairs[0] == {
        "question": "What is word0?",
        "answer": "A linked definition of word 0.",
        "tier": "medium",
        "source": "foldoc",
    }
