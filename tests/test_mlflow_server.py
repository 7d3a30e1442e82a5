"""A real `mlflow server` on 127.0.0.1: a training job and its evaluation log to it over HTTP
(MLFLOW_TRACKING_URI), and the run is checked through the MLflow client."""

from __future__ import annotations

import json
from pathlib import Path

from _training_data import TINY_CONFIG, full_config, make_features, packs_beside


def test_training_run_logged_to_server(mlflow_server, tmp_path, monkeypatch):
    import mlflow

    from genre_classification.evaluation.evaluate import evaluate
    from genre_classification.tracking import provenance_tags
    from genre_classification.training.train import MlflowSettings, TrainingPaths, train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    split_path = make_features(tmp_path / "data")
    data_version = tmp_path / "data" / "data_version.json"
    epochs = 3
    info = train(
        full_config({**TINY_CONFIG, "epochs": epochs}),
        TrainingPaths(
            split=split_path,
            model="results/models/tiny/model.keras",
            history="results/models/tiny/history.csv",
            run_info="results/mlflow/runs/tiny.json",
            checkpoint_dir="results/models/tiny/checkpoints",
            packs=packs_beside(split_path),
        ),
        # the environment variable wins over tracking_uri
        MlflowSettings("server-test", "sqlite:///must-not-be-used.db", timeout_s=10),
        model_name="tiny",
        lock_timeout_s=30,
        threads=1,
        tags=provenance_tags(data_version, "train_model", {"model": "tiny"}),
    )
    assert info["tracking_uri"] == mlflow_server
    assert json.loads(Path("results/mlflow/runs/tiny.json").read_text()) == info
    assert not Path("must-not-be-used.db").exists()
    evaluate(
        "results/models/tiny/model.keras",
        split_path,
        "results/eval/tiny/metrics.json",
        "results/eval/tiny/predictions.csv",
        "results/eval/tiny/confusion_matrix.png",
        run_info_path="results/mlflow/runs/tiny.json",
        data_version_path=data_version,
    )

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("server-test")
    assert experiment is not None and experiment.experiment_id == info["experiment_id"]
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"

    params = run.data.params
    for key, value in {
        "architecture": "cnn",
        "optimizer": "adam",
        "learning_rate": "0.01",
        "epochs": str(epochs),
        "batch_size": "8",
        "seed": "7",
        "mixed_precision": "False",
        "early_stopping.patience": "100",
        "options.filters": "[4, 8]",
    }.items():
        assert params[key] == value, key

    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert sorted(m.step for m in history) == list(range(1, epochs + 1)), metric
    metrics = run.data.metrics
    for key in ("test_accuracy", "test_macro_precision", "test_macro_recall", "test_macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0

    tags = run.data.tags
    assert tags["data.md5"] == "0123abcd"
    assert tags["snakemake.rule"] == "train_model"
    assert tags["snakemake.wildcard.model"] == "tiny"
    assert tags["device"] == "CPU"
    assert tags["pkg.tensorflow"] and tags["pkg.mlflow"] and tags["pkg.keras"]
    assert "git.commit" in tags  # the repository's commit (tests run inside the clone)

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"history.csv", "evaluation"} <= artifacts
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/metrics.json" in evaluation

    # MLflow 3: the model is a LoggedModel linked to the run; load it back over HTTP
    models = client.search_logged_models(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    assert [m.name for m in models] == ["model"]
    loaded = mlflow.tensorflow.load_model(f"models:/{models[0].model_id}")
    assert loaded.output_shape == (None, 3)
