"""code_version: what counts as a code change (comments and blank lines do not; docstrings do
for a job's code, not for the feature code that HDF5 files record)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from genre_classification.code_version import (
    code_record,
    definitions_fingerprint,
    source_digest,
    write_code_record,
)

REPO = Path(__file__).resolve().parents[1]

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


def test_code_record_is_rewritten_only_when_the_code_changes(tmp_path):
    """results/code/<script>.json: written when the workflow is parsed, only when its content
    changes (its mtime is what reruns the jobs); names the files that changed."""
    script = REPO / "scripts" / "train_model.py"
    record = tmp_path / "code" / "train_model.json"
    assert write_code_record(record, script) == []  # a first record names nothing
    written = json.loads(record.read_text())
    assert "genre_classification/training/models.py" in written["files"]
    assert "genre_classification/reports/reports.py" not in written["files"]
    assert written["script"] == {"train_model.py": source_digest(script)[:12]}
    assert len(written["fingerprint"]) == 16
    os.utime(record, ns=(1, 1))
    assert write_code_record(record, script) == []
    assert record.stat().st_mtime_ns == 1  # unchanged: not rewritten

    written["files"]["genre_classification/training/models.py"] = "0" * 12
    record.write_text(json.dumps(written))
    changed = write_code_record(record, script)
    assert changed == ["genre_classification/training/models.py"]
    # a script that is not a local file (a remote module): the whole package
    assert len(code_record(None)["files"]) > len(written["files"])
