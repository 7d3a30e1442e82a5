"""After a real workflow run (tiny data, tiny CNN): the model is registered as champion, and the
predict command, with its default model, reproduces the workflow's evaluation predictions."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import BAD_FILES, TINY_MODEL

pytestmark = pytest.mark.slow


def test_champion_after_a_run_and_predict_matches_evaluation(workflow_dir, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the workflow's local store
    workflow_dir.overlay(
        "training.yaml",
        {"training": {"run": ["tiny"], "models": {"tiny": TINY_MODEL}, "resources": {"gpu": 0}}},
    )
    workflow_dir("--cores", "2", "results/eval/tiny/metrics.json")
    work = workflow_dir.workdir

    recorded = json.loads((work / "results/models/tiny/features.json").read_text())
    assert recorded["features"]["segment_seconds"] == 1.5  # the test overlay's, not the default
    assert recorded["labels"] == ["classical", "disco", "metal"]

    import mlflow

    uri = f"sqlite:///{work}/results/mlflow/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("genre-classifier", "champion")
    metrics = json.loads((work / "results/eval/tiny/metrics.json").read_text())
    run_info = json.loads((work / "results/mlflow/runs/tiny.json").read_text())
    assert champion.run_id == run_info["run_id"]
    assert float(champion.tags["test_macro_f1"]) == pytest.approx(metrics["macro_f1"])
    assert champion.tags["data.md5"] == metrics["data_version"]["md5"]
    assert "no champion yet" in (work / "logs/evaluate_model/tiny.log").read_text()

    # The default model in the workflow directory is the registered champion.
    audio = Path(workflow_dir.data["repo"]) / "genres"
    result = subprocess.run(
        [sys.executable, "-m", "genre_classification", "predict", "--top-k", "3", str(audio)],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert "model: models:/genre-classifier@champion" in result.stderr
    assert result.returncode == 1, result.stderr  # the three bad files of the data set
    rows = {
        f"{Path(r['path']).parent.name}/{Path(r['path']).stem}": r
        for r in csv.DictReader(io.StringIO(result.stdout))
    }
    for bad in BAD_FILES:
        assert rows[bad.removesuffix(".wav")]["error"] != ""
    expected = pd.read_csv(work / "results/eval/tiny/predictions.csv")
    for track in expected.itertuples():
        row = rows[track.track]
        assert row["genre"] == track.predicted
        probs = dict(item.rsplit(":", 1) for item in row["top_k"].split(";"))
        for genre in recorded["labels"]:
            assert float(probs[genre]) == pytest.approx(getattr(track, f"prob_{genre}"), abs=2e-6)
