"""Temperature scaling: the probabilities a saved model gives are calibrated on the val tracks.

A model whose track answer is the mean of its segments' probabilities has its final softmax
layer ("probs") split into its linear part ("logits"), a division by the temperature T (a
``Rescaling`` layer, ``TEMPERATURE``) and the softmax ("probs"); a track head
(``track_head.head_model``) has that layer already. T minimises the log loss of the val tracks'
answers (each the mean of its segments' scaled probabilities, or the head's answer on the
track), with the weak prior of ``track_head.fit_temperature_by``; a probe, whose fit saw the
val tracks, takes T from its cross-validation instead. Only built-in Keras layers, so the saved
model loads anywhere; no segment's top class changes, a track's can.
"""

from __future__ import annotations

import logging

import numpy as np

from genre_classification.aggregation import (
    TEMPERATURE,
    TRACK_HEAD,
    TRACK_MOMENTS,
    UNSCALED_PROBS,
    WITH_UNSCALED,
)
from genre_classification.training import dataset, embeddings
from genre_classification.training.model_kinds import kind_of, musicnn_options, track_pooled
from genre_classification.training.track_head import fit_temperature, track_log_loss

log = logging.getLogger(__name__)

PREDICT_BATCH = 256


def with_temperature(model, temperature: float):
    """``model`` with its logits divided by ``temperature``: a softmax ``Dense`` "probs" last
    layer is split into logits -> / T -> softmax (the same layers and weights up to the logits);
    a track head (``track_head.head_model``), or a model ending in one, gets its ``TEMPERATURE``
    layer set to T."""
    import keras
    from keras import layers

    names = {layer.name for layer in model.layers}
    if TRACK_HEAD in names:
        head = with_temperature(model.get_layer(TRACK_HEAD), temperature)
        return keras.Model(
            model.inputs, head(model.get_layer(TRACK_MOMENTS).output), name=model.name
        )
    if TEMPERATURE in names:
        config = model.get_config()
        for layer in config["layers"]:
            if layer["config"]["name"] == TEMPERATURE:
                layer["config"]["scale"] = 1.0 / float(temperature)
        copy = keras.Model.from_config(config)
        copy.set_weights(model.get_weights())
        return copy
    probs = model.get_layer("probs")
    if not isinstance(probs, layers.Dense):
        raise ValueError(f"model {model.name}: its 'probs' layer is not a softmax Dense layer")
    logits = layers.Dense(probs.units, dtype="float32", name="logits")
    x = logits(probs.input)
    logits.set_weights(probs.get_weights())
    x = layers.Rescaling(1.0 / float(temperature), dtype="float32", name=TEMPERATURE)(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(model.inputs, outputs, name=model.name)


def with_uncalibrated(model):
    """A ``with_temperature`` model whose output is followed by its probabilities before
    scaling (``UNSCALED_PROBS``, columns n_classes..2 n_classes): both in one pass, and the mean
    over a track's segments of each half is that track's answer with and without T."""
    import keras
    from keras import layers

    unscaled = layers.Activation("softmax", dtype="float32", name=UNSCALED_PROBS)(
        model.get_layer("logits").output
    )
    outputs = layers.Concatenate(dtype="float32", name=WITH_UNSCALED)([model.output, unscaled])
    return keras.Model(model.inputs, outputs, name=model.name)


def _val_log_probs(model, cfg: dict, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-probabilities, track index and class of every val segment (of every val track, for a
    track head: its answer on the track's mean moments)."""
    if kind_of(cfg).fits_on_embeddings:  # the head on the cached embeddings
        split = embeddings.EmbeddedSplit.of(cfg, data.train_rows, data.val_rows, data.labels)
        x, y, owners = split.head_inputs("val", track_pooled(cfg))
        probs = embeddings.head_of(model).predict(x, batch_size=4096, verbose=0)
    else:
        batches = dataset.eval_dataset(data.val, PREDICT_BATCH)
        probs = model.predict(batches, verbose=0)
        owners, y = np.asarray(data.val.tracks), np.asarray(data.val.y)
    log_probs = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    return log_probs, owners, y


def calibrated(model, cfg: dict, data):
    """``model`` temperature-scaled on the val tracks, logged; a probe by the T of its
    cross-validation's out-of-fold answers (``embeddings.probe_choice``: val is in its fit)."""
    if kind_of(cfg).fits_on_embeddings and musicnn_options(cfg)["mode"] == "probe":
        split = embeddings.EmbeddedSplit.of(cfg, data.train_rows, data.val_rows, data.labels)
        choice = embeddings.probe_choice(cfg, split)
        log.info(
            "calibration: temperature %.3f from the probe's cross-validation (%d folds)",
            choice.temperature, choice.folds,
        )  # fmt: skip
        return with_temperature(model, choice.temperature)
    log_probs, owners, y = _val_log_probs(model, cfg, data)
    before = track_log_loss(log_probs, owners, y, 1.0)
    temperature = fit_temperature(log_probs, owners, y)
    log.info(
        "calibration: temperature %.3f on %d val tracks (their log loss %.4f -> %.4f)",
        temperature, len(np.unique(owners)), before,
        track_log_loss(log_probs, owners, y, temperature),
    )  # fmt: skip
    return with_temperature(model, temperature)
