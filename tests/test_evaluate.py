"""Track-level evaluation: aggregation, metrics, output files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from _training_data import make_features
from genre_classification import aggregation
from genre_classification.evaluation import evaluate

LABELS = ["blues", "metal", "pop"]


def test_aggregate_tracks_means_segment_probabilities():
    probs = np.array(
        [
            [0.6, 0.3, 0.1],  # track a
            [0.2, 0.7, 0.1],  # track b
            [0.0, 0.3, 0.7],  # track a
            [0.4, 0.5, 0.1],  # track b
        ]
    )
    tracks, mean = aggregation.aggregate_tracks(probs, ["x/a", "x/b", "x/a", "x/b"])
    assert tracks == ["x/a", "x/b"]
    np.testing.assert_allclose(mean, [[0.3, 0.3, 0.4], [0.3, 0.6, 0.1]])
    # a single confident segment does not win against the mean: argmax of track a is pop
    assert mean.argmax(axis=1).tolist() == [2, 1]


def test_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = evaluate.compute_metrics(y_true, y_pred, LABELS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # blues: P=1/2 R=1/2; metal: P=2/3 R=1; pop: P=1 R=1/2
    assert m["per_genre"]["blues"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_genre"]["metal"]["f1"] == pytest.approx(0.8)
    assert m["per_genre"]["pop"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_genre_absent_from_predictions_scores_zero():
    m = evaluate.compute_metrics(np.array([0, 1, 2]), np.array([0, 0, 0]), LABELS)
    assert m["per_genre"]["metal"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_genre_without_test_tracks_is_not_a_zero_in_the_macro_scores(caplog):
    from sklearn.metrics import f1_score

    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])  # no pop track
    with caplog.at_level("WARNING"):
        m = evaluate.compute_metrics(y_true, y_pred, LABELS)
    assert "no test tracks of ['pop']" in caplog.text
    assert m["macro_genres"] == ["blues", "metal"]
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["per_genre"]["pop"]["support"] == 0
    # predicted without test tracks: every such prediction is wrong, it counts with F1 0
    m = evaluate.compute_metrics(y_true, np.array([0, 2, 1, 1]), LABELS)
    assert m["macro_genres"] == LABELS
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_evaluate_writes_contract_files(tmp_path, monkeypatch):
    import keras

    from genre_classification.training import dataset, models

    split_path = make_features(tmp_path)
    split = dataset.read_split(split_path)
    train = dataset.load_segments(split[split.split == "train"], LABELS)
    model = models.build_model(
        "cnn", train.input_shape, 3, *dataset.band_stats(train), filters=(4,)
    )
    models.compile_model(model)
    model.save(tmp_path / "model.keras")
    keras.backend.clear_session()

    out = tmp_path / "eval"
    metrics = evaluate.evaluate(
        tmp_path / "model.keras",
        split_path,
        out / "metrics.json",
        out / "predictions.csv",
        out / "confusion_matrix.png",
        data_version_path=tmp_path / "data_version.json",
    )
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["macro_f1"] == metrics["macro_f1"]
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "per_genre"):
        assert key in on_disk
    assert on_disk["data_version"]["md5"] == "0123abcd"
    assert "git_commit" in on_disk
    assert sum(g["support"] for g in on_disk["per_genre"].values()) == 6  # 3 genres x 2 tracks
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns) == ["track", "true", "predicted"] + [f"prob_{g}" for g in LABELS]
    assert table["track"].iloc[0] == "blues/blues.00005"
    np.testing.assert_allclose(table.filter(like="prob_").sum(axis=1), 1.0, atol=1e-4)
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"

    # overlap 0 (the default) predicts the segments: the result of plain segment means
    test = dataset.load_segments(split[split.split == "test"], LABELS)
    model = keras.models.load_model(tmp_path / "model.keras")
    segment_probs = model.predict(test.x[..., None], batch_size=64, verbose=0)
    _, expect = aggregation.aggregate_tracks(segment_probs, test.tracks)
    np.testing.assert_array_equal(table.filter(like="prob_").to_numpy(), np.round(expect, 6))
    assert metrics["overlap"] == 0 and metrics["n_windows"] == metrics["n_segments"] == 12

    # read and predicted a few tracks at a time (memory: a chunk, not the split): the same
    # metrics and probabilities as the whole split at once
    monkeypatch.setattr(evaluate, "CHUNK_SEGMENTS", 3)
    chunked = evaluate.evaluate(
        tmp_path / "model.keras",
        split_path,
        out / "chunked" / "metrics.json",
        out / "chunked" / "predictions.csv",
        out / "chunked" / "confusion_matrix.png",
    )
    for key in ("accuracy", "macro_f1", "per_genre", "n_tracks", "n_segments", "n_windows"):
        assert chunked[key] == metrics[key]
    again = pd.read_csv(out / "chunked" / "predictions.csv")
    assert again["track"].tolist() == table["track"].tolist()
    np.testing.assert_allclose(again.filter(like="prob_"), table.filter(like="prob_"), atol=2e-6)
    monkeypatch.undo()

    # overlap 0.5: 2n-1 windows per track of n = 2 segments (20 frames: hop 10)
    half = evaluate.evaluate(
        tmp_path / "model.keras",
        split_path,
        out / "half" / "metrics.json",
        out / "half" / "predictions.csv",
        out / "half" / "confusion_matrix.png",
        overlap=0.5,
    )
    assert half["n_segments"] == 12 and half["n_windows"] == 6 * 3
    windows, owners = dataset.track_windows(test.x, test.tracks, 0.5)
    _, expect = aggregation.aggregate_tracks(model.predict(windows[..., None], verbose=0), owners)
    table = pd.read_csv(out / "half" / "predictions.csv")
    np.testing.assert_allclose(table.filter(like="prob_").to_numpy(), expect, atol=2e-6)
