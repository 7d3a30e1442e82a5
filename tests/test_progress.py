"""Progress of a long training epoch in the job's log."""

from __future__ import annotations

import logging

from genre_classification.training import train


def test_a_long_epoch_logs_its_progress(caplog):
    progress = train.progress_callback(steps=400, batch_size=32, every_s=0)
    with caplog.at_level(logging.INFO, logger="genre_classification.training.train"):
        progress.on_epoch_begin(2)
        for batch in range(100):
            progress.on_train_batch_end(batch)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 100
    assert lines[-1].startswith("epoch 3: 100 of 400 steps (25 %), ")
    assert "segments/s, about " in lines[-1] and lines[-1].endswith(" min left")


def test_progress_is_rate_limited(caplog):
    progress = train.progress_callback(steps=400, batch_size=32, every_s=3600)
    with caplog.at_level(logging.INFO, logger="genre_classification.training.train"):
        progress.on_epoch_begin(0)
        for batch in range(100):
            progress.on_train_batch_end(batch)
    assert not caplog.records
