"""The whole workflow (every default target, reports and a predict set included) on a collection
of two genres plus a genre with a single track, which the split leaves out (issue 9)."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import REPO, TINY_MODEL, SnakemakeRunner
from genre_classification.data.demo_data import make_demo_dataset

pytestmark = pytest.mark.slow

GENRES = ["classical", "metal"]


def test_two_genres_end_to_end(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    audio, new_audio = tmp_path / "audio", tmp_path / "new-audio"
    make_demo_dataset(audio, 4, seconds=3.5, genres=GENRES)
    make_demo_dataset(audio, 1, seconds=3.5, genres=["disco"])  # too small: left out
    make_demo_dataset(new_audio, 1, seconds=3.5, genres=GENRES, seed=7)
    runner = SnakemakeRunner(tmp_path / "work")
    (runner.workdir / "config").mkdir(parents=True)
    runner.configfiles = [str(REPO / "config" / "config.yaml")]
    runner.overlay(
        "two.yaml",
        {
            "data": {"source": "dir", "dir": str(audio)},
            "features": {"segment_seconds": 1.5},
            "training": {
                "run": ["tiny"],
                "models": {"tiny": {**TINY_MODEL, "epochs": 1}},
                "resources": {"gpu": 0},
            },
            "predict": {"sets": {"new": str(new_audio)}, "top_k": 3},  # top_k > 2 genres
        },
    )
    runner("--cores", "2")
    work = runner.workdir

    split_log = (work / "logs/split_tracks.log").read_text()
    assert "genre 'disco' has 1 track; a holdout split needs at least 3 tracks" in split_log
    with open(work / "results/split/split.tsv") as handle:
        split = list(csv.DictReader(handle, delimiter="\t"))
    assert sorted({r["genre"] for r in split}) == GENRES
    assert {(r["genre"], r["split"]) for r in split} == {
        (g, s) for g in GENRES for s in ("train", "val", "test")
    }

    reports = work / "results/reports"
    for path in (
        "data_drift.html",
        "data_drift.json",
        "data_quality.html",
        "data_quality.json",
        "tiny/classification.html",
        "tiny/classification.json",
        "predict/new/drift.html",
        "predict/new/drift.json",
    ):
        assert (reports / path).stat().st_size > 0, path
    classification = json.loads((reports / "tiny/classification.json").read_text())
    assert classification["labels"] == GENRES
    assert set(classification["per_class"]) == set(GENRES)
    assert classification["per_class"]["classical"]["support"] == 1
    metrics = json.loads((work / "results/eval/tiny/metrics.json").read_text())
    assert set(metrics["per_genre"]) == set(GENRES)
    assert classification["accuracy"] == pytest.approx(metrics["accuracy"])
    assert classification["f1"] == pytest.approx(metrics["macro_f1"])
    quality = json.loads((reports / "data_quality.json").read_text())
    assert "classical" in quality["tests"][-1]["description"] and "disco" not in str(quality)

    with open(work / "results/predict/new/predictions.csv") as handle:
        predictions = list(csv.DictReader(handle))
    assert len(predictions) == 2 and all(r["genre"] in GENRES for r in predictions)
    assert all(len(r["top_k"].split(";")) == 2 for r in predictions)
