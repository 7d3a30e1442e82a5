"""docs/CONTRACTS.md against the code: its column lists are the package's column constants, its
key lists are what the code writes, and every path in its table is a rule's output pattern."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import h5py
import numpy as np
import pytest

from genre_classification import columns
from genre_classification.data.split import make_split, split_summary
from genre_classification.evaluation.cv import SCORES
from genre_classification.evaluation.evaluate import CALIBRATION_KEYS, compute_metrics
from genre_classification.features.features import FeatureParams, write_features
from genre_classification.reports.track_table import ID_COLUMNS

REPO = Path(__file__).resolve().parents[1]
NOT_A_RULE_OUTPUT = "not a rule output"


def contract_rows() -> dict[str, tuple[str, str]]:
    """``{path: (producer, format)}`` of the table in docs/CONTRACTS.md."""
    rows = {}
    for line in (REPO / "docs/CONTRACTS.md").read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def documented(path: str, after: str = "columns") -> tuple[str, ...]:
    """The first backticked word list after ``after`` in the format of ``path``."""
    match = re.search(re.escape(after) + r"[^`]*`([^`]+)`", contract_rows()[path][1])
    assert match, f"docs/CONTRACTS.md: no {after!r} list for {path}"
    return tuple(match.group(1).split())


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("results/features/.shards/{shard}.tsv", columns.RECORD_COLUMNS),
        ("results/features/.packs/{shard}.tsv", columns.PACK_INDEX_COLUMNS),
        ("results/data/manifest.tsv", columns.MANIFEST_COLUMNS),
        ("results/qc/rejected.tsv", columns.REJECTED_COLUMNS),
        ("results/split/split.tsv", columns.SPLIT_COLUMNS),
        ("results/eval/{model}/predictions.csv", columns.EVAL_PREDICTION_COLUMNS),
        ("results/predict/{set}/predictions.csv", columns.PREDICT_SET_COLUMNS),
        ("results/tables/tracks.tsv", ID_COLUMNS),
        ("results/resources/jobs.tsv", columns.JOB_RESOURCE_COLUMNS),
    ],
)
def test_documented_columns_are_the_column_constants(path, expected):
    assert documented(path) == expected


def test_documented_record_statuses():
    assert documented("results/features/.shards/{shard}.tsv", "in") == columns.RECORD_STATUSES


def test_documented_feature_attributes_and_model_features(tmp_path):
    params = FeatureParams()
    path = tmp_path / "a.h5"
    write_features(path, np.zeros((1, 2, 3), np.float32), params, "rock", "a.wav", "md5", 1.0)
    with h5py.File(path) as h5:
        attrs = set(h5.attrs)
    assert set(documented("results/features/{genre}/{track}.h5", "attrs")) == attrs
    model_doc = contract_rows()["results/models/{model}/features.json"][1]
    described = re.search(r'"features": \{([^}]+)\}', model_doc).group(1).split()
    assert described == [f.name for f in fields(FeatureParams)]


def test_documented_metric_and_split_summary_keys():
    metrics_doc = contract_rows()["results/eval/{model}/metrics.json"][1]
    metrics = compute_metrics(np.array([0, 1]), np.array([0, 0]), ["a", "b"])
    words = set(re.findall(r"[a-z_0-9]+", metrics_doc.split("(")[0]))
    assert set(metrics) <= words and {"n_segments", "overlap", "n_windows"} <= words
    assert set(CALIBRATION_KEYS) <= words
    assert set(metrics["per_genre"]["a"]) == {"precision", "recall", "f1", "support"}
    cv_doc = contract_rows()["results/eval/{model}/cv_metrics.json"][1]
    assert all(score in cv_doc for score in SCORES)

    tracks = [
        {"genre": g, "track": f"{g}{i}", "features": "", "n_segments": 1, "md5": ""}
        for g in ("a", "b")
        for i in range(4)
    ]
    fractions = {"train": 0.5, "val": 0.25, "test": 0.25}
    summary = split_summary(make_split(tracks, fractions=fractions, seed=1), "holdout")
    info_doc = contract_rows()["results/split/split_info.json"][1]
    listed = re.search(r"`([^`]+)`", info_doc).group(1)
    while "[" in listed:  # drop what is nested in the top-level keys
        listed = re.sub(r"\[[^\[\]]*\]", "", listed)
    assert listed.split() == list(summary)


def rule_output_patterns(tmp_path: Path) -> list[str]:
    """The output patterns of every rule, with a single split and with k folds and groups."""
    patterns = []
    for overlay in ({}, {"split": {"method": "kfold", "folds": 2, "group_by": "group"}}):
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "tests/rule_outputs.py"),
                str(tmp_path),
                json.dumps(overlay),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        outputs = json.loads(result.stdout.strip().splitlines()[-1])
        patterns += [pattern for rule in outputs.values() for pattern in rule]
    return patterns


def as_regex(pattern: str) -> re.Pattern:
    """A path pattern as a regex: each wildcard (``{name}``, ``{name,regex}`` or the docs'
    ``<name>``) matches anything, e.g. another pattern's wildcard or a fold number."""
    parts = re.split(r"\{[^{}]*\}|<[^<>]*>", pattern)
    return re.compile(".+".join(re.escape(part) for part in parts) + "$")


def same_files(documented_path: str, pattern: str) -> bool:
    """Whether a documented path and a rule output pattern name the same files (either may be
    the more specific: ``fold-<i>`` against an expanded ``fold-0``)."""
    return bool(
        as_regex(pattern).match(documented_path) or as_regex(documented_path).match(pattern)
    )


def test_every_documented_path_is_a_rule_output(tmp_path):
    patterns = rule_output_patterns(tmp_path)
    rows = contract_rows()
    assert len(rows) > 20
    unmatched = [
        path
        for path, (producer, _) in rows.items()
        if NOT_A_RULE_OUTPUT not in producer and not any(same_files(path, p) for p in patterns)
    ]
    assert unmatched == []
