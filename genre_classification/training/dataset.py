"""Input pipeline: per-file HDF5 log-mel segments (see docs/CONTRACTS.md) into ``tf.data``.

Training and validation batches come from one pipeline (``train_dataset``, ``eval_dataset``)
over either of two stores of the same segments in the same order:

* ``PackedSegments`` (default, ``streaming: true``): read per batch from the shards' packed
  arrays (``genre_classification.features.packs``) by the native pack reader (``pack_op``) or
  parallel Python readers; memory is a few batches, whatever the size of the collection.
* ``Segments`` (``streaming: false``): every training segment read into one float32 array first
  (1,000 tracks x 10 segments x 128 x 129 x 4 bytes = 660 MB).

Shuffling is a pure function of ``(seed, epoch)`` (not of how many epochs this process has run),
so a training job resumed at epoch k sees exactly the batches an uninterrupted job would see, and
both stores give the same batches. An optional ``augment.Augmenter`` (crops, masks, mixup) draws
from (seed, epoch, step) too.
Normalisation statistics are per mel band, computed on the training split only; the model
applies them in its first layer (``keras.layers.Normalization``), so a saved model is
self-contained.

TensorFlow is imported inside the functions that need it so that importing this module is cheap.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from genre_classification.columns import SPLIT_COLUMNS
from genre_classification.features import pack_op
from genre_classification.features.features import DATASET, read_features
from genre_classification.features.packs import PackReader, band_sums, read_index, sums_path
from genre_classification.features.shards import collect_records
from genre_classification.training.augment import Augmenter, crop_sources

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


class PackedSegments:
    """The segments of a set of tracks (rows of the split table) read on demand from the
    shards' packs (``packs.PackReader``): the same order as ``load_segments`` (tracks in row
    order, each track's segments in file order), without holding them. ``x[index]`` reads
    segments; ``tracks`` numbers the tracks (``track_ids`` names them); ``load()`` reads them
    all into a ``Segments``."""

    def __init__(self, rows: pd.DataFrame, labels: list[str], packs):

        index = read_index(packs).set_index("features")
        missing = sorted(set(rows["features"]) - set(index.index))
        if missing:
            raise ValueError(
                f"{len(missing)} feature files of the split are in no pack, e.g. {missing[:3]}: "
                "their shard's pack is older than its features (rerun snakemake)"
            )
        found = index.loc[rows["features"]]
        counts = found["n_segments"].to_numpy(dtype=np.int64)
        expected = rows["n_segments"].to_numpy(dtype=np.int64)
        if not np.array_equal(counts, expected):
            bad = rows["features"].to_numpy()[counts != expected][:3]
            raise ValueError(f"split and packs disagree on the segment count of {list(bad)}")
        starts = np.repeat(found["first_row"].to_numpy(dtype=np.int64), counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        self._entries = found[["pack", "entry"]].to_numpy(dtype=np.int64)
        self._packs = np.repeat(found["pack"].to_numpy(dtype=np.int32), counts)
        self._rows = starts + within
        class_of = {genre: i for i, genre in enumerate(labels)}
        self.y = np.repeat(np.array([class_of[g] for g in rows["genre"]], np.int32), counts)
        self.tracks = np.repeat(np.arange(len(rows), dtype=np.int32), counts)
        self.track_ids = [track_id(g, t) for g, t in zip(rows["genre"], rows["track"], strict=True)]
        self.labels = labels
        self._reader = PackReader(packs)
        self.x = _PackedArray(self)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self._reader.segment_shape, 1)

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self._reader.segment_shape)) * 4

    def band_sums(self) -> np.ndarray:
        """``packs.band_sums`` of all these segments, from the packs' per-file sums (one
        pack's sums in memory at a time)."""

        total = 0.0
        for pack in np.unique(self._entries[:, 0]):
            path = sums_path(self._reader.paths[pack])
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: rerun snakemake to rebuild its pack")
            entries = self._entries[self._entries[:, 0] == pack, 1]
            total = total + np.load(path)[entries].sum(axis=0)
        return total

    def read(self, index) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        return self._reader.read(self._packs[index], self._rows[index])

    def native_read(self, n_classes: int | None = None):
        """``read(index)`` -> ``(x[..., None], y)`` as TensorFlow ops (the native pack reader,
        ``pack_op``), ``y`` one-hot with ``n_classes``; ``None`` where the op is not available."""

        read_rows = pack_op.reader(self._reader)
        if read_rows is None:
            return None
        import tensorflow as tf

        packs, rows, y = tf.constant(self._packs), tf.constant(self._rows), tf.constant(self.y)

        def read(index):
            labels = tf.gather(y, index)
            if n_classes is not None:
                labels = tf.one_hot(labels, n_classes, dtype=tf.float32)
            x = read_rows(tf.gather(packs, index), tf.gather(rows, index))
            return tf.expand_dims(x, -1), labels

        return read

    def load(self) -> Segments:
        x = self.read(np.arange(len(self)))
        return Segments(
            x, self.y, np.asarray(self.track_ids, dtype=object)[self.tracks], self.labels
        )


class _PackedArray:
    """``x[index]`` and ``x.shape`` of packed segments (what ``augment`` needs of an array)."""

    def __init__(self, segments: PackedSegments):
        self._segments = segments

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(len(self._segments))[index]
        return self._segments.read(index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._segments), *self._segments.input_shape[:-1])


