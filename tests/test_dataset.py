"""Input pipeline: split manifest, HDF5 loading, label mapping, normalisation, tf.data batches."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from _training_data import GENRES, make_features
from genre_classification import dataset


@pytest.fixture
def split_path(tmp_path):
    return make_features(tmp_path)


def test_split_and_labels(split_path):
    split = dataset.read_split(split_path)
    assert dataset.genre_labels(split) == sorted(GENRES)
    assert set(split["split"]) == {"train", "val", "test"}


def test_read_split_rejects_missing_columns(tmp_path):
    bad = tmp_path / "split.tsv"
    bad.write_text("genre\ttrack\nblues\tb1\n")
    with pytest.raises(ValueError, match="missing columns"):
        dataset.read_split(bad)


def test_load_segments_shapes_and_labels(split_path):
    split = dataset.read_split(split_path)
    labels = dataset.genre_labels(split)
    train = dataset.load_segments(split[split.split == "train"], labels)
    assert train.x.shape == (3 * 4 * 2, 16, 20)
    assert train.x.dtype == np.float32
    assert train.input_shape == (16, 20, 1)
    assert train.tracks[0] == "blues/blues.00000"
    for track, y in zip(train.tracks, train.y, strict=True):
        assert labels[y] == track.split("/")[0]


def test_label_attribute_must_match_split(split_path):
    split = dataset.read_split(split_path)
    with h5py.File(split.features[0], "a") as h5:
        h5.attrs["label"] = "jazz"
    with pytest.raises(ValueError, match="label attribute"):
        dataset.load_segments(split, dataset.genre_labels(split))


def test_band_stats_in_memory_equals_streaming(split_path):
    split = dataset.read_split(split_path)
    train_rows = split[split.split == "train"]
    data = dataset.load_segments(train_rows, dataset.genre_labels(split))
    mean, var = dataset.band_stats(data.x)
    s_mean, s_var = dataset.band_stats_from_files(train_rows)
    assert mean.shape == var.shape == (16,)
    np.testing.assert_allclose(mean, s_mean, rtol=1e-6)
    np.testing.assert_allclose(var, s_var, rtol=1e-5)
    # genre 0 (blues) lifts bands 0-3: their mean is above the others
    assert mean[:4].min() > mean[12:].max()


def test_epoch_permutation_depends_only_on_seed_and_epoch():
    a = dataset.epoch_permutation(50, seed=1, epoch=3)
    np.testing.assert_array_equal(a, dataset.epoch_permutation(50, seed=1, epoch=3))
    assert not np.array_equal(a, dataset.epoch_permutation(50, seed=1, epoch=4))
    assert sorted(a) == list(range(50))


def test_train_dataset_batches_each_epoch_once(split_path):
    split = dataset.read_split(split_path)
    data = dataset.load_segments(split[split.split == "train"], dataset.genre_labels(split))
    n, bs = len(data), 5
    ds = dataset.train_dataset(data, bs, seed=3, initial_epoch=1, epochs=3)
    batches = list(ds.as_numpy_iterator())
    steps = dataset.steps_per_epoch(n, bs)
    assert len(batches) == 2 * steps
    assert batches[0][0].shape == (bs, 16, 20, 1)
    # epoch 1 of this dataset = epoch 1 of the permutation, regardless of initial_epoch
    epoch1 = np.concatenate([y for _, y in batches[:steps]])
    np.testing.assert_array_equal(epoch1, data.y[dataset.epoch_permutation(n, 3, 1)])
    resumed = list(dataset.train_dataset(data, bs, 3, initial_epoch=2, epochs=3))
    np.testing.assert_array_equal(resumed[0][0].numpy(), batches[steps][0])


def test_streaming_dataset_visits_every_segment(split_path):
    split = dataset.read_split(split_path)
    labels = dataset.genre_labels(split)
    rows = split[split.split == "train"]
    ds, steps = dataset.streaming_train_dataset(
        rows, labels, 5, seed=3, initial_epoch=0, epochs=2, shuffle_buffer=4
    )
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 2 * steps
    epoch0 = np.concatenate([y for _, y in batches[:steps]])
    data = dataset.load_segments(rows, labels)
    assert sorted(epoch0) == sorted(data.y)
    again, _ = dataset.streaming_train_dataset(rows, labels, 5, 3, 0, 2, shuffle_buffer=4)
    np.testing.assert_array_equal(next(iter(again))[0].numpy(), batches[0][0])
