"""code_version: what counts as a code change (comments and blank lines do not; docstrings do
for a job's code, not for the feature code that HDF5 files record)."""

from __future__ import annotations

from pathlib import Path

from genre_classification.code_version import definitions_fingerprint, source_digest

MODULE = '''
import os

SCALE = 2  # a constant


def helper(x):
    return x * SCALE


def compute(x):
    """Compute."""
    return helper(x) + 1


def unrelated():
    print("logging")
'''


def digests(tmp_path: Path, text: str) -> tuple[str, str]:
    path = tmp_path / f"m{abs(hash(text))}.py"
    path.write_text(text)
    return source_digest(path), definitions_fingerprint(path, ("compute",))


def test_comments_blank_lines_docstrings_and_other_definitions(tmp_path):
    base = digests(tmp_path, MODULE)
    commented = digests(tmp_path, MODULE.replace("# a constant", "# another comment\n\n"))
    assert commented == base
    docstring = digests(tmp_path, MODULE.replace('"""Compute."""', '"""Computes."""'))
    assert docstring[0] != base[0] and docstring[1] == base[1]
    logging = digests(tmp_path, MODULE.replace('print("logging")', 'print("other")'))
    assert logging[0] != base[0] and logging[1] == base[1]
    used = digests(tmp_path, MODULE.replace("SCALE = 2", "SCALE = 3"))
    assert used[0] != base[0] and used[1] != base[1]
    formatted = digests(tmp_path, MODULE.replace("return helper(x) + 1", "return (helper(x)+1)"))
    assert formatted[1] == base[1]
