"""The workflow's predict sets on the tiny data with a tiny CNN: a nested directory with bad files
and a DVC target of the data repo are extracted by the sharded machinery with the model's feature
parameters, predicted like the `predict` command, and compared with the train tracks."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from conftest import BAD_FILES, TINY_MODEL, planned_jobs
from genre_classification.data.demo_data import make_demo_dataset

pytestmark = pytest.mark.slow

PREDICT_RULES = {
    "predict_fetch_audio",
    "predict_extract_features",
    "predict_collect_features",
    "predict_set",
    "predict_drift_report",
}


def make_new_audio(root: Path) -> None:
    """Unlabelled audio, flat and nested, plus a text file named .mp3 and an empty file."""
    make_demo_dataset(root / "batch1", 2, seconds=3.5, genres=["disco", "metal"], seed=7)
    shutil.move(root / "batch1" / "metal" / "metal.00001.wav", root / "loose.wav")
    (root / "batch1" / "notes.txt").write_text("not audio, not listed")
    (root / "bad.mp3").write_text("this is not an mp3")
    (root / "batch1" / "empty.wav").write_bytes(b"")


def read_csv(text: str) -> dict[str, dict]:
    return {row["path"]: row for row in csv.DictReader(io.StringIO(text))}


def test_predict_sets_predictions_and_drift_reports(workflow_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = workflow_dir.workdir
    workflow_dir.overlay(
        "training.yaml",
        {
            "training": {"run": ["tiny"], "models": {"tiny": TINY_MODEL}, "resources": {"gpu": 0}},
            "reports": {"log_to_mlflow": False},
        },
    )
    # predict.sets empty (the default): no predict job is planned
    jobs = planned_jobs(workflow_dir("--dry-run").stdout)
    assert "train_model" in jobs and not PREDICT_RULES & set(jobs)

    new_audio = tmp_path / "new-audio"
    make_new_audio(new_audio)
    workflow_dir.overlay(
        "predict.yaml",
        {"predict": {"sets": {"new": str(new_audio), "archive": {"target": "genres"}}}},
    )
    jobs = planned_jobs(workflow_dir("--dry-run").stdout)
    assert jobs["predict_set"] == 2 and jobs["predict_drift_report"] == 2
    assert jobs["predict_fetch_audio"] == 1  # only the DVC set is pulled

    start = time.perf_counter()
    workflow_dir("--cores", "2")  # rule all
    print(f"workflow with two predict sets: {time.perf_counter() - start:.1f} s")

    # --- the directory set: every audio file below it, bad ones with their reason
    predictions = read_csv((work / "results/predict/new/predictions.csv").read_text())
    expected_files = sorted(
        [str(p) for p in new_audio.rglob("*.wav")] + [str(new_audio / "bad.mp3")]
    )
    assert sorted(predictions) == expected_files
    tracks = {row["track"] for row in predictions.values()}
    assert {"loose", "bad", "batch1%2Fempty", "batch1%2Fdisco%2Fdisco.00000"} <= tracks
    assert predictions[str(new_audio / "bad.mp3")]["error"].startswith("cannot decode")
    assert predictions[str(new_audio / "batch1" / "empty.wav")]["error"].startswith("empty")
    good = [row for row in predictions.values() if not row["error"]]
    assert len(good) == 4
    assert all(row["genre"] in {"classical", "disco", "metal"} for row in good)

    # extracted by the sharded machinery, with the feature parameters recorded with the model
    recorded = json.loads((work / "results/models/tiny/features.json").read_text())["features"]
    records = list((work / "results/predict/new/features/.shards").glob("*.tsv"))
    assert records
    for row in good:
        h5_path = work / "results/predict/new/features/unlabelled" / f"{row['track']}.h5"
        with h5py.File(h5_path, "r") as h5:
            assert {k: h5.attrs[k] for k in recorded} == recorded
            assert h5["logmel"].shape[0] == int(row["n_segments"])

    # --- the same predictions as the `predict` command on the same files
    cli = subprocess.run(
        [sys.executable, "-m", "genre_classification", "predict", "--top-k", "3", "--model",
         "results/models/tiny/model.keras", str(new_audio)],
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    assert cli.returncode == 1, cli.stderr  # the two bad files
    by_cli = read_csv(cli.stdout)
    assert sorted(by_cli) == sorted(predictions)
    for path, row in predictions.items():
        other = by_cli[path]
        assert row["genre"] == other["genre"] and row["n_segments"] == other["n_segments"]
        assert bool(row["error"]) == bool(other["error"])
        if not row["error"]:
            assert float(row["probability"]) == pytest.approx(float(other["probability"]), abs=2e-6)
            assert [g.split(":")[0] for g in row["top_k"].split(";")] == [
                g.split(":")[0] for g in other["top_k"].split(";")
            ]

    # --- the drift report of the directory set: data drift and prediction drift
    drift = json.loads((work / "results/reports/predict/new/drift.json").read_text())
    assert drift["current"]["n_tracks"] == 4
    split = (work / "results/split/split.tsv").read_text().splitlines()
    assert drift["reference"]["n_tracks"] == sum(line.split("\t")[2] == "train" for line in split)
    assert drift["n_features"] > 40 and "genre" in drift["features"]
    prediction_drift = drift["prediction_drift"]
    assert set(prediction_drift["training_label_shares"]) == {"classical", "disco", "metal"}
    predicted = [row["genre"] for row in good]
    assert prediction_drift["predicted_shares"] == {
        g: round(predicted.count(g) / 4, 6) for g in set(predicted)
    }
    assert drift["data_version"]["n_rejected"] == 2
    html = (work / "results/reports/predict/new/drift.html").read_text()
    assert len(html) > 10_000 and "genre" in html

    # --- the DVC set (the data repo's tracked directory, pulled shard by shard)
    archive = read_csv((work / "results/predict/archive/predictions.csv").read_text())
    assert len(archive) == 3 * 5 + len(BAD_FILES)
    failed = {Path(p).relative_to(Path(p).parents[1]).as_posix() for p, r in archive.items()
              if r["error"]}  # fmt: skip
    assert failed == set(BAD_FILES)
    assert (work / "results/reports/predict/archive/drift.json").is_file()

    # nothing left to do; the report lists the predict outputs
    assert planned_jobs(workflow_dir("--dry-run").stdout) == {}
    # today's features config plays no part: re-extracted with the model's parameters
    for h5_path in (work / "results/predict/new/features/unlabelled").glob("*.h5"):
        h5_path.unlink()
    workflow_dir.overlay("features.yaml", {"features": {"n_mels": 64}})
    workflow_dir("--cores", "2", "--rerun-triggers", "mtime", "--forcerun",
                 "predict_extract_features", "results/predict/new/predictions.csv")  # fmt: skip
    with h5py.File(h5_path.with_name("loose.h5"), "r") as h5:
        assert h5.attrs["n_mels"] == recorded["n_mels"] == 128
    again = read_csv((work / "results/predict/new/predictions.csv").read_text())
    assert {p: r["genre"] for p, r in again.items()} == {
        p: r["genre"] for p, r in predictions.items()
    }
    workflow_dir.configfiles.remove("config/features.yaml")

    workflow_dir("--report", "report.html")
    report = (work / "report.html").read_text(errors="replace")
    assert "prediction drift" in report and "Predictions of model" in report
