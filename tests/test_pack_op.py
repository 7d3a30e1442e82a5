"""The native pack reader (pack_op, pack_read.cc): built here, equal to the Python reader,
the same batches, named errors, a fallback without a compiler."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from _training_data import make_features, packs_beside
from genre_classification.features import pack_op
from genre_classification.features.packs import PackReader, pack_path, write_pack
from genre_classification.training import dataset


@pytest.fixture(autouse=True)
def fresh_load():
    pack_op.load.cache_clear()
    yield
    pack_op.load.cache_clear()


@pytest.fixture
def split_path(tmp_path):
    return make_features(tmp_path)


def _packed(split_path, subset="train"):
    split = dataset.read_split(split_path)
    labels = dataset.genre_labels(split)
    rows = split[split.split == subset]
    return dataset.PackedSegments(rows, labels, packs_beside(split_path))


def test_native_reader_is_built_and_used_here():
    # make install / system-deps give this machine (and CI) g++: the fallback must not hide
    assert pack_op.load() is not None
    assert pack_op.library_path().is_file()
    assert not list(pack_op.ops_dir().glob(".building-*"))


def test_native_reads_equal_python_reads(split_path, tmp_path):
    split = dataset.read_split(split_path)
    packs = []
    for i, files in enumerate((split.iloc[:10], split.iloc[10:])):  # two packs
        packs.append(pack_path(tmp_path / "two", f"{i:05d}"))
        write_pack(files, packs[-1])
    reader = PackReader(packs)
    read = pack_op.reader(reader)
    rng = np.random.default_rng(0)
    n_rows = [20, 2 * (len(split) - 10)]
    pack_of = rng.integers(0, 2, 200).astype(np.int32)
    rows = np.array([rng.integers(0, n_rows[p]) for p in pack_of], dtype=np.int64)
    cases = [
        (pack_of, rows),  # shuffled, repeats, across packs
        (np.zeros(7, np.int32), np.arange(3, 10, dtype=np.int64)),  # one run: one read
        (np.array([1, 1, 0, 0, 1], np.int32), np.array([4, 5, 6, 7, 0], np.int64)),
        (np.zeros(0, np.int32), np.zeros(0, np.int64)),
    ]
    for p, r in cases:
        np.testing.assert_array_equal(read(p, r).numpy(), reader.read(p, r))


def test_native_and_python_give_the_same_batches(split_path, monkeypatch):
    def batches(mode):
        monkeypatch.setenv(pack_op.READER_ENV, mode)
        pack_op.load.cache_clear()
        packed = _packed(split_path)
        assert (packed.native_read() is None) == (mode == "python")
        train = dataset.train_dataset(packed, 5, 3, initial_epoch=1, epochs=3)
        val = dataset.eval_dataset(_packed(split_path, "val"), 2, n_classes=3)
        return list(train.as_numpy_iterator()), list(val.as_numpy_iterator())

    native, python = batches("native"), batches("python")
    assert len(native[0]) == 2 * dataset.steps_per_epoch(len(_packed(split_path)), 5)
    for a, b in zip(native[0] + native[1], python[0] + python[1], strict=True):
        assert a[0].dtype == b[0].dtype and a[1].dtype == b[1].dtype
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_native_reader_names_a_truncated_pack(split_path):
    import tensorflow as tf

    packed = _packed(split_path, "test")  # the last tracks of the pack
    pack = packs_beside(split_path)[0]
    with open(pack, "r+b") as handle:
        handle.truncate(pack.stat().st_size - 100)
    read = packed.native_read()
    with pytest.raises(tf.errors.DataLossError, match=f"{pack}: short read.*rerun snakemake"):
        read(tf.constant([len(packed) - 1], tf.int64))


def test_without_a_compiler_packs_are_read_in_python(split_path, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(pack_op.OPS_DIR_ENV, str(tmp_path / "ops"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    with pytest.raises(pack_op.BuildError, match="no C\\+\\+ compiler.*install g\\+\\+"):
        pack_op.build()
    with caplog.at_level(logging.WARNING):
        assert pack_op.load() is None
    assert "read in Python" in caplog.text and "apt-get install g++" in caplog.text
    packed = _packed(split_path)
    assert packed.native_read() is None
    batch = next(dataset.train_dataset(packed, 4, 0, 0, 1).as_numpy_iterator())
    np.testing.assert_array_equal(
        batch[0][..., 0], packed.x[dataset.epoch_permutation(24, 0, 0)[:4]]
    )
    assert not list((tmp_path / "ops").glob("*.so"))


def test_a_failed_build_names_the_command_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(pack_op.OPS_DIR_ENV, str(tmp_path / "ops"))
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(pack_op.BuildError, match="false -shared .*pack_read.cc.* failed"):
        pack_op.build()
    assert not list((tmp_path / "ops").iterdir())
