"""The training stage through the real workflow (tiny data, tiny CNN): model, history, MLflow run
with params/metrics/model/tags, track-level evaluation, and the Snakemake HTML report."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_MODEL

pytestmark = pytest.mark.slow


def test_train_evaluate_mlflow_and_report(workflow_dir):
    workflow_dir.overlay(
        "training.yaml",
        {"training": {"run": ["tiny"], "models": {"tiny": TINY_MODEL}, "resources": {"gpu": 0}}},
    )
    dry = workflow_dir("--cores", "2", "--dry-run", "results/eval/tiny/metrics.json")
    assert "train_model" in dry.stdout and "evaluate_model" in dry.stdout
    workflow_dir("--cores", "2", "results/eval/tiny/metrics.json")
    work = workflow_dir.workdir

    assert (work / "results/models/tiny/model.keras").is_file()
    assert not (work / "results/models/tiny/checkpoints").exists()
    assert (work / "logs/train_model/tiny.log").read_text().count("Epoch ") >= 3
    metrics = json.loads((work / "results/eval/tiny/metrics.json").read_text())
    assert set(metrics["per_genre"]) == {"classical", "disco", "metal"}
    info = json.loads((work / "results/mlflow/runs/tiny.json").read_text())
    assert info["tracking_uri"] == "sqlite:///results/mlflow/mlflow.db"

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work}/results/mlflow/mlflow.db")
    run = client.get_run(info["run_id"])
    assert run.data.params["epochs"] == "3"
    assert run.data.tags["snakemake.rule"] == "train_model"
    assert run.data.tags["snakemake.wildcard.model"] == "tiny"
    assert len(run.data.tags["data.md5"]) >= 32  # DVC .dir md5
    assert run.data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 3
    logged = client.search_logged_models(
        experiment_ids=[info["experiment_id"]],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    assert len(logged) == 1

    workflow_dir("--report", "report.html", "results/eval/tiny/metrics.json")
    html = (work / "report.html").read_text(errors="replace")
    assert "confusion_matrix.png" in html and "metrics.json" in html
