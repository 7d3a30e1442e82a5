"""From segments to tracks: a track's answer is the mean of its segments' probabilities, the
same in evaluation, prediction and the pretrained models' heads."""

from __future__ import annotations

import numpy as np


def aggregate_tracks(probs: np.ndarray, tracks) -> tuple[list[str], np.ndarray]:
    """Mean segment probabilities per track, tracks in order of first appearance."""
    tracks = np.asarray(tracks, dtype=object)
    order = list(dict.fromkeys(tracks.tolist()))
    index = {t: i for i, t in enumerate(order)}
    rows = np.array([index[t] for t in tracks])
    sums = np.zeros((len(order), probs.shape[1]), dtype=np.float64)
    np.add.at(sums, rows, probs)
    counts = np.bincount(rows, minlength=len(order))[:, None]
    return order, sums / counts
