"""Errors a user can fix: bad options, files, columns, indices. The ``hf-select`` command prints them as one
line (``hf-select <command>: error: ...``) and exits with code 2 (:mod:`hf_select.cli`).

Each is a ``ValueError``; those raised where Python code would expect a ``KeyError`` / ``IndexError`` /
``TypeError`` (a missing column, an index out of range, a value of the wrong type) are also that class, so a
caller catching the builtin keeps working, while the message stays a plain sentence.
"""

from __future__ import annotations


class InputError(ValueError):
    """A value, file or dataset given by the user that hf-select cannot use; the message names it."""

    __str__ = ValueError.__str__


class InputKeyError(InputError, KeyError):
    """A column, key or field that the input lacks (also a ``KeyError``)."""

    __str__ = ValueError.__str__  # not KeyError's repr-quoting


class InputIndexError(InputError, IndexError):
    """A layer, head or row index out of range of the model or dataset (also an ``IndexError``)."""


class InputTypeError(InputError, TypeError):
    """A value or column of the wrong type, e.g. a text column holding numbers (also a ``TypeError``)."""
