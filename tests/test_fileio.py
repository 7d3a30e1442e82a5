"""The one writer of TSV/CSV/JSON result files: atomic (temp file + rename)."""

from __future__ import annotations

import pandas as pd
import pytest

from genre_classification import fileio


def test_tsv_round_trip_and_missing_file(tmp_path):
    path = tmp_path / "sub" / "t.tsv"
    rows = [{"a": "1", "b": "x", "extra": "ignored"}, {"a": "2", "b": "y"}]
    fileio.write_tsv(path, rows, ("a", "b"))
    assert path.read_text() == "a\tb\n1\tx\n2\ty\n"
    assert fileio.read_tsv(path) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]
    assert fileio.read_tsv(tmp_path / "missing.tsv") == []
    assert fileio.read_tsv(None) == []


def test_failed_writes_leave_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "t.tsv"
    fileio.write_tsv(path, [{"a": "old"}], ("a",))
    with pytest.raises(KeyError):
        fileio.write_tsv(path, [{"a": "new"}, {"b": "no a"}], ("a",))
    frame = pd.DataFrame({"a": [1]})
    with pytest.raises(TypeError):
        fileio.write_frame(path, frame, sep="\t", no_such_option=True)
    with pytest.raises(TypeError):
        fileio.write_json(path, {"a": object()})
    assert path.read_text() == "a\nold\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.tsv"]


def test_write_frame_passes_to_csv_options(tmp_path):
    path = tmp_path / "deep" / "t.tsv"
    fileio.write_frame(
        path,
        pd.DataFrame({"x": [0.123456789], "y": ["a"]}),
        sep="\t",
        index=False,
        float_format="%.3g",
    )
    assert path.read_text() == "x\ty\n0.123\ta\n"
