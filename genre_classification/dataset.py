"""Input pipeline: per-file HDF5 log-mel segments (see docs/CONTRACTS.md) into ``tf.data``.

Two paths:

* in memory (default): every segment of a split is read once with h5py into one float32 array,
  then batches are gathered from it; fast for GTZAN-size data (1000 tracks x 10 segments x
  128 x 129 x 4 bytes = 660 MB).
* streaming (``streaming_train_dataset``): a ``from_generator`` pipeline that reads the HDF5 files
  of each epoch in shuffled order, for data larger than RAM.

Shuffling is a pure function of ``(seed, epoch)`` (not of how many epochs this process has run),
so a training job resumed at epoch k sees exactly the batches an uninterrupted job would see.
Both paths take an optional ``augment.Augmenter`` (crops, masks, mixup), whose draws are
functions of (seed, epoch, step) too.
Normalisation statistics are per mel band, computed on the training split only; the model
applies them in its first layer (``keras.layers.Normalization``), so a saved model is
self-contained.

TensorFlow is imported inside the functions that need it so that importing this module is cheap.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from genre_classification.augment import Augmenter, crop_sources
from genre_classification.columns import SPLIT_COLUMNS
from genre_classification.features import DATASET, read_features

log = logging.getLogger(__name__)


def read_split(path: str | Path, feature_records=None) -> pd.DataFrame:
    """The split manifest ``results/split/split.tsv`` with the contract's columns.

    ``feature_records``: the shard records of another feature set (``results/features-<set>/
    .shards/*.tsv``); the tracks then point at that set's files, and a track the set could not
    use (rejected there, e.g. too short for its segments) is left out with a warning.
    """
    split = pd.read_csv(path, sep="\t", dtype={"genre": str, "track": str, "split": str})
    missing = [c for c in SPLIT_COLUMNS if c not in split.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    bad = sorted(set(split["split"]) - {"train", "val", "test"})
    if bad:
        raise ValueError(f"{path}: unknown split names {bad}")
    return with_feature_set(split, feature_records) if feature_records else split


def with_feature_set(split: pd.DataFrame, feature_records) -> pd.DataFrame:
    from genre_classification.shards import collect_records

    accepted, _ = collect_records(feature_records)
    files = {(r["genre"], r["track"]): (r["features"], int(r["n_segments"])) for r in accepted}
    keys = list(zip(split["genre"], split["track"], strict=True))
    unusable = [f"{genre}/{track}" for genre, track in keys if (genre, track) not in files]
    if unusable:
        log.warning(
            "%d tracks have no file in this feature set and are left out: %s",
            len(unusable), ", ".join(unusable[:10]),
        )  # fmt: skip
    split = split[[key in files for key in keys]].copy()
    usable = [files[key] for key in zip(split["genre"], split["track"], strict=True)]
    split["features"] = [path for path, _ in usable]
    split["n_segments"] = [n for _, n in usable]
    return split


def genre_labels(split: pd.DataFrame) -> list[str]:
    """Class names = sorted genre names; the class index of a genre is its position here."""
    return sorted(split["genre"].unique())


def track_id(genre: str, track: str) -> str:
    return f"{genre}/{track}"


@dataclass
class Segments:
    """All segments of a set of tracks. ``x``: (n, n_mels, frames) float32; ``y``: class index."""

    x: np.ndarray
    y: np.ndarray
    tracks: np.ndarray  # track id (genre/track) of each segment
    labels: list[str]

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.x.shape[1:], 1)


def _read_file(path: str | Path, genre: str) -> np.ndarray:
    x, attrs = read_features(path)
    label = attrs.get("label")
    if isinstance(label, bytes):
        label = label.decode()
    if label is not None and label != genre:
        raise ValueError(f"{path}: label attribute {label!r} != split genre {genre!r}")
    if x.ndim != 3:
        raise ValueError(
            f"{path}: {DATASET} has shape {x.shape}, want (n_segments, n_mels, frames)"
        )
    return x.astype(np.float32, copy=False)


def load_segments(rows: pd.DataFrame, labels: list[str]) -> Segments:
    """Read every segment of the tracks in ``rows`` (a subset of the split manifest) into memory."""
    index = {genre: i for i, genre in enumerate(labels)}
    xs, ys, tracks = [], [], []
    for row in rows.itertuples(index=False):
        x = _read_file(row.features, row.genre)
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise ValueError(f"{row.features}: segment shape {x.shape[1:]} != {xs[0].shape[1:]}")
        xs.append(x)
        ys.append(np.full(len(x), index[row.genre], dtype=np.int32))
        tracks.extend([track_id(row.genre, row.track)] * len(x))
    if not xs:
        raise ValueError("no tracks to load")
    return Segments(
        np.concatenate(xs), np.concatenate(ys), np.asarray(tracks, dtype=object), labels
    )


def band_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-band mean and variance over segments and frames of ``x`` (n, n_mels, frames)."""
    x64 = x.astype(np.float64)
    return x64.mean(axis=(0, 2)), x64.var(axis=(0, 2))


def band_stats_from_files(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Same as ``band_stats`` but streamed file by file (constant memory)."""
    total = total_sq = None
    count = 0
    for row in rows.itertuples(index=False):
        x = _read_file(row.features, row.genre).astype(np.float64)
        s, sq = x.sum(axis=(0, 2)), (x**2).sum(axis=(0, 2))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[0] * x.shape[2]
    mean = total / count
    return mean, np.maximum(total_sq / count - mean**2, 0.0)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` training examples in ``epoch``: depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def train_dataset(
    data: Segments,
    batch_size: int,
    seed: int,
    initial_epoch: int,
    epochs: int,
    augmenter: Augmenter | None = None,
):
    """Shuffled batches for epochs ``initial_epoch .. epochs-1`` as one dataset.

    Use with ``model.fit(ds, epochs=epochs, initial_epoch=initial_epoch,
    steps_per_epoch=steps_per_epoch(len(data), batch_size))``. With ``augmenter`` the batches
    are built in NumPy (same example order) and augmented.
    """
    import tensorflow as tf

    if augmenter is not None:
        return _augmented_train_dataset(data, batch_size, seed, initial_epoch, epochs, augmenter)

    perms = np.stack(
        [epoch_permutation(len(data), seed, e) for e in range(initial_epoch, epochs)]
    ).astype(np.int64)
    x = tf.constant(data.x)
    y = tf.constant(data.y)

    def gather(idx):
        return tf.expand_dims(tf.gather(x, idx), -1), tf.gather(y, idx)

    ds = tf.data.Dataset.from_tensor_slices(perms).flat_map(
        lambda p: tf.data.Dataset.from_tensor_slices(p).batch(batch_size)
    )
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE
    )


def _augmented_train_dataset(
    data: Segments,
    batch_size: int,
    seed: int,
    initial_epoch: int,
    epochs: int,
    augmenter: Augmenter,
):
    import tensorflow as tf

    n = len(data)
    sources = crop_sources(data.tracks) if augmenter.crops else None

    def batches():
        for epoch in range(initial_epoch, epochs):
            order = epoch_permutation(n, seed, epoch)
            for step in range(steps_per_epoch(n, batch_size)):
                index = order[step * batch_size : (step + 1) * batch_size]
                if sources is None:
                    x = data.x[index]
                else:
                    x = augmenter.crop_examples(data.x, index, sources, epoch, step)
                yield augmenter.batch(x, data.y[index], epoch, step)

    signature = augmenter.signature(*data.x.shape[1:])
    ds = tf.data.Dataset.from_generator(batches, output_signature=signature)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(data: Segments, batch_size: int, n_classes: int | None = None):
    """Batches in file order, no shuffling (validation, test). ``n_classes``: one-hot labels
    (for a model trained with soft labels, see ``augment.mixup``)."""
    import tensorflow as tf

    y = data.y if n_classes is None else np.eye(n_classes, dtype=np.float32)[data.y]
    ds = tf.data.Dataset.from_tensor_slices((data.x, y)).batch(batch_size)
    return ds.map(lambda x, y: (tf.expand_dims(x, -1), y)).prefetch(tf.data.AUTOTUNE)


def streaming_train_dataset(
    rows: pd.DataFrame,
    labels: list[str],
    batch_size: int,
    seed: int,
    initial_epoch: int,
    epochs: int,
    shuffle_buffer: int = 2048,
    augmenter: Augmenter | None = None,
):
    """Like ``train_dataset`` but reads the HDF5 files while iterating (memory ~ shuffle_buffer).

    Each epoch visits the files in an order drawn from (seed, epoch) and shuffles segments in a
    buffer of ``shuffle_buffer`` with the same RNG, so it is as reproducible as the in-memory path
    (but a different order from it). Returns ``(dataset, steps_per_epoch)``.

    ``augmenter``: every augmentation is supported; crops are cut when a file is read (their
    offsets drawn from (seed, epoch, file index)), masks and mixup per batch (seed, epoch, step).
    """
    import tensorflow as tf

    index = {genre: i for i, genre in enumerate(labels)}
    files = list(rows[["features", "genre"]].itertuples(index=False, name=None))
    n_segments = int(rows["n_segments"].sum())
    seg_shape = _read_file(*files[0]).shape[1:]

    def epoch_segments(epoch: int):
        rng = np.random.default_rng([seed, epoch])
        buffer_x: list[np.ndarray] = []
        buffer_y: list[int] = []
        for f in rng.permutation(len(files)):
            path, genre = files[f]
            segments = _read_file(path, genre)
            if augmenter is not None and augmenter.crops:
                segments = augmenter.crop_track(segments, epoch, int(f))
            for segment in segments:
                buffer_x.append(segment)
                buffer_y.append(index[genre])
                if len(buffer_x) >= shuffle_buffer:
                    j = int(rng.integers(len(buffer_x)))
                    buffer_x[j], buffer_x[-1] = buffer_x[-1], buffer_x[j]
                    buffer_y[j], buffer_y[-1] = buffer_y[-1], buffer_y[j]
                    yield buffer_x.pop(), buffer_y.pop()
        for j in rng.permutation(len(buffer_x)):
            yield buffer_x[j], buffer_y[j]

    def batch(xb, yb, epoch, step):
        if augmenter is None:
            return np.stack(xb)[..., None], np.asarray(yb, dtype=np.int32)
        return augmenter.batch(np.stack(xb), np.asarray(yb), epoch, step)

    def batches():
        for epoch in range(initial_epoch, epochs):
            xb, yb, step = [], [], 0
            for x, y in epoch_segments(epoch):
                xb.append(x)
                yb.append(y)
                if len(xb) == batch_size:
                    yield batch(xb, yb, epoch, step)
                    xb, yb, step = [], [], step + 1
            if xb:
                yield batch(xb, yb, epoch, step)

    if augmenter is None:
        signature = (
            tf.TensorSpec((None, *seg_shape, 1), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        )
    else:
        signature = augmenter.signature(*seg_shape)
    ds = tf.data.Dataset.from_generator(batches, output_signature=signature)
    return ds.prefetch(tf.data.AUTOTUNE), steps_per_epoch(n_segments, batch_size)


# --- test-time windows ------------------------------------------------------------------------


def overlap_windows(segments: np.ndarray, overlap: float) -> np.ndarray:
    """The windows one track is predicted on: ``(n, n_mels, frames)`` contiguous segments ->
    ``(m, n_mels, frames)`` windows of the track's continuous log-mel (the segments joined in
    time) starting every ``hop = floor(frames * (1 - overlap))`` frames, from frame 0 while a
    whole window fits. ``overlap`` 0 returns the segments themselves; 0.5 gives 2n-1 windows
    when ``frames`` is even (about 2n-1 otherwise)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    n, n_mels, frames = segments.shape
    hop = max(1, math.floor(frames * (1 - overlap) + 1e-9))
    if hop >= frames or n < 2:
        return segments
    continuous = segments.transpose(1, 0, 2).reshape(n_mels, n * frames)
    starts = np.arange(0, n * frames - frames + 1, hop)
    windows = np.lib.stride_tricks.sliding_window_view(continuous, frames, axis=1)[:, starts]
    return np.ascontiguousarray(windows.transpose(1, 0, 2))


def track_windows(x: np.ndarray, tracks, overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """``overlap_windows`` of every track of ``x`` (segments grouped by track, in order, as
    ``load_segments`` returns them): ``(windows, track of each window)``."""
    tracks = np.asarray(tracks, dtype=object)
    if overlap == 0 or not len(tracks):
        return x, tracks
    bounds = [*np.flatnonzero(tracks[1:] != tracks[:-1]) + 1, len(tracks)]
    windows, owners, start = [], [], 0
    for end in bounds:
        w = overlap_windows(x[start:end], overlap)
        windows.append(w)
        owners.extend([tracks[start]] * len(w))
        start = end
    return np.concatenate(windows), np.asarray(owners, dtype=object)
