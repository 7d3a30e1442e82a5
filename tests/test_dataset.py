"""Input pipeline: split manifest, HDF5 loading, label mapping, normalisation, tf.data batches."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from _training_data import GENRES, make_features, packs_beside
from genre_classification.training import dataset


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


def _packed(split_path, subset="train"):
    split = dataset.read_split(split_path)
    labels = dataset.genre_labels(split)
    rows = split[split.split == subset]
    return dataset.PackedSegments(rows, labels, packs_beside(split_path)), rows, labels


def test_packed_segments_equal_the_hdf5s(split_path):
    packed, rows, labels = _packed(split_path)
    loaded = dataset.load_segments(rows, labels)
    assert len(packed) == len(loaded) and packed.input_shape == loaded.input_shape
    np.testing.assert_array_equal(packed.y, loaded.y)
    np.testing.assert_array_equal(packed.x[np.arange(len(packed))], loaded.x)
    # random order, repeats, across tracks: each read as asked
    index = np.array([7, 0, 23, 7, 12, 1])
    np.testing.assert_array_equal(packed.x[index], loaded.x[index])
    memory = packed.load()
    np.testing.assert_array_equal(memory.x, loaded.x)
    np.testing.assert_array_equal(memory.tracks, loaded.tracks)


def test_packed_segments_name_a_stale_pack(split_path, tmp_path):
    split = dataset.read_split(split_path)
    extra = split.iloc[[0]].assign(features=str(tmp_path / "new.h5"))
    with pytest.raises(ValueError, match="in no pack"):
        dataset.PackedSegments(extra, dataset.genre_labels(split), packs_beside(split_path))


def test_truncated_pack_is_named(split_path):
    packed, _, _ = _packed(split_path, "test")  # the last tracks of the pack
    pack = packs_beside(split_path)[0]
    with open(pack, "r+b") as handle:
        handle.truncate(pack.stat().st_size - 100)
    with pytest.raises(OSError, match="short read.*rebuild"):
        packed.x[np.array([len(packed) - 1])]


def test_band_stats_of_packs_equal_in_memory(split_path):
    packed, rows, labels = _packed(split_path)
    x64 = dataset.load_segments(rows, labels).x.astype(np.float64)
    mean, var = dataset.band_stats(packed)  # from the packs' per-file sums
    assert mean.shape == var.shape == (16,)
    in_memory = dataset.band_stats(packed.load(), chunk=5)
    np.testing.assert_allclose(in_memory[0], mean, rtol=1e-12)
    np.testing.assert_allclose(in_memory[1], var, rtol=1e-12)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2)), rtol=1e-9)
    np.testing.assert_allclose(var, x64.var(axis=(0, 2)), rtol=1e-6)
    # genre 0 (blues) lifts bands 0-3: their mean is above the others
    assert mean[:4].min() > mean[12:].max()


def test_band_stats_name_a_missing_sums_file(split_path):
    from genre_classification.features.packs import sums_path

    packed, _, _ = _packed(split_path)
    sums_path(packs_beside(split_path)[0]).unlink()
    with pytest.raises(FileNotFoundError, match=r"sums\.npy is missing: rerun snakemake"):
        dataset.band_stats(packed)


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


def test_packed_and_in_memory_give_the_same_batches(split_path):
    packed, _, _ = _packed(split_path)
    memory = packed.load()
    a = list(dataset.train_dataset(packed, 5, 3, initial_epoch=0, epochs=2).as_numpy_iterator())
    b = list(dataset.train_dataset(memory, 5, 3, initial_epoch=0, epochs=2).as_numpy_iterator())
    assert len(a) == len(b) == 2 * dataset.steps_per_epoch(len(packed), 5)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    epoch0 = np.concatenate([y for _, y in a[: len(a) // 2]])
    assert sorted(epoch0) == sorted(packed.y)


def test_eval_dataset_in_order(split_path):
    packed, rows, labels = _packed(split_path, "val")
    batches = list(dataset.eval_dataset(packed, 2, n_classes=3).as_numpy_iterator())
    x = np.concatenate([b[0] for b in batches])[..., 0]
    np.testing.assert_array_equal(x, dataset.load_segments(rows, labels).x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]).argmax(1), packed.y)
