"""Training-time augmentation of log-mel segments: ``training.models.<name>.augment``.

* ``crop``: each example is a window of ``frames`` frames starting at a random offset
  ``o in [0, frames)`` inside its segment and running into the next segment of the same track
  (segments are cut contiguously, so segment i followed by i+1 is the continuous log-mel). The
  last segment of a track has no successor: its window is shifted back instead (it ends ``o``
  frames before the segment's end, running into the previous segment), so every segment's
  window covers the same range of shifts. A track of one segment keeps it (offset 0).
* ``time_mask`` / ``freq_mask``: SpecAugment masking. Per example, ``count`` spans of frames
  (mel bands), each of a width drawn from ``0..max_frames`` (``0..max_bands``), are set to the
  training set's mean of each band. The model's first layer normalises per band
  (``models._normalization``), so a masked value becomes 0 after it, the value SpecAugment
  masks with on normalised input, and the mask does not shift the band statistics.
* ``mixup``: with ``alpha > 0``, each example is mixed with a partner from the same batch (a
  random permutation of the batch): ``lam * a + (1 - lam) * b`` with ``lam ~ Beta(alpha,
  alpha)`` per example; labels become the same mix of one-hot vectors, so the model is compiled
  with categorical cross-entropy (``models.compile_model(soft_labels=True)``) and the validation
  labels are one-hot too (same loss value and accuracy as with integer labels).

Every random draw comes from ``numpy.random.default_rng([seed, epoch, index, stream])``: the
model's seed, the epoch, the step in the epoch and one stream per augmentation. The batches of an
epoch are a function of (seed, epoch) only, so a job resumed at epoch k sees exactly the batches
of an uninterrupted job, and switching one augmentation on does not change the draws of another.
"""

from __future__ import annotations

import copy
import math

import numpy as np

OFF = {
    "crop": False,
    "time_mask": {"count": 0, "max_frames": 0},
    "freq_mask": {"count": 0, "max_bands": 0},
    "mixup": 0.0,
}
STREAMS = {"crop": 0, "time_mask": 1, "freq_mask": 2, "mixup": 3}


def settings(config: dict | None) -> dict:
    """The ``augment`` entry of a model config with every key (missing ones: off)."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(OFF))
    if unknown:
        raise ValueError(f"unknown augment keys {unknown}; valid: {sorted(OFF)}")
    merged = copy.deepcopy(OFF)
    merged["crop"] = bool(config.get("crop", False))
    for mask in ("time_mask", "freq_mask"):
        merged[mask].update(config.get(mask) or {})
    merged["mixup"] = float(config.get("mixup") or 0.0)
    return merged


def is_active(augment: dict | None) -> bool:
    return settings(augment) != OFF


def check(augment: dict, n_mels: int, frames: int) -> None:
    """Raise ``ValueError`` if the masks do not fit segments of ``(n_mels, frames)``."""
    problems = []
    for mask, width, size, unit in (
        ("time_mask", "max_frames", frames, "frames per segment"),
        ("freq_mask", "max_bands", n_mels, "mel bands"),
    ):
        value = augment[mask][width]
        if value < 0 or augment[mask]["count"] < 0 or value > size:
            problems.append(f"augment.{mask}.{width} is {value}; the data has {size} {unit}")
    if augment["mixup"] < 0 or not math.isfinite(augment["mixup"]):
        problems.append(f"augment.mixup is {augment['mixup']}; use 0 (off) or alpha > 0")
    if problems:
        raise ValueError("; ".join(problems))


def rng(seed: int, epoch: int, index: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index, STREAMS[stream]])


# --- crop -------------------------------------------------------------------------------------


def crop_sources(tracks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For segments in track order (``tracks``: the track of each): ``(first, second,
    direction)``: the window of segment i lies in ``concat(x[first[i]], x[second[i]])``;
    direction 1: runs into the next segment, -1: shifted back into the previous one (last
    segment of a track), 0: a track of one segment."""
    tracks = np.asarray(tracks)
    n = len(tracks)
    same = tracks[1:] == tracks[:-1] if n else np.zeros(0, dtype=bool)
    has_next = np.append(same, False)
    has_prev = np.insert(same, 0, False)
    index = np.arange(n)
    direction = np.where(has_next, 1, np.where(has_prev, -1, 0))
    first = np.where(direction == -1, index - 1, index)
    second = np.where(direction == 1, index + 1, index)
    return first, second, direction


