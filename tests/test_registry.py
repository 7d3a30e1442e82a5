"""MLflow Model Registry: each evaluated run becomes a version; `champion` moves only to a better
test macro-F1 (local SQLite store and a real tracking server)."""

from __future__ import annotations

import numpy as np
import pytest

from genre_classification import tracking
from genre_classification.evaluation import registry

NAME = "genre-test"


def logged_run(tmp_path, uri: str, experiment: str = "registry-test") -> str:
    """A run with a tiny (untrained) Keras model logged as train.py does; its run-info path."""
    import keras
    import mlflow

    from genre_classification.training import models

    experiment_id = tracking.setup_experiment(experiment, uri)
    model = models.build_model(
        "cnn", (8, 8, 1), 3, np.zeros(8), np.ones(8), filters=(2,), dropout=0.0
    )
    with tracking.start_run(experiment_id, run_name="tiny") as run:
        mlflow.set_tags({"model_name": "tiny", "data.md5": "from-run-tags"})
        tracking.log_keras_model(model)
    keras.backend.clear_session()
    path = tmp_path / f"{run.info.run_id}.json"
    tracking.write_run_info(path, run.info.run_id, experiment_id, uri)
    return path


def metrics(macro_f1: float) -> dict:
    return {"macro_f1": macro_f1, "data_version": {"md5": "d41d8cd9"}, "git_commit": "abc123"}


def champion(uri: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client, client.get_model_version_by_alias(NAME, registry.CHAMPION)


def check_champion_follows_the_best_score(tmp_path, uri):
    first = registry.register_and_promote(logged_run(tmp_path, uri), metrics(0.8), NAME)
    assert first.moved and first.champion == first.version == "1"
    assert "no champion yet" in first.message

    worse = registry.register_and_promote(logged_run(tmp_path, uri), metrics(0.5), NAME)
    assert (worse.version, worse.champion, worse.moved) == ("2", "1", False)
    client, current = champion(uri)
    assert str(current.version) == "1"
    v2 = client.get_model_version(NAME, "2")
    assert "stays version 1" in v2.description
    assert "0.8000" in v2.description and "0.5000" in v2.description
    assert v2.tags[registry.SCORE_TAG] == "0.5"
    assert v2.tags["data.md5"] == "d41d8cd9" and v2.tags["git.commit"] == "abc123"
    assert v2.tags["model_name"] == "tiny"

    tie = registry.register_and_promote(logged_run(tmp_path, uri), metrics(0.8), NAME)
    assert not tie.moved and str(champion(uri)[1].version) == "1"

    better_run = logged_run(tmp_path, uri)
    better = registry.register_and_promote(better_run, metrics(0.9), NAME)
    assert better.moved and better.previous == "1" and better.previous_score == 0.8
    client, current = champion(uri)
    assert str(current.version) == better.version == "4"
    assert "moves from version 1" in current.description and "0.9000" in current.description

    # Re-evaluating the same run updates its version instead of adding one.
    again = registry.register_and_promote(better_run, metrics(0.9), NAME)
    assert again.version == "4" and not again.moved
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 4
    return current


def test_champion_local_sqlite_store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # restored after the test (MLflow sets it)
    check_champion_follows_the_best_score(tmp_path, uri)

    import mlflow

    mlflow.set_tracking_uri(uri)
    model = mlflow.tensorflow.load_model(f"models:/{NAME}@{registry.CHAMPION}")
    assert model.output_shape == (None, 3)


def test_champion_on_a_tracking_server(tmp_path, monkeypatch, mlflow_server):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    current = check_champion_follows_the_best_score(tmp_path, mlflow_server)
    assert current.source.startswith("models:/")


def test_a_version_without_score_never_wins():
    class Version:
        tags: dict = {}

    assert registry.version_score(Version()) == -np.inf
    Version.tags = {registry.SCORE_TAG: "0.25"}
    assert registry.version_score(Version()) == pytest.approx(0.25)
