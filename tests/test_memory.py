"""A job's memory request is true: an in-memory training job whose data does not fit the
memory it declared fails at start, naming the settings to change."""

from __future__ import annotations

import pytest

from _training_data import TINY_CONFIG, full_config, make_features, packs_beside
from genre_classification.training import train


def test_check_memory_names_the_settings():
    train.check_memory(10**6, train.TRAINING_BASE_MB + 1, "cnn")  # fits
    train.check_memory(10**12, None, "cnn")  # nothing declared (a library call)
    with pytest.raises(MemoryError) as error:
        train.check_memory(5 * 10**9, 4000, "cnn")
    message = str(error.value)
    assert "training.models.cnn.streaming: true" in message
    assert "training.resources.mem_mb" in message and "mem_mb=4,000" in message
    assert f"{5000 + train.TRAINING_BASE_MB:,}" in message


def test_in_memory_job_that_does_not_fit_fails_before_training(tmp_path):
    split_path = make_features(tmp_path)
    paths = train.TrainingPaths(
        split=split_path,
        model=tmp_path / "model.keras",
        history=tmp_path / "history.csv",
        run_info=tmp_path / "run.json",
        checkpoint_dir=tmp_path / "checkpoints",
        packs=packs_beside(split_path),
    )
    cfg = full_config({**TINY_CONFIG, "streaming": False})
    with pytest.raises(MemoryError, match="streaming: true"):
        train.load_data(paths, cfg, "tiny", mem_mb=train.TRAINING_BASE_MB)
    # the same job with the memory it needs loads its segments into memory
    data = train.load_data(paths, cfg, "tiny", mem_mb=train.TRAINING_BASE_MB + 10)
    assert data.train.x.shape == (24, 16, 20)
    # streaming (the default) reads per batch: no memory check, nothing loaded
    data = train.load_data(paths, full_config(TINY_CONFIG), "tiny", mem_mb=1)
    assert not hasattr(data.train.x, "dtype")