def crop(x: np.ndarray, first, second, direction, draws) -> np.ndarray:
    """Windows of ``frames`` frames: example j is ``concat(x[first[j]], x[second[j]])`` from
    ``draws[j]`` (direction 1), ``frames - draws[j]`` (direction -1) or 0 (direction 0)."""
    frames = x.shape[-1]
    start = np.where(direction == 1, draws, np.where(direction == -1, frames - draws, 0))
    pair = np.concatenate([x[first], x[second]], axis=-1)
    columns = (start[:, None] + np.arange(frames))[:, None, :]
    return np.take_along_axis(pair, columns, axis=-1)


# --- masks and mixup --------------------------------------------------------------------------


def mask_spans(
    generator: np.random.Generator, n: int, count: int, max_width: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, widths)``, each ``(n, count)``: widths uniform in ``0..max_width``, starts
    uniform among the positions where the span fits in ``size``."""
    widths = generator.integers(0, max_width + 1, size=(n, count))
    starts = generator.integers(0, size - widths + 1)
    return starts, widths


def span_mask(starts: np.ndarray, widths: np.ndarray, size: int) -> np.ndarray:
    """Boolean ``(n, size)``: True inside any of an example's spans."""
    positions = np.arange(size)
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])
    return inside.any(axis=1)


def mixup(
    generator: np.random.Generator, x: np.ndarray, y: np.ndarray, alpha: float, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, soft labels, lam)``: each example mixed with a partner from the batch."""
    lam = generator.beta(alpha, alpha, size=len(x)).astype(np.float32)
    partner = generator.permutation(len(x))
    one_hot = np.eye(n_classes, dtype=np.float32)[y]
    mixed_x = lam[:, None, None] * x + (1 - lam)[:, None, None] * x[partner]
    mixed_y = lam[:, None] * one_hot + (1 - lam)[:, None] * one_hot[partner]
    return mixed_x.astype(np.float32), mixed_y, lam


class Augmenter:
    """The augmentations of one model; ``band_mean``: the per-band training mean (mask value)."""

    def __init__(self, augment: dict, seed: int, band_mean, n_classes: int):
        self.augment = settings(augment)
        self.seed = seed
        self.band_mean = np.asarray(band_mean, dtype=np.float32).reshape(-1)
        self.n_classes = n_classes

    @property
    def crops(self) -> bool:
        return self.augment["crop"]

    @property
    def soft_labels(self) -> bool:
        return self.augment["mixup"] > 0

    def crop_examples(self, x, index, sources, epoch: int, step: int) -> np.ndarray:
        """Windows of the examples ``index`` of ``x`` (``sources``: ``crop_sources`` of x)."""
        first, second, direction = (s[index] for s in sources)
        draws = rng(self.seed, epoch, step, "crop").integers(0, x.shape[-1], size=len(index))
        return crop(x, first, second, direction, draws)

    def batch(self, x: np.ndarray, y: np.ndarray, epoch: int, step: int):
        """Masks and mixup for step ``step`` of ``epoch``: ``(x[..., None], labels)``."""
        x = np.array(x, dtype=np.float32)
        n = len(x)
        mean = self.band_mean[None, :, None]
        for key, width, axis in (("time_mask", "max_frames", 2), ("freq_mask", "max_bands", 1)):
            settings, length = self.augment[key], x.shape[axis]
            if settings["count"] and settings[width]:
                generator = rng(self.seed, epoch, step, key)
                spans = mask_spans(generator, n, settings["count"], settings[width], length)
                masked = span_mask(*spans, length)  # (n, length) along ``axis``
                x = np.where(np.expand_dims(masked, 3 - axis), mean, x)
        labels = np.asarray(y, dtype=np.int32)
        if self.soft_labels:
            generator = rng(self.seed, epoch, step, "mixup")
            x, labels, _ = mixup(generator, x, labels, self.augment["mixup"], self.n_classes)
        return x.astype(np.float32)[..., None], labels

    def signature(self, n_mels: int, frames: int):
        import tensorflow as tf

        labels = (
            tf.TensorSpec((None, self.n_classes), tf.float32)
            if self.soft_labels
            else tf.TensorSpec((None,), tf.int32)
        )
        return tf.TensorSpec((None, n_mels, frames, 1), tf.float32), labels
