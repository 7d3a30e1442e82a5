"""Model builders: shapes, normalisation layer, mixed precision, backbone weights handling."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from genre_classification.training import models


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    models.set_precision(False)


def test_cnn_outputs_probabilities():
    mean, var = np.linspace(-50, -10, 16), np.full(16, 25.0)
    model = models.build_model("cnn", (16, 20, 1), 4, mean, var, filters=(4, 8))
    x = np.random.default_rng(0).normal(-30, 5, (3, 16, 20, 1)).astype("float32")
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    norm = model.get_layer("band_normalization")
    np.testing.assert_allclose(np.ravel(norm.mean), mean, rtol=1e-6)


def test_mixed_precision_keeps_float32_output():
    assert models.set_precision(True) == "mixed_float16"
    model = models.build_model("cnn", (16, 20, 1), 3, filters=(4,))
    models.compile_model(model, "adam", 1e-3)
    assert model.get_layer("conv0").compute_dtype == "float16"
    assert model.output.dtype == "float32"


def test_unknown_architecture_and_optimizer():
    with pytest.raises(ValueError, match="unknown architecture"):
        models.build_model("vgg99", (16, 20, 1), 3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        models.make_optimizer("adagrad-ish", 0.1)


def test_imagenet_without_network_fails_clearly(monkeypatch):
    import keras.src.utils.file_utils as file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: no route")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(RuntimeError, match="no network access") as error:
        models.build_model("efficientnetb0", (32, 32, 1), 3, weights="imagenet")
    assert "weights: <path to the .weights.h5 file>" in str(error.value)


def test_backbone_weights_from_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        models.build_model("efficientnetb0", (32, 32, 1), 3, weights=tmp_path / "missing.h5")
    import keras

    source = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    path = tmp_path / "b0.weights.h5"
    source.save_weights(path)
    model = models.build_model("efficientnetb0", (32, 32, 1), 3, weights=str(path))
    assert model.output_shape == (None, 3)
    loaded = model.get_layer(source.name).get_weights()
    for a, b in zip(loaded, source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_learning_rate_factors_give_a_multi_optimizer():
    import keras

    x = np.random.default_rng(0).normal(0, 1, (4, 16, 20, 1)).astype("float32")

    def sgd_step(factors):
        keras.utils.set_random_seed(0)
        model = models.build_model("cnn", (16, 20, 1), 3, filters=(4,))
        model.learning_rate_factors = factors
        models.compile_model(model, "sgd", 0.5)
        before = [v.numpy().copy() for v in model.trainable_variables]
        model.fit(x, np.arange(4) % 3, batch_size=4, epochs=1, verbose=0)
        steps = {
            v.path: np.abs(v.numpy() - b).max()
            for v, b in zip(model.trainable_variables, before, strict=True)
        }
        return model, steps

    _, plain = sgd_step(None)
    model, scaled = sgd_step({"conv0/.*": 0.1})
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    assert scaled["conv0/kernel"] == pytest.approx(0.1 * plain["conv0/kernel"], rel=1e-3)
    assert scaled["probs/kernel"] == pytest.approx(plain["probs/kernel"], rel=1e-3)


@pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None, reason="musicnn wheel not installed (make install)"
)
def test_musicnn_architecture():
    assert "musicnn" in models.ARCHITECTURES
    assert {"mode", "embedding", "backbone_learning_rate_factor"} <= set(
        models.option_names("musicnn")
    )
    model = models.build_model("musicnn", (96, 187, 1), 4, np.zeros(96), np.ones(96))
    assert model.input_shape == (None, 96, 187, 1)
    assert model.output_shape == (None, 4)
    assert model.get_layer("musicnn").output_shape == (None, 200)
