"""musicnn in Keras 3: equal to the TF1 graph's math on the wheel's checkpoint, every variable
loaded, clear error without the wheel, frozen/finetune training, provenance."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from genre_classification.data.demo_data import synthesize_clip
from genre_classification.training import models, musicnn

if importlib.util.find_spec("musicnn") is None:
    pytest.skip("musicnn wheel not installed (make install)", allow_module_level=True)


@pytest.fixture(scope="module")
def variables():
    return musicnn.read_checkpoint("MSD_musicnn")


@pytest.fixture(scope="module")
def tagger(variables):
    model = musicnn.build_musicnn()
    musicnn.load_musicnn_weights(model, "MSD_musicnn", variables)
    return model


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    models.set_precision(False)


def reference_tags(x: np.ndarray, v: dict[str, np.ndarray]) -> np.ndarray:
    """Sigmoid tag probabilities of (batch, 187, 96) patches: the TF1 graph of the wheel's
    models.py (is_training=False) in plain tf ops on the checkpoint values, shape by shape."""
    import tensorflow as tf

    def bn(t, scope):
        return tf.nn.batch_normalization(
            t,
            v[f"{scope}/moving_mean"],
            v[f"{scope}/moving_variance"],
            v[f"{scope}/beta"],
            v[f"{scope}/gamma"],
            variance_epsilon=1e-3,
        )

    def conv_relu(t, scope, padding):
        y = tf.nn.conv2d(t, v[f"{scope}/kernel"], strides=1, padding=padding)
        return tf.nn.relu(y + v[f"{scope}/bias"])

    def pad_time(t):
        return tf.pad(t, [[0, 0], [3, 3], [0, 0], [0, 0]])

    x = bn(tf.constant(x, tf.float32)[..., None], "batch_normalization")
    front = []
    for conv, norm, padded, padding in (
        ("conv2d", "batch_normalization_1", True, "VALID"),
        ("conv2d_1", "batch_normalization_2", True, "VALID"),
        ("conv2d_2", "batch_normalization_3", False, "SAME"),
        ("conv2d_3", "batch_normalization_4", False, "SAME"),
        ("conv2d_4", "batch_normalization_5", False, "SAME"),
    ):
        y = bn(conv_relu(pad_time(x) if padded else x, conv, padding), norm)
        front.append(tf.reduce_max(y, axis=2))  # max over the remaining frequency axis
    front = tf.concat(front, axis=2)  # (b, 187, 561)
    assert front.shape[1:] == (187, 561)

    mid = [front[..., None]]
    previous = None
    for conv, norm in (
        ("conv2d_5", "batch_normalization_6"),
        ("conv2d_6", "batch_normalization_7"),
        ("conv2d_7", "batch_normalization_8"),
    ):
        y = bn(conv_relu(pad_time(mid[-1]), conv, "VALID"), norm)  # (b, 187, 1, 64)
        y = tf.transpose(y, [0, 1, 3, 2])
        y = y if previous is None else y + previous
        previous = y
        mid.append(y)
    features = tf.concat(mid, axis=2)  # (b, 187, 753, 1)

    pooled = tf.concat(
        [tf.reduce_max(features, axis=1), tf.reduce_mean(features, axis=1)], axis=2
    )  # (b, 753, 2)
    flat = bn(tf.reshape(pooled, [pooled.shape[0], -1]), "batch_normalization_9")
    dense = tf.nn.relu(flat @ v["dense/kernel"] + v["dense/bias"])
    logits = bn(dense, "batch_normalization_10") @ v["dense_1/kernel"] + v["dense_1/bias"]
    return tf.sigmoid(logits).numpy()


def clips() -> np.ndarray:
    sr = musicnn.SR
    audio = [synthesize_clip(g, 3.5, sr, seed=i) for i, g in enumerate(["metal", "classical"])]
    audio.append(np.random.default_rng(0).normal(0, 0.1, int(3.5 * sr)))
    patches = [musicnn.musicnn_input(a) for a in audio]
    assert all(p.shape == (1, 187, 96) for p in patches)
    return np.concatenate(patches)


def test_keras_model_equals_tf1_graph_math(tagger, variables):
    x = clips()
    want = reference_tags(x, variables)
    got = np.asarray(tagger(x, training=False)["tags"])
    diff = np.abs(got - want).max()
    print(f"max abs difference of the tag probabilities: {diff:.2e}")
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # Not a vacuous comparison: the clips get different, non-trivial tags.
    assert np.ptp(want, axis=0).max() > 0.1
    assert 0.01 < want.max() < 1


def test_every_checkpoint_variable_loaded(variables):
    model = musicnn.build_musicnn()
    assert musicnn.load_musicnn_weights(model, "MSD_musicnn", variables) == len(variables)
    assert len(variables) == 21 * 2 + 11 * 2  # 10 conv/dense x (kernel, bias) + 11 BN x 4
    assert model.count_params() == sum(a.size for a in variables.values())
    for layer in model.layers:
        for weight in layer.weights:
            scope = musicnn._SCOPES[layer.name.removeprefix(musicnn.PREFIX)]
            np.testing.assert_array_equal(weight.numpy(), variables[f"{scope}/{weight.name}"])


def test_loading_fails_loudly(variables):
    model = musicnn.build_musicnn()
    extra = {**variables, "conv2d_99/kernel": np.zeros(1)}
    with pytest.raises(ValueError, match="not loaded: \\['conv2d_99/kernel'\\]"):
        musicnn.load_musicnn_weights(model, "MSD_musicnn", extra)
    missing = {k: a for k, a in variables.items() if k != "batch_normalization_9/moving_mean"}
    with pytest.raises(ValueError, match="musicnn_pool_bn/moving_mean"):
        musicnn.load_musicnn_weights(model, "MSD_musicnn", missing)


def test_tags_and_input():
    tags = musicnn.musicnn_tags("MSD_musicnn")
    assert len(tags) == 50 and tags[:2] == ["rock", "pop"]
    assert {"jazz", "metal", "Hip-Hop", "electronic", "blues", "country"} <= set(tags)
    assert len(musicnn.musicnn_tags("MTT_musicnn")) == 50
    seven = np.random.default_rng(1).normal(0, 0.1, 7 * musicnn.SR)
    assert musicnn.musicnn_input(seven).shape == (2, 187, 96)  # 438 frames, hop 187
    assert musicnn.musicnn_input(seven, hop=93).shape == (3, 187, 96)
    assert musicnn.musicnn_input(seven[:1000]).shape == (0, 187, 96)
    loud = np.sin(2 * np.pi * 440 * np.arange(3 * musicnn.SR) / musicnn.SR)
    assert np.isfinite(musicnn.musicnn_input(loud)).all()  # no float16 overflow


def test_missing_wheel_names_the_fix(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "musicnn" else find_spec(name, *a),
    )
    with pytest.raises(musicnn.MusicnnWeightsMissing) as error:
        musicnn.musicnn_checkpoint()
    assert "make install" in str(error.value)
    assert "uv pip install --no-deps -r requirements-weights.txt" in str(error.value)
    with pytest.raises(FileNotFoundError):
        musicnn.build_musicnn_classifier((96, 187, 1), 3)


def test_missing_checkpoint_files(monkeypatch, tmp_path):
    (tmp_path / "MSD_musicnn").mkdir()
    monkeypatch.setattr(musicnn, "_package_dir", lambda: tmp_path)
    with pytest.raises(musicnn.MusicnnWeightsMissing, match="make install"):
        musicnn.musicnn_checkpoint()
    with pytest.raises(ValueError, match="unknown musicnn checkpoint"):
        musicnn.musicnn_checkpoint("MSD_bogus")


def test_provenance_is_stable():
    first = musicnn.musicnn_provenance()
    assert first == musicnn.musicnn_provenance()
    assert first["weights_file"] == "musicnn/MSD_musicnn/"
    # The sha256 of MSD_musicnn/.data-00000-of-00001 in the wheel's RECORD (there in base64).
    assert first["weights_sha256"] == (
        "8579734ee6388f799ed0def4bbd0d1fdcbeaf213ef2a9dc860917bd76a303de6"
    )
    assert musicnn.musicnn_provenance("MTT_musicnn")["weights_sha256"] != first["weights_sha256"]


def _train_step(model, backbone_factor=None, lr=0.05):
    rng = np.random.default_rng(2)
    x = rng.normal(2.0, 1.0, (8, 96, 40, 1)).astype("float32")
    y = rng.integers(0, 3, 8)
    models.compile_model(model, "sgd", lr)
    backbone = model.get_layer("musicnn")
    before = {w.path: w.numpy().copy() for w in backbone.weights}
    head_before = model.get_layer("probs").kernel.numpy().copy()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    changed = {
        path: float(np.abs(w.numpy() - before[path]).max())
        for w in backbone.weights
        for path in [w.path]
    }
    head_changed = not np.allclose(model.get_layer("probs").kernel.numpy(), head_before)
    return changed, head_changed


def test_frozen_backbone_does_not_change():
    model = musicnn.build_musicnn_classifier((96, 40, 1), 3, mode="frozen")
    backbone = model.get_layer("musicnn")
    assert backbone.trainable_weights == []
    assert len(model.trainable_weights) == 2  # the head's kernel and bias
    changed, head_changed = _train_step(model)
    assert head_changed
    assert max(changed.values()) == 0.0


def test_finetune_changes_backbone_but_not_bn_statistics():
    model = musicnn.build_musicnn_classifier((96, 40, 1), 3, mode="finetune")
    assert len(model.get_layer("musicnn").trainable_weights) > 0
    changed, head_changed = _train_step(model)
    assert head_changed
    assert changed["musicnn_penultimate_dense/kernel"] > 0
    assert changed["musicnn_timbral_74_conv/kernel"] > 0
    # BatchNorm stays frozen: the checkpoint's moving statistics, gamma and beta.
    for path, change in changed.items():
        if "_bn/" in path:
            assert change == 0.0, path


def test_backbone_learning_rate_factor():
    import keras

    def updates(factor):
        keras.utils.set_random_seed(0)
        model = musicnn.build_musicnn_classifier(
            (96, 40, 1), 3, mode="finetune", backbone_learning_rate_factor=factor
        )
        changed, _ = _train_step(model, lr=0.01)
        return changed["musicnn_penultimate_dense/bias"], model

    full, _ = updates(1.0)
    tenth, model = updates(0.1)
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    # Plain SGD: the first step's update is proportional to the learning rate.
    assert tenth == pytest.approx(full * 0.1, rel=1e-3)
    with pytest.raises(ValueError, match="needs mode: finetune"):
        musicnn.build_musicnn_classifier((96, 40, 1), 3, backbone_learning_rate_factor=0.1)


def test_classifier_saves_and_loads(tmp_path):
    import keras

    model = musicnn.build_musicnn_classifier(
        (96, 40, 1), 3, mode="finetune", backbone_learning_rate_factor=0.5, embedding="pool"
    )
    _train_step(model)
    x = np.random.default_rng(3).normal(2.0, 1.0, (2, 96, 40, 1)).astype("float32")
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert isinstance(loaded.optimizer, keras.optimizers.MultiOptimizer)


# --- vgg --------------------------------------------------------------------------------------


def reference_vgg_tags(x: np.ndarray, v: dict[str, np.ndarray]) -> np.ndarray:
    """Sigmoid tags of the wheel's models.vgg (is_training=False) in plain tf ops."""
    import tensorflow as tf

    def bn(t, scope):
        return tf.nn.batch_normalization(
            t,
            v[f"{scope}/moving_mean"],
            v[f"{scope}/moving_variance"],
            v[f"{scope}/beta"],
            v[f"{scope}/gamma"],
            variance_epsilon=1e-3,
        )

    t = bn(tf.constant(x, tf.float32)[..., None], "batch_normalization")
    pools = {1: ([4, 1], [2, 2]), 5: ([4, 4], [4, 4])}
    for i in range(1, 6):
        t = tf.nn.relu(tf.nn.conv2d(t, v[f"{i}CNN/kernel"], 1, "SAME") + v[f"{i}CNN/bias"])
        t = bn(t, f"batch_normalization_{i}")
        size, stride = pools.get(i, ([2, 2], [2, 2]))
        t = tf.nn.max_pool2d(t, size, stride, "VALID")
    assert t.shape[1:] == (2, 1, 128)
    flat = tf.reshape(t, [t.shape[0], -1])
    return tf.sigmoid(flat @ v["dense/kernel"] + v["dense/bias"]).numpy()


