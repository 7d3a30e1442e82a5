"""Temperature scaling of segment-averaged models (``training.calibration``): the fit, the
saved model's arithmetic, and a trained model's metrics before and after."""

import json

import numpy as np
import pandas as pd

from _training_data import TINY_CONFIG, make_features, train_tiny
from genre_classification import aggregation
from genre_classification.evaluation import evaluate
from genre_classification.training import calibration, dataset, track_head


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_track_temperature_is_recovered_from_overconfident_segments():
    rng = np.random.default_rng(0)
    n_tracks, per_track, n_classes = 600, 3, 4
    owners = np.repeat(np.arange(n_tracks), per_track)
    centre = rng.normal(0, 1.2, (n_tracks, n_classes))[owners]
    z = centre + rng.normal(0, 0.8, (len(owners), n_classes))  # the true segment logits
    _, answers = aggregation.aggregate_tracks(softmax(z), owners)
    track_y = np.array([rng.choice(n_classes, p=p / p.sum()) for p in answers])
    y = track_y[owners]
    overconfident = np.log(softmax(3.0 * z))  # what a model three times too sure gives

    t = track_head.fit_temperature(overconfident, owners, y)
    assert 2.4 < t < 3.6
    loss = track_head.track_log_loss
    assert loss(overconfident, owners, y, t) < loss(overconfident, owners, y, 1.0) - 0.05
    assert abs(loss(overconfident, owners, y, t) - loss(np.log(softmax(z)), owners, y, 1.0)) < 0.05


def test_a_few_val_tracks_all_right_do_not_make_the_model_ever_surer():
    rng = np.random.default_rng(2)
    owners = np.repeat(np.arange(12), 2)
    y = np.repeat(np.arange(12) % 3, 2)
    log_probs = np.log(softmax(rng.normal(0, 0.3, (24, 3)) + 2.0 * np.eye(3)[y]))  # all right
    loss = track_head.track_log_loss
    assert loss(log_probs, owners, y, 0.05) < loss(log_probs, owners, y, 0.3)  # the data alone
    t = track_head.fit_temperature(log_probs, owners, y)
    assert 0.3 < t < 1.0  # surer, within the prior's reach


def test_scaled_model_is_softmax_of_logits_over_t_and_survives_saving(tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape=(6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="probs")(hidden))
    x = np.random.default_rng(1).normal(size=(50, 6)).astype("float32")
    before = model.predict(x, verbose=0)
    kernel, bias = model.get_layer("probs").get_weights()
    logits = np.maximum(model.layers[1](x).numpy(), 0) @ kernel + bias

    scaled = calibration.with_temperature(model, 2.5)
    after = scaled.predict(x, verbose=0)
    np.testing.assert_allclose(after, softmax(logits / 2.5), atol=1e-5)
    assert (after.argmax(1) == before.argmax(1)).all()  # a segment's answer is kept
    assert after.max(1).mean() < before.max(1).mean()  # T > 1: less sure
    both = calibration.with_uncalibrated(scaled).predict(
        x, verbose=0
    )  # one pass, with and without T
    np.testing.assert_allclose(both, np.hstack([after, before]), atol=1e-6)

    scaled.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert abs(aggregation.temperature_of(loaded) - 2.5) < 1e-6
    np.testing.assert_allclose(loaded.predict(x, verbose=0), after, atol=1e-6)
    assert aggregation.temperature_of(model) is None


def test_trained_model_is_calibrated_on_val_and_reports_ece_before_and_after(tmp_path):
    import keras
    import mlflow

    split_path = make_features(
        tmp_path / "data", tracks_per_split=(("train", 6), ("val", 4), ("test", 3))
    )
    config = {**TINY_CONFIG, "epochs": 6}
    info, uri = train_tiny(config, split_path, tmp_path, "cnn", "calibration-test")
    model_path = tmp_path / "models/cnn/model.keras"
    model = keras.models.load_model(model_path)
    t = aggregation.temperature_of(model)
    assert t is not None and 0.05 <= t <= 20
    params = mlflow.MlflowClient(tracking_uri=uri).get_run(info["run_id"]).data.params
    assert float(params["calibration.temperature"]) == round(t, 4)

    # T is fitted on the val tracks' segment probabilities of the unscaled model
    split = dataset.read_split(split_path)
    labels = sorted(split.genre.unique())
    val = dataset.load_segments(split[split.split == "val"], labels)
    both = calibration.with_uncalibrated(model)

    def unscaled(x):
        return both.predict(x[..., None], verbose=0)[:, len(labels) :]

    log_probs = np.log(np.clip(unscaled(val.x), 1e-12, 1))
    owners = pd.factorize(val.tracks)[0]
    assert abs(track_head.fit_temperature(log_probs, owners, val.y) - t) < 1e-6 * t

    metrics = evaluate.evaluate(
        model_path,
        split_path,
        tmp_path / "eval/metrics.json",
        tmp_path / "eval/predictions.csv",
        tmp_path / "eval/confusion_matrix.png",
    )
    assert metrics["temperature"] == t
    test = dataset.load_segments(split[split.split == "test"], labels)
    truth = [
        labels.index(g) for g in pd.Series(test.tracks).drop_duplicates().str.split("/").str[0]
    ]
    _, before = aggregation.aggregate_tracks(unscaled(test.x), test.tracks)
    _, after = aggregation.aggregate_tracks(
        model.predict(test.x[..., None], verbose=0), test.tracks
    )
    assert metrics["ece_uncalibrated"] == evaluate.expected_calibration_error(before, truth)
    assert metrics["ece"] == evaluate.expected_calibration_error(after, truth)
    assert json.loads((tmp_path / "eval/metrics.json").read_text())["temperature"] == t

    # calibrate: false keeps the softmax as trained
    train_tiny({**config, "calibrate": False}, split_path, tmp_path, "raw", "calibration-test")
    raw = keras.models.load_model(tmp_path / "models/raw/model.keras")
    assert aggregation.temperature_of(raw) is None
    assert "logits" not in {layer.name for layer in raw.layers}
