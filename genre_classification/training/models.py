"""Keras 3 models for log-mel segments of shape (n_mels, frames, 1).

* ``cnn``: a compact CNN trained from scratch (default; seconds per epoch on 2 CPU cores for the
  demo, and a reasonable GTZAN baseline on a GPU).
* ``efficientnetb0`` / ``resnet50``: ``keras.applications`` backbones with
  ``weights: none | imagenet | <path to .weights.h5>``.
* ``musicnn``: the music-tagging CNN pretrained on the Million Song Dataset, weights from the
  musicnn wheel (``genre_classification.training.musicnn``); needs 96-band musicnn log-mel input.

Every model starts with a per-band ``Normalization`` layer holding the training-set statistics,
so a saved ``model.keras`` takes raw log-mel input. The softmax output is float32 also under
mixed precision.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from genre_classification.features.features import DEFAULT_SET
from genre_classification.training.model_kinds import BACKBONES, kind_of, musicnn_options
from genre_classification.training.musicnn import (
    JOIN,
    N_MELS,
    PATCH_FRAMES,
    build_musicnn_classifier,
    check_options,
    musicnn_provenance,
)

ARCHITECTURES = ("cnn", *BACKBONES, "musicnn")

NO_NETWORK_MESSAGE = (
    "Could not download the ImageNet weights for {name} ({error}). This machine probably has no "
    "network access. Download them on a machine with access, e.g. "
    "`python -c \"import keras; keras.applications.{name}(weights='imagenet', include_top=False)"
    ".save_weights('{lower}_notop.weights.h5')\"`, copy the file here and set "
    "`weights: <path to the .weights.h5 file>` in the model's config (or `weights: none`)."
)


def set_precision(mixed_precision: bool) -> str:
    """Set the global Keras dtype policy; returns its name. Call before building the model."""
    import keras

    policy = "mixed_float16" if mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _normalization(input_shape, mean, variance):
    import keras
    import numpy as np

    if mean is None:
        return keras.layers.Identity(name="no_normalization")
    # axis=1 = the mel band axis of (batch, n_mels, frames, 1): one mean/variance per band.
    # Statistics are kept in float32 so the layer is numerically safe under mixed precision.
    return keras.layers.Normalization(
        axis=1,
        mean=np.asarray(mean, dtype="float32"),
        variance=np.maximum(np.asarray(variance, dtype="float32"), 1e-6),
        dtype="float32",
        name="band_normalization",
    )


def build_cnn(
    input_shape,
    n_classes: int,
    mean=None,
    variance=None,
    filters: tuple[int, ...] = (16, 32, 64, 128),
    dropout: float = 0.3,
    bn_momentum: float = 0.9,
    **_,
):
    """Conv(3x3)-BatchNorm-ReLU-MaxPool blocks, global average pooling, dropout, softmax.

    ``bn_momentum`` 0.9 (Keras default 0.99): with few steps per epoch (demo data) the moving
    statistics used at inference would otherwise lag far behind the weights.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="logmel")
    x = _normalization(input_shape, mean, variance)(inputs)
    for i, n in enumerate(filters):
        x = layers.Conv2D(n, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="cnn")


def _backbone(name: str, input_shape, weights):
    import keras

    cls = getattr(keras.applications, BACKBONES[name])
    shape = (*tuple(input_shape)[:2], 3)
    w = None if weights in (None, "none", "None", "") else str(weights)
    if w == "imagenet":
        try:
            return cls(include_top=False, weights="imagenet", input_shape=shape, pooling="avg")
        except Exception as error:  # keras raises a bare Exception("URL fetch failure ...")
            raise RuntimeError(
                NO_NETWORK_MESSAGE.format(
                    name=BACKBONES[name], lower=name, error=f"{type(error).__name__}: {error}"
                )
            ) from error
    backbone = cls(include_top=False, weights=None, input_shape=shape, pooling="avg")
    if w is not None:
        if not Path(w).is_file():
            raise FileNotFoundError(f"weights file for {name} not found: {w}")
        backbone.load_weights(w)
    return backbone


