"""From segments to tracks, the same in evaluation, prediction, serving and the pretrained
models' heads.

A model's answer for a track is the mean of what it gives for the track's segments. For most
models that is the segments' class probabilities. A model with a track head (musicnn
``pooling``, ``training.track_head``) gives per segment the moments of its embedding
(layer ``TRACK_MOMENTS``: ``[e, e * e]``); their mean over the track is exact under any
batching, and the head (sub-model ``TRACK_HEAD``) turns it into the track's probabilities.
Run on a single segment, such a model answers for a track of that one segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRACK_MOMENTS = "track_moments"
TRACK_HEAD = "track_head"
TEMPERATURE = "temperature"  # the layer dividing the logits (calibration)
UNSCALED_PROBS = "unscaled_probs"  # evaluation: the probabilities without T, beside those with
WITH_UNSCALED = "probs_with_unscaled"


def aggregate_tracks(probs: np.ndarray, tracks) -> tuple[list[str], np.ndarray]:
    """Mean segment outputs per track, tracks in order of first appearance."""
    tracks = np.asarray(tracks, dtype=object)
    order = list(dict.fromkeys(tracks.tolist()))
    index = {t: i for i, t in enumerate(order)}
    rows = np.array([index[t] for t in tracks])
    sums = np.zeros((len(order), probs.shape[1]), dtype=np.float64)
    np.add.at(sums, rows, probs)
    counts = np.bincount(rows, minlength=len(order))[:, None]
    return order, sums / counts


@dataclass
class SegmentsToTracks:
    """The part of a model run per segment and the part run per track (none: the mean of the
    segments' probabilities is the answer)."""

    per_segment: object  # keras.Model
    track_head: object | None = None

    @classmethod
    def of(cls, model) -> SegmentsToTracks:
        names = {layer.name for layer in model.layers}
        if TRACK_MOMENTS not in names:
            return cls(model)
        import keras

        moments = keras.Model(model.inputs, model.get_layer(TRACK_MOMENTS).output)
        return cls(moments, model.get_layer(TRACK_HEAD))

    def tracks(self, outputs: np.ndarray, owners) -> tuple[list[str], np.ndarray]:
        """``(tracks, probabilities)`` from the per-segment outputs and their tracks."""
        names, means = aggregate_tracks(outputs, owners)
        return names, self.finish(means)

    def finish(self, means: np.ndarray) -> np.ndarray:
        """Tracks' mean segment outputs -> their probabilities."""
        if self.track_head is None or not len(means):
            return means
        probs = self.track_head(np.asarray(means, dtype=np.float64), training=False)
        return np.asarray(probs, dtype=np.float64)


def temperature_of(model) -> float | None:
    """The calibration temperature of a model: of its track head, or of its segments'
    softmax (``training.calibration``); ``None``: not calibrated."""
    if TRACK_HEAD in {layer.name for layer in model.layers}:
        model = model.get_layer(TRACK_HEAD)
    if TEMPERATURE not in {layer.name for layer in model.layers}:
        return None
    return 1.0 / float(model.get_layer(TEMPERATURE).scale)