def band_stats(data, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-band mean and variance over segments and frames of ``data``: of
    ``PackedSegments`` from the packs' per-file sums (nothing read but the sums); of
    ``Segments`` ``chunk`` segments at a time."""

    if isinstance(data, PackedSegments):
        total, total_sq = data.band_sums()
    else:
        total, total_sq = sum(
            band_sums(data.x[start : start + chunk]) for start in range(0, len(data), chunk)
        )
    count = len(data) * data.input_shape[1]
    mean = total / count
    return mean, np.maximum(total_sq / count - mean**2, 0.0)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` training examples in ``epoch``: depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def _batches(read, order_of, epochs: range, n: int, batch_size, signature, readers, native=None):
    """The batches of ``batch_size`` examples of each epoch in ``epochs``, in the order
    ``order_of(epoch)`` (a permutation of the ``n`` examples; the last batch of an epoch may be
    smaller): ``read(index, epoch, step)`` (NumPy) of each, by ``readers`` threads in parallel,
    in order (``None``: tf.data's autotuning); or ``native(index)`` (TensorFlow ops, the same
    batches without Python per batch) where given. Python runs once per epoch (its order);
    batching the order is tf.data's own (a Python generator per batch measured half as fast).
    One read per batch: larger reads per call measured slower."""
    import tensorflow as tf

    def epoch_batches(epoch):
        order = tf.numpy_function(lambda e: order_of(int(e)), [epoch], tf.int64)
        batches = tf.data.Dataset.from_tensor_slices(tf.ensure_shape(order, (n,))).batch(batch_size)
        if native is not None:  # needs only the index: no stage numbering the steps
            return batches
        return batches.enumerate().map(lambda step, index: (index, epoch, step))

    ds = tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(epoch_batches)
    # a known length: Keras then stops at the last batch instead of asking for one more
    ds = ds.apply(
        tf.data.experimental.assert_cardinality(len(epochs) * steps_per_epoch(n, batch_size))
    )

    def call(*batch):
        if native is not None:
            x, y = native(*batch)
        else:
            x, y = tf.numpy_function(
                lambda i, e, s: read(i, int(e), int(s)), batch, [spec.dtype for spec in signature]
            )
        return tf.ensure_shape(x, signature[0].shape), tf.ensure_shape(y, signature[1].shape)

    ds = ds.map(call, num_parallel_calls=readers or tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _signature(data, n_classes: int | None):
    import tensorflow as tf

    labels = (
        tf.TensorSpec((None,), tf.int32)
        if n_classes is None
        else tf.TensorSpec((None, n_classes), tf.float32)
    )
    return tf.TensorSpec((None, *data.input_shape), tf.float32), labels


def train_dataset(
    data,
    batch_size: int,
    seed: int,
    initial_epoch: int,
    epochs: int,
    augmenter: Augmenter | None = None,
    readers: int | None = None,
):
    """Shuffled batches for epochs ``initial_epoch .. epochs-1`` as one dataset, from
    ``Segments`` in memory or ``PackedSegments`` on disk (the same batches from both).

    Use with ``model.fit(ds, epochs=epochs, initial_epoch=initial_epoch,
    steps_per_epoch=steps_per_epoch(len(data), batch_size))``. The order of epoch e is
    ``epoch_permutation(len(data), seed, e)``; ``augmenter`` crops, masks and mixes each batch
    with draws from (seed, epoch, step). Batches are read by ``readers`` threads (default:
    tf.data's autotuning), in order; memory holds a few batches, not the data.
    """
    n = len(data)
    sources = crop_sources(data.tracks) if augmenter is not None and augmenter.crops else None

    def read(index, epoch, step):
        if augmenter is None:
            return data.x[index][..., None], data.y[index]
        if sources is None:
            x = data.x[index]
        else:
            x = augmenter.crop_examples(data.x, index, sources, epoch, step)
        return augmenter.batch(x, data.y[index], epoch, step)

    n_classes = augmenter.n_classes if augmenter is not None and augmenter.soft_labels else None
    signature = _signature(data, n_classes)
    order_of = partial(epoch_permutation, n, seed)
    native = data.native_read() if augmenter is None and isinstance(data, PackedSegments) else None
    epoch_range = range(initial_epoch, epochs)
    return _batches(read, order_of, epoch_range, n, batch_size, signature, readers, native)


def eval_dataset(data, batch_size: int, n_classes: int | None = None, readers: int | None = None):
    """Batches in order, no shuffling (validation), from ``Segments`` or ``PackedSegments``.
    ``n_classes``: one-hot labels (for a model trained with soft labels, see ``augment.mixup``)."""
    eye = None if n_classes is None else np.eye(n_classes, dtype=np.float32)

    def read(index, epoch, step):
        y = data.y[index]
        return data.x[index][..., None], y if eye is None else eye[y]

    n = len(data)
    signature = _signature(data, n_classes)
    native = data.native_read(n_classes) if isinstance(data, PackedSegments) else None
    in_order = partial(np.arange, n)
    return _batches(read, lambda _: in_order(), range(1), n, batch_size, signature, readers, native)


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
