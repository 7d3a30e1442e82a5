"""Temperature scaling of models whose track answer is the mean of segment probabilities.

A model's final softmax layer ("probs") is split into its linear part ("logits"), a division
by the temperature T (a ``Rescaling`` layer, ``TEMPERATURE``) and the softmax ("probs"); T
minimises the log loss of the val tracks' answers (each the mean of its segments' scaled
probabilities). Only built-in Keras layers, so the saved model loads anywhere; the argmax of
one segment does not change, a track's can. Track heads (``track_head``) carry their own T.
"""

from __future__ import annotations

import logging

import numpy as np

from genre_classification.aggregation import TEMPERATURE, aggregate_tracks
from genre_classification.training import dataset, embeddings
from genre_classification.training.model_kinds import kind_of
from genre_classification.training.track_head import fit_temperature_by

log = logging.getLogger(__name__)

PREDICT_BATCH = 256


def track_log_loss(log_probs: np.ndarray, owners: np.ndarray, y: np.ndarray, t: float) -> float:
    """Mean negative log-likelihood of the true classes of the tracks' answers, the mean of
    softmax(``log_probs`` / t) over each track's segments (``owners``: a segment's track index,
    ``y``: its class)."""
    z = log_probs / t
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    # a track's class is its segments': the mean of their true-class probability is its answer's
    _, answer = aggregate_tracks(p[np.arange(len(p)), y][:, None], owners)
    return float(-np.mean(np.log(np.clip(answer, 1e-300, 1.0))))


def fit_track_temperature(log_probs: np.ndarray, owners: np.ndarray, y: np.ndarray) -> float:
    """The T of ``track_log_loss`` over the tracks (``track_head.fit_temperature_by``)."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    owners = np.asarray(owners, dtype=np.int64)
    n_tracks = len(np.unique(owners))
    return fit_temperature_by(lambda t: track_log_loss(log_probs, owners, y, t), n_tracks)


def with_temperature(model, temperature: float):
    """``model`` (its last layer a softmax ``Dense`` "probs") as logits -> / T -> softmax: the
    same layers and weights up to the logits."""
    import keras
    from keras import layers

    probs = model.get_layer("probs")
    if not isinstance(probs, layers.Dense):
        raise ValueError(f"model {model.name}: its 'probs' layer is not a softmax Dense layer")
    logits = layers.Dense(probs.units, dtype="float32", name="logits")
    x = logits(probs.input)
    logits.set_weights(probs.get_weights())
    x = layers.Rescaling(1.0 / float(temperature), dtype="float32", name=TEMPERATURE)(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(model.inputs, outputs, name=model.name)


def without_temperature(model):
    """The probabilities of a ``with_temperature`` model before scaling (the same layers)."""
    import keras
    from keras import layers

    outputs = layers.Activation("softmax", dtype="float32", name="probs")(
        model.get_layer("logits").output
    )
    return keras.Model(model.inputs, outputs, name=model.name)


def _val_log_probs(model, cfg: dict, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-probabilities, track index and class of every val segment."""
    if kind_of(cfg).fits_on_embeddings:  # the head on the cached embeddings
        split = embeddings.EmbeddedSplit.of(cfg, data.train_rows, data.val_rows, data.labels)
        probs = embeddings.head_of(model).predict(split.x_val, batch_size=4096, verbose=0)
        owners = np.repeat(np.arange(len(split.val_counts)), split.val_counts)
        y = split.y_val
    else:
        batches = dataset.eval_dataset(data.val, PREDICT_BATCH)
        probs = model.predict(batches, verbose=0)
        owners, y = np.asarray(data.val.tracks), np.asarray(data.val.y)
    log_probs = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    return log_probs, owners, y


def calibrated(model, cfg: dict, data):
    """``model`` temperature-scaled on the val tracks (``cfg["calibrate"]``), logged."""
    log_probs, owners, y = _val_log_probs(model, cfg, data)
    before = track_log_loss(log_probs, owners, y, 1.0)
    temperature = fit_track_temperature(log_probs, owners, y)
    log.info(
        "calibration: temperature %.3f on %d val tracks (their log loss %.4f -> %.4f)",
        temperature, len(np.unique(owners)), before,
        track_log_loss(log_probs, owners, y, temperature),
    )  # fmt: skip
    return with_temperature(model, temperature)
