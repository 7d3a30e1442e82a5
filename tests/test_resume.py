"""Checkpoint/resume: a job SIGKILLed after epoch 2 resumes at epoch 3 with the same MLflow run
and ends with the same weights and metrics as an uninterrupted job with the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from _train_job import output_paths, start
from _training_data import TINY_CONFIG, make_features
from genre_classification.training.train import KILL_AFTER_EPOCH_ENV

EPOCHS = 5


def start_job(tmp_path: Path, name: str, split_path: Path, kill_after: int | None = None):
    out = tmp_path / name
    config = {**TINY_CONFIG, "epochs": EPOCHS, "keep_checkpoints": False}
    config["early_stopping"] = {"patience": 100, "restore_best_weights": False}
    job = {
        "config": config,
        "split_path": str(split_path),
        **output_paths(out),
        "experiment": "resume-test",
        "data_version_path": str(split_path.parent / "data_version.json"),
        "model_name": name,
        "threads": 1,
    }
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}", KILL_AFTER_EPOCH_ENV: ""}
    if kill_after:
        env[KILL_AFTER_EPOCH_ENV] = str(kill_after)
    return start(job, out, env), out


def finish(proc) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=600)
    return proc.returncode, output


def test_killed_job_resumes_and_matches_uninterrupted(tmp_path):
    import keras
    import mlflow

    split_path = make_features(tmp_path / "data")
    # the reference job and the job that gets killed run side by side (2 cores)
    full_proc, full = start_job(tmp_path, "full", split_path)
    killed_proc, resumed = start_job(tmp_path, "resumed", split_path, kill_after=2)

    code, output = finish(killed_proc)
    assert code == -9, output  # SIGKILL right after the epoch-2 checkpoint
    ckpt = resumed / "checkpoints"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epochs_done"] == 2
    run_id = json.loads((ckpt / "mlflow_run.json").read_text())["run_id"]
    assert not (resumed / "model.keras").exists()

    code, output = finish(start_job(tmp_path, "resumed", split_path)[0])
    assert code == 0, output
    assert "Resuming from checkpoint after epoch 2" in output
    epoch_lines = [line for line in output.splitlines() if line.startswith("Epoch ")]
    assert epoch_lines == [f"Epoch {e}/{EPOCHS}" for e in range(3, EPOCHS + 1)]
    assert not ckpt.exists()  # removed once the outputs are written

    code, full_output = finish(full_proc)
    assert code == 0, full_output

    # same history (apart from wall time) and the same final weights
    h_full = pd.read_csv(full / "history.csv").drop(columns="epoch_seconds")
    h_resumed = pd.read_csv(resumed / "history.csv").drop(columns="epoch_seconds")
    assert h_resumed["epoch"].tolist() == list(range(1, EPOCHS + 1))
    pd.testing.assert_frame_equal(h_full, h_resumed, rtol=1e-5)
    w_full = keras.models.load_model(full / "model.keras").get_weights()
    w_resumed = keras.models.load_model(resumed / "model.keras").get_weights()
    for a, b in zip(w_full, w_resumed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # one MLflow run, resumed (same id), every epoch logged exactly once
    info = json.loads((resumed / "run.json").read_text())
    assert info["run_id"] == run_id
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{resumed / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == str(EPOCHS)
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        steps = [m.step for m in client.get_metric_history(run_id, metric)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (metric, steps)
    assert len(client.search_runs([run.info.experiment_id])) == 1