@pytest.mark.parametrize("name", ["MSD_vgg", "MTT_vgg"])
def test_vgg_equals_tf1_graph_math_and_loads_every_variable(name):
    variables = musicnn.read_checkpoint(name)
    model = musicnn.build_vgg()
    assert musicnn.load_musicnn_weights(model, name, variables) == len(variables)
    assert len(variables) == 5 * 2 + 6 * 4 + 2  # 5 convs, 6 BN, the dense tag layer
    assert model.count_params() == sum(a.size for a in variables.values())
    x = clips()
    want = reference_vgg_tags(x, variables)
    got = np.asarray(model(x, training=False)["tags"])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert np.ptp(want, axis=0).max() > 0.05
    assert model(x, training=False)["pool5"].shape == (3, 256)
    assert musicnn.musicnn_provenance(name)["weights_file"] == f"musicnn/{name}/"
    assert len(musicnn.musicnn_tags(name)) == 50


def test_vgg_classifier_options():
    model = musicnn.build_musicnn_classifier((96, 187, 1), 4, checkpoint="MSD_vgg")
    assert model.get_layer("musicnn").output.shape == (None, 256)  # default embedding: pool5
    assert model.predict(np.zeros((1, 96, 187, 1), "float32"), verbose=0).shape == (1, 4)
    with pytest.raises(ValueError, match="choose one of \\['pool5'\\]"):
        musicnn.build_musicnn_classifier((96, 187, 1), 4, checkpoint="MSD_vgg", embedding="pool")
    with pytest.raises(ValueError, match="187-frame"):
        musicnn.build_musicnn_classifier((96, 40, 1), 4, checkpoint="MTT_vgg")
    with pytest.raises(ValueError, match="unknown musicnn checkpoint"):
        musicnn.build_musicnn_classifier((96, 187, 1), 4, checkpoint="MSD_resnet")
