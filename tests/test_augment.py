"""Augmentation (crop, masks, mixup): seeded by (seed, epoch, step), exact on resume, the
configured sizes; test-time overlapping windows; a short training run with everything on."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from _training_data import TINY_CONFIG, full_config, make_features, packs_beside, train_tiny
from genre_classification.training import augment, dataset, train

ALL_ON = {
    "crop": True,
    "time_mask": {"count": 2, "max_frames": 4},
    "freq_mask": {"count": 1, "max_bands": 3},
    "mixup": 0.4,
}
N_MELS, FRAMES = 16, 20


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment")
    # 3 segments per track: a first, a middle and a last segment in every track
    return make_features(root, n_segments=3)


@pytest.fixture(scope="module")
def train_data(data_dir):
    split = dataset.read_split(data_dir)
    rows = split[split.split == "train"]
    labels = dataset.genre_labels(split)
    return dataset.load_segments(rows, labels), rows, labels


def augmenter(settings=ALL_ON, seed=5, n_classes=3, mean=None):
    mean = np.linspace(-50, -30, N_MELS) if mean is None else mean
    return augment.Augmenter(settings, seed, mean, n_classes)


def batches(data, aug, initial_epoch=0, epochs=3, bs=7, seed=5):
    ds = dataset.train_dataset(data, bs, seed, initial_epoch, epochs, aug)
    return list(ds.as_numpy_iterator())


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


# --- config -----------------------------------------------------------------------------------


def test_settings_default_off_and_fingerprint_unchanged(tmp_path):
    def effective(config):
        return train.model_config(full_config(config))

    assert effective(TINY_CONFIG)["augment"] == augment.OFF
    assert not augment.is_active(None) and not augment.is_active({"mixup": 0})
    assert augment.is_active({"crop": True})
    with pytest.raises(ValueError, match="unknown augment keys"):
        augment.settings({"cutout": 1})
    # The fingerprint of a config without augment, computed by the code before augmentation
    # existed: checkpoints written then still resume.
    split = tmp_path / "split.tsv"
    split.write_text("genre\ttrack\nblues\tb1\n")
    before = "6cba02f8f0e6b60b262e005f8c2c6b205abd5e11b24763dddbba5fad40ecc89f"
    assert train.fingerprint(effective(TINY_CONFIG), split) == before
    off = effective({**TINY_CONFIG, "augment": {"crop": False, "mixup": 0}})
    assert train.fingerprint(off, split) == before
    on = effective({**TINY_CONFIG, "augment": {"mixup": 0.2}})
    assert train.fingerprint(on, split) != before


def test_check_names_the_key():
    augment.check(augment.settings(ALL_ON), N_MELS, FRAMES)
    too_wide = augment.settings({"time_mask": {"count": 1, "max_frames": 21}})
    with pytest.raises(ValueError, match=r"augment.time_mask.max_frames is 21; .* 20 frames"):
        augment.check(too_wide, N_MELS, FRAMES)


# --- seeded and exact on resume ---------------------------------------------------------------


def test_same_seed_same_batches_other_epochs_differ(train_data):
    data = train_data[0]
    first, again = batches(data, augmenter()), batches(data, augmenter())
    assert_same(first, again)
    steps = dataset.steps_per_epoch(len(data), 7)
    assert len(first) == 3 * steps
    assert first[0][0].shape == (7, N_MELS, FRAMES, 1) and first[0][1].shape == (7, 3)
    # crops and masks of epoch 1 differ from those of epoch 0, also for the same examples
    crop_only = {"crop": True}
    e0 = augmenter(crop_only).crop_examples(data.x, np.arange(10), _sources(data), 0, 0)
    e1 = augmenter(crop_only).crop_examples(data.x, np.arange(10), _sources(data), 1, 0)
    assert not np.array_equal(e0, e1)
    mask_only = {"time_mask": {"count": 2, "max_frames": 4}}
    m0 = augmenter(mask_only).batch(data.x[:10], data.y[:10], 0, 0)[0]
    m1 = augmenter(mask_only).batch(data.x[:10], data.y[:10], 1, 0)[0]
    assert not np.array_equal(m0, m1)
    assert not np.array_equal(batches(data, augmenter(seed=6))[0][0], first[0][0])


def _sources(data):
    return augment.crop_sources(data.tracks)


def test_resumed_batches_are_the_tail_of_an_uninterrupted_run(train_data):
    data = train_data[0]
    steps = dataset.steps_per_epoch(len(data), 7)
    full = batches(data, augmenter(), initial_epoch=0, epochs=3)
    resumed = batches(data, augmenter(), initial_epoch=1, epochs=3)
    assert_same(resumed, full[steps:])
    # the example order is the unaugmented one: the labels' dominant class is the true label
    # when no mixup is on
    plain = batches(data, augmenter({"crop": True}), initial_epoch=1, epochs=2)
    order = dataset.epoch_permutation(len(data), 5, 1)
    np.testing.assert_array_equal(np.concatenate([y for _, y in plain]), data.y[order])


def test_packed_augmented_equals_in_memory_and_is_exact_on_resume(train_data, data_dir):
    data, rows, labels = train_data
    packed = dataset.PackedSegments(rows, labels, packs_beside(data_dir))
    steps = dataset.steps_per_epoch(len(data), 7)
    full = batches(packed, augmenter(), initial_epoch=0, epochs=3)
    assert_same(full, batches(data, augmenter(), initial_epoch=0, epochs=3))
    assert_same(batches(packed, augmenter(), initial_epoch=2, epochs=3), full[2 * steps :])
    assert full[0][1].shape[1] == 3  # soft labels
    np.testing.assert_allclose(np.concatenate([y for _, y in full]).sum(axis=1), 1, rtol=1e-6)


# --- what each augmentation does --------------------------------------------------------------


def test_crop_windows_are_slices_of_the_concatenated_track():
    # tracks a (3 segments), b (1), c (2); values = time index in the track + 1000 * track
    lengths = {"a": 3, "b": 1, "c": 2}
    x, tracks, continuous = [], [], {}
    for t, (name, n) in enumerate(lengths.items()):
        time = np.arange(n * FRAMES) + 1000 * t
        full = np.broadcast_to(time, (N_MELS, n * FRAMES)).astype(np.float32)
        continuous[name] = full
        x += [full[:, i * FRAMES : (i + 1) * FRAMES] for i in range(n)]
        tracks += [name] * n
    x, tracks = np.stack(x), np.asarray(tracks, dtype=object)
    sources = augment.crop_sources(tracks)
    seen_starts = set()
    for epoch in range(20):
        windows = augmenter({"crop": True}).crop_examples(x, np.arange(len(x)), sources, epoch, 0)
        for i, (window, name) in enumerate(zip(windows, tracks, strict=True)):
            start = int(window[0, 0]) - 1000 * list(lengths).index(name)
            np.testing.assert_array_equal(window, continuous[name][:, start : start + FRAMES])
            segment_start = int(x[i, 0, 0]) - 1000 * list(lengths).index(name)
            last = i + 1 == len(x) or tracks[i + 1] != name
            if lengths[name] == 1:
                assert start == segment_start  # nothing to crop into
            elif last:  # shifted back into the previous segment
                assert segment_start - FRAMES < start <= segment_start
            else:  # runs into the next segment
                assert segment_start <= start < segment_start + FRAMES
                seen_starts.add(start - segment_start)
    assert len(seen_starts) > FRAMES // 2  # offsets spread over the segment


def test_masks_have_the_configured_counts_and_sizes():
    n, count, max_frames, max_bands = 64, 2, 5, 3
    mean = np.arange(N_MELS, dtype=np.float32) - 100  # never a data value
    x = np.random.default_rng(0).normal(size=(n, N_MELS, FRAMES)).astype(np.float32)
    y = np.zeros(n, dtype=np.int32)
    settings = {"time_mask": {"count": count, "max_frames": max_frames}}
    out, labels = augmenter(settings, mean=mean).batch(x, y, 3, 4)
    out = out[..., 0]
    np.testing.assert_array_equal(labels, y)  # no mixup: integer labels
    starts, widths = augment.mask_spans(
        augment.rng(5, 3, 4, "time_mask"), n, count, max_frames, FRAMES
    )
    assert widths.shape == (n, count) and widths.max() == max_frames and widths.min() >= 0
    masked = out == mean[None, :, None]
    for i in range(n):
        columns = set()
        for s, w in zip(starts[i], widths[i], strict=True):
            columns |= set(range(s, s + w))
        assert max(columns, default=0) < FRAMES
        assert sorted(np.flatnonzero(masked[i].all(axis=0))) == sorted(columns)
        assert masked[i].sum() == N_MELS * len(columns)  # whole columns, nothing else
        assert len(columns) <= count * max_frames

    settings = {"freq_mask": {"count": 1, "max_bands": max_bands}}
    out = augmenter(settings, mean=mean).batch(x, y, 3, 4)[0][..., 0]
    masked_bands = (out == mean[None, :, None]).all(axis=2).sum(axis=1)
    assert masked_bands.max() == max_bands and masked_bands.min() >= 0
    assert ((out == mean[None, :, None]).sum(axis=(1, 2)) == FRAMES * masked_bands).all()


def test_mixup_soft_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, N_MELS, FRAMES)).astype(np.float32)
    y = rng.integers(0, 3, size=32)
    mixed, soft, lam = augment.mixup(augment.rng(5, 0, 0, "mixup"), x, y, 0.4, 3)
    assert soft.shape == (32, 3) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(axis=1), 1, rtol=1e-6)
    assert ((lam >= 0) & (lam <= 1)).all() and lam.std() > 0
    partner = augment.rng(5, 0, 0, "mixup")
    partner.beta(0.4, 0.4, size=32)
    partner = partner.permutation(32)
    expect = lam[:, None, None] * x + (1 - lam[:, None, None]) * x[partner]
    np.testing.assert_allclose(mixed, expect, rtol=1e-6)
    np.testing.assert_allclose(soft[np.arange(32), y] >= lam - 1e-6, True)
    out, labels = augmenter({"mixup": 0.4}).batch(x, y, 0, 0)
    np.testing.assert_allclose(out[..., 0], mixed)
    np.testing.assert_allclose(labels, soft)


# --- test-time windows ------------------------------------------------------------------------


def test_overlap_windows():
    rng = np.random.default_rng(1)
    n = 4
    segments = rng.normal(size=(n, N_MELS, FRAMES)).astype(np.float32)
    assert dataset.overlap_windows(segments, 0) is segments
    continuous = np.concatenate(list(segments), axis=1)
    windows = dataset.overlap_windows(segments, 0.5)
    assert windows.shape == (2 * n - 1, N_MELS, FRAMES)
    for j, window in enumerate(windows):
        np.testing.assert_array_equal(window, continuous[:, j * 10 : j * 10 + FRAMES])
    assert len(dataset.overlap_windows(segments, 0.75)) == 4 * (n - 1) + 1  # hop 5
    with pytest.raises(ValueError, match="overlap"):
        dataset.overlap_windows(segments, 1.0)
    # several tracks: windows never span two tracks
    x = np.concatenate([segments, segments[:1], segments[:2]])
    tracks = np.asarray(["a"] * n + ["b"] + ["c"] * 2, dtype=object)
    w, owners = dataset.track_windows(x, tracks, 0.5)
    assert owners.tolist() == ["a"] * (2 * n - 1) + ["b"] + ["c"] * 3
    np.testing.assert_array_equal(w[2 * n - 1], segments[0])
    same, same_owners = dataset.track_windows(x, tracks, 0)
    assert same is x and same_owners.tolist() == tracks.tolist()


# --- training ---------------------------------------------------------------------------------


def test_short_training_run_with_every_augmentation(data_dir, tmp_path):
    import mlflow

    config = {**TINY_CONFIG, "epochs": 3, "augment": ALL_ON}
    info, uri = train_tiny(config, data_dir, tmp_path, "augmented", "augment-test")
    history = pd.read_csv(tmp_path / "models/augmented/history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert np.isfinite(history[column]).all()
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]  # it learns
    assert ((history["val_accuracy"] >= 0) & (history["val_accuracy"] <= 1)).all()
    params = mlflow.MlflowClient(tracking_uri=uri).get_run(info["run_id"]).data.params
    assert params["augment.crop"] == "True"
    assert params["augment.mixup"] == "0.4"
    assert json.loads(params["augment.time_mask.count"]) == 2
    assert json.loads(params["augment.freq_mask.max_bands"]) == 3


def test_musicnn_trains_with_augmentation(tmp_path):
    """musicnn has no band-normalisation layer: masks take the training files' band means."""
    split = make_features(tmp_path, n_segments=2, n_mels=96, frames=187)
    config = {
        **TINY_CONFIG,
        "architecture": "musicnn",
        "options": {"mode": "finetune", "backbone_learning_rate_factor": 0.1},
        "epochs": 1,
        "augment": ALL_ON,
    }
    train_tiny(config, split, tmp_path, "musicnn-augmented", "augment-test")
    history = pd.read_csv(tmp_path / "models/musicnn-augmented/history.csv")
    assert history["epoch"].tolist() == [0, 1]  # epoch 0: the probe it starts from, on val
    assert np.isfinite(history["loss"].iloc[1:]).all()
