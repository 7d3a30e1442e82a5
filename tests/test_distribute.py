"""Several GPUs in one job: the model mirrored over the job's devices (tf.distribute). No GPU
here: the same code path runs over two logical CPU devices (train.REPLICAS_ENV)."""

from __future__ import annotations

import pandas as pd

from _train_job import output_paths, start
from _training_data import TINY_CONFIG, full_config, make_features
from genre_classification.training import train


def test_training_mirrors_over_two_devices(tmp_path):
    split_path = make_features(tmp_path / "data")
    out = tmp_path / "job"
    job = {
        "config": {**TINY_CONFIG, "epochs": 2},
        "split_path": str(split_path),
        **output_paths(out),
        "experiment": "distribute-test",
        "model_name": "mirrored",
        "threads": 2,
    }
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}", train.REPLICAS_ENV: "CPU:2"}
    proc = start(job, out, env)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    # batch_size is per replica: 2 replicas x 8 = batches of 16 (24 training segments: 2 steps)
    assert "2 replicas: batches of 16 segments (batch_size 8 per replica)" in output
    assert "Using MirroredStrategy with devices" in output
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 2 and history["loss"].notna().all()
    assert (out / "model.keras").is_file()


def test_batch_size_rule_and_fingerprint_of_replicas(tmp_path):
    split_path = make_features(tmp_path)
    config = full_config(TINY_CONFIG)
    assert train.global_batch_size(32, 4) == 128
    one = train.fingerprint(config, split_path)
    assert train.fingerprint(config, split_path, replicas=1) == one
    assert train.fingerprint(config, split_path, replicas=2) != one