def build_backbone(
    name: str,
    input_shape,
    n_classes: int,
    mean=None,
    variance=None,
    weights="none",
    dropout: float = 0.2,
    **_,
):
    """A ``keras.applications`` backbone (no top) on the log-mel repeated to 3 channels."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="logmel")
    x = _normalization(input_shape, mean, variance)(inputs)
    x = layers.Concatenate(axis=-1, name="to_rgb")([x, x, x])
    x = _backbone(name, input_shape, weights)(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


def build_model(architecture: str, input_shape, n_classes: int, mean=None, variance=None, **kw):
    """Build ``architecture`` (one of ARCHITECTURES) with its keyword options from the config."""
    architecture = architecture.lower()
    if architecture == "cnn":
        return build_cnn(input_shape, n_classes, mean, variance, **kw)
    if architecture in BACKBONES:
        return build_backbone(architecture, input_shape, n_classes, mean, variance, **kw)
    if architecture == "musicnn":
        return build_musicnn_classifier(input_shape, n_classes, mean, variance, **kw)
    raise ValueError(f"unknown architecture {architecture!r}; choose one of {ARCHITECTURES}")


# The feature set an architecture's pretrained weights need (config feature_sets); others use
# the default set unless the model entry names one.
ARCHITECTURE_FEATURE_SETS = {"musicnn": "musicnn"}


def feature_set_of(model_config: dict) -> str:
    """The feature set a model entry trains on (``features``, else its architecture's)."""

    architecture = str(model_config.get("architecture", "cnn")).lower()
    return model_config.get("features") or ARCHITECTURE_FEATURE_SETS.get(architecture, DEFAULT_SET)


def weights_provenance(model_config: dict) -> dict[str, str]:
    """MLflow tags naming the pretrained weights a model starts from (file and sha256)."""
    if not kind_of(model_config).pretrained:
        return {}
    checkpoints = musicnn_options(model_config)["checkpoint"].split(JOIN)
    if len(checkpoints) == 1:
        return {f"pretrained.{k}": v for k, v in musicnn_provenance(checkpoints[0]).items()}
    return {
        f"pretrained.{name}.{k}": v
        for name in checkpoints
        for k, v in musicnn_provenance(name).items()
    }


def musicnn_option_problems(model_config: dict) -> list[str]:
    """What is wrong with the values of a musicnn entry's options (``musicnn.check_options``,
    on the musicnn input shape), checked when the workflow is parsed."""
    try:
        opts = musicnn_options(model_config)
        check_options((N_MELS, PATCH_FRAMES, 1), **opts)
    except ValueError as error:
        return [str(error)]
    return []


def option_names(architecture: str) -> list[str]:
    """The ``options`` a model config may give ``architecture`` (its builder's keywords)."""
    builders = {"cnn": build_cnn, "musicnn": build_musicnn_classifier}
    builder = builders.get(architecture.lower(), build_backbone)
    return sorted(
        name
        for name, p in inspect.signature(builder).parameters.items()
        if p.default is not inspect.Parameter.empty and name not in ("mean", "variance")
    )


def make_optimizer(name: str, learning_rate: float):
    import keras

    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    try:
        return classes[name.lower()](learning_rate=learning_rate)
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(classes)}") from None


def scaled_optimizer(name: str, learning_rate: float, factors=None):
    """``make_optimizer``, or with ``factors`` ({variable path regex: factor}) a MultiOptimizer
    whose matching variables get ``learning_rate * factor`` and the others ``learning_rate``."""
    import keras

    default = make_optimizer(name, learning_rate)
    if not factors:
        return default
    mapping = keras.optimizers.OptimizerMap(default)
    for pattern, factor in factors.items():
        mapping[pattern] = make_optimizer(name, learning_rate * factor)
    return keras.optimizers.MultiOptimizer(mapping)


def compile_model(
    model, optimizer: str = "adam", learning_rate: float = 1e-3, soft_labels: bool = False
):
    """Compile for integer labels, or for one-hot/soft labels (``soft_labels``: mixup); the
    loss values are the same for one-hot labels and ``accuracy`` is the share of examples whose
    most probable class is the label's largest entry. Under mixed_float16 Keras wraps the
    optimizer in loss scaling. A builder may set ``model.learning_rate_factors`` (e.g. musicnn's
    backbone factor)."""
    factors = getattr(model, "learning_rate_factors", None)
    loss = "categorical_crossentropy" if soft_labels else "sparse_categorical_crossentropy"
    model.compile(
        optimizer=scaled_optimizer(optimizer, learning_rate, factors),
        loss=loss,
        metrics=["accuracy"],
    )
    return model


def band_mean(model):
    """The per-band training mean held by the model's normalisation layer (float32); None for a
    model without one (musicnn normalises with its own pretrained batch norm)."""
    import numpy as np

    names = {layer.name for layer in model.layers}
    if "band_normalization" not in names:
        return None
    layer = model.get_layer("band_normalization")
    return np.asarray(layer.input_mean, dtype="float32").reshape(-1)
