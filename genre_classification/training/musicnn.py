"""musicnn (Pons & Serra, ISMIR 2019 LBD) rebuilt in Keras 3, with the weights of the ``musicnn``
wheel on PyPI (ISC licence).

The wheel's TF1 code does not run under Keras 3 and its metadata pins numpy<1.17, so it is
installed with ``--no-deps`` from ``requirements-weights.txt`` (hash-pinned) and only its files
are read: the TF1 checkpoints (``musicnn/MSD_musicnn/``, ``musicnn/MTT_musicnn/``) through
``tf.compat.v1.train.NewCheckpointReader`` and the tag lists from ``configuration.py`` as text.
None of its modules is imported.

Layout: the backbone takes log-mel patches as the wheel does, ``(frames, 96)``; the classifier
(``build_musicnn_classifier``) takes this project's ``(n_mels=96, frames, 1)`` segments. Both
are fully convolutional in time, so ``frames`` need not be 187 (the training length, 3 s).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

SR = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # 3 s; librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
CHECKPOINTS = ("MSD_musicnn", "MTT_musicnn", "MSD_vgg", "MTT_vgg")
# The embeddings each network offers (width) and the default one; the vgg models take exactly
# 187 frames (their flattened pool5 feeds the dense tag layer).
EMBEDDINGS = {"penultimate": 200, "pool": 1506}
VGG_EMBEDDINGS = {"pool5": 256}
DEFAULT_EMBEDDING = {"musicnn": "penultimate", "vgg": "pool5"}
# Several backbones at once: checkpoint "MSD_musicnn+MTT_musicnn+MSD_vgg" (their embeddings
# concatenated; frozen/probe only). An embedding list is joined the same way.
JOIN = "+"
# How a frozen/probe head sees a track: "segment" (a head per segment, the track's answer the
# mean of its segments' probabilities), "mean" or "mean_std" (the head on one vector per track:
# the mean, or mean and standard deviation, of its segments' embeddings), "auto" (probe: the
# one of mean and mean_std that cross-validation chooses).
POOLINGS = ("segment", "mean", "mean_std", "auto")
# frozen: a head on embeddings computed once (training.embeddings); probe: the same
# with a logistic regression; finetune: everything trains, from the probe's head by default.
MODES = ("frozen", "probe", "finetune")
HEAD_INITS = ("probe", "random")
# The probe's classifier: a logistic regression, or a vote of the nearest training segments
# (training.knn_head).
CLASSIFIERS = ("logistic", "knn")
PREFIX = "musicnn_"  # every backbone layer name starts with it (OptimizerMap pattern below)
BACKBONE_VARIABLES = PREFIX + ".*"

MISSING_MESSAGE = (
    "The musicnn weights ({what}) are not installed. They come from the musicnn wheel on PyPI, "
    "installed without its (outdated) dependencies: run `make install`, or "
    "`uv pip install --no-deps -r requirements-weights.txt` in this environment."
)

# Keras layer (without PREFIX) -> variable scope in the TF1 checkpoint. The TF1 graph numbers
# its layers in creation order (models.py of the wheel): input BN; timbral 7x38 and 7x67;
# temporal 128, 64, 32; mid-end 1-3; back-end pooled BN, dense, BN, dense.
_SCOPES = {
    "input_bn": "batch_normalization",
    "timbral_74_conv": "conv2d",
    "timbral_74_bn": "batch_normalization_1",
    "timbral_77_conv": "conv2d_1",
    "timbral_77_bn": "batch_normalization_2",
    "temporal_128_conv": "conv2d_2",
    "temporal_128_bn": "batch_normalization_3",
    "temporal_64_conv": "conv2d_3",
    "temporal_64_bn": "batch_normalization_4",
    "temporal_32_conv": "conv2d_4",
    "temporal_32_bn": "batch_normalization_5",
    "midend_1_conv": "conv2d_5",
    "midend_1_bn": "batch_normalization_6",
    "midend_2_conv": "conv2d_6",
    "midend_2_bn": "batch_normalization_7",
    "midend_3_conv": "conv2d_7",
    "midend_3_bn": "batch_normalization_8",
    "pool_bn": "batch_normalization_9",
    "penultimate_dense": "dense",
    "penultimate_bn": "batch_normalization_10",
    "tag_logits": "dense_1",
    # vgg (the wheel's models.vgg): input BN, five 3x3 convs (1CNN..5CNN) each with a BN.
    "vgg_input_bn": "batch_normalization",
    **{f"vgg_conv{i}": f"{i}CNN" for i in range(1, 6)},
    **{f"vgg_bn{i}": f"batch_normalization_{i}" for i in range(1, 6)},
    "vgg_tag_logits": "dense",
}
# Adam slots and beta powers: optimizer state saved with the weights, not part of the model.
_OPTIMIZER_STATE = ("/Adam", "/Adam_1")
_OPTIMIZER_VARIABLES = ("beta1_power", "beta2_power")


class MusicnnWeightsMissing(FileNotFoundError):
    pass


# --- the wheel's files ------------------------------------------------------------------------


def _package_dir() -> Path:
    # find_spec on a top-level name locates the package without executing its __init__.
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise MusicnnWeightsMissing(MISSING_MESSAGE.format(what="package musicnn not found"))
    return Path(next(iter(spec.submodule_search_locations)))


def musicnn_checkpoint(name: str = "MSD_musicnn") -> Path:
    """Directory of the TF1 checkpoint ``name`` in the installed wheel (its files ``.index`` and
    ``.data-00000-of-00001`` have an empty stem, so the reader's prefix is ``f"{dir}/"``)."""
    if name not in CHECKPOINTS:
        raise ValueError(f"unknown musicnn checkpoint {name!r}; choose one of {CHECKPOINTS}")
    path = _package_dir() / name
    if not (path / ".index").is_file() or not list(path.glob(".data-*")):
        raise MusicnnWeightsMissing(MISSING_MESSAGE.format(what=f"{path}/.index, .data-*"))
    return path


def checkpoint_prefix(path: Path) -> str:
    return f"{path}/"


def musicnn_tags(name: str = "MSD_musicnn") -> list[str]:
    """The 50 tags of checkpoint ``name``, in output order (``configuration.py``, read as text)."""
    variable = {"MSD": "MSD_LABELS", "MTT": "MTT_LABELS"}[name.split("_")[0]]
    source = (_package_dir() / "configuration.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == variable for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise ValueError(f"{variable} not found in the musicnn wheel's configuration.py")


def musicnn_provenance(name: str = "MSD_musicnn") -> dict[str, str]:
    """MLflow tags: the checkpoint's path inside site-packages and the sha256 of its data
    file(s) (the ``.index`` names the variables; the ``.data`` shards hold their values)."""
    path = musicnn_checkpoint(name)
    digest = hashlib.sha256()
    for data in sorted(path.glob(".data-*")):
        with data.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return {
        "weights_file": f"{path.relative_to(_package_dir().parent).as_posix()}/",
        "weights_sha256": digest.hexdigest(),
    }


def read_checkpoint(name: str = "MSD_musicnn") -> dict[str, np.ndarray]:
    """The model variables of checkpoint ``name`` (optimizer state left out), by TF1 name."""
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(checkpoint_prefix(musicnn_checkpoint(name)))
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if not key.endswith(_OPTIMIZER_STATE) and key not in _OPTIMIZER_VARIABLES
    }


def family(name: str) -> str:
    """``"musicnn"`` or ``"vgg"``: the network of checkpoint ``name``."""
    if name not in CHECKPOINTS:
        raise ValueError(f"unknown musicnn checkpoint {name!r}; choose one of {CHECKPOINTS}")
    return name.split("_", 1)[1]


def embeddings_of(name: str) -> dict[str, int]:
    return VGG_EMBEDDINGS if family(name) == "vgg" else EMBEDDINGS


def backbone_pairs(checkpoint: str, embedding: str | None) -> list[tuple[str, str]]:
    """``[(checkpoint, embedding), ...]`` of a ``checkpoint`` option (``JOIN``-joined names)
    and its ``embedding`` (none: each checkpoint's default; one name: the same for each; or as
    many ``JOIN``-joined names as checkpoints); a clear error for an unknown or mismatched name."""
    checkpoints = str(checkpoint).split(JOIN)
    for name in checkpoints:
        if name not in CHECKPOINTS:
            raise ValueError(f"unknown musicnn checkpoint {name!r}; choose one of {CHECKPOINTS}")
    if len(set(checkpoints)) != len(checkpoints):
        raise ValueError(f"musicnn checkpoint {checkpoint!r} names a checkpoint twice")
    if embedding is None:
        embeddings = [DEFAULT_EMBEDDING[family(name)] for name in checkpoints]
    else:
        embeddings = str(embedding).split(JOIN)
        if len(embeddings) == 1:
            embeddings *= len(checkpoints)
        if len(embeddings) != len(checkpoints):
            raise ValueError(
                f"musicnn embedding {embedding!r}: give one name, or one per checkpoint of "
                f"{checkpoint!r} joined by {JOIN!r}"
            )
    for name, emb in zip(checkpoints, embeddings, strict=True):
        if emb not in embeddings_of(name):
            raise ValueError(
                f"unknown musicnn embedding {emb!r} for {name}; "
                f"choose one of {list(embeddings_of(name))}"
            )
    return list(zip(checkpoints, embeddings, strict=True))


# --- input ------------------------------------------------------------------------------------


def musicnn_input(
    audio_16k: np.ndarray, hop: int = PATCH_FRAMES, pad_mode: str = "reflect"
) -> np.ndarray:
    """The wheel's input: ``(n_patches, 187, 96)`` float32 patches of log10(1 + 10000 * mel).

    Mel as in its extractor.py: ``librosa.feature.melspectrogram`` with librosa's defaults
    (power 2, Slaney mel scale and area normalisation) at 16 kHz, n_fft 512, hop 256, 96 bands.
    Patches start every ``hop`` frames (the wheel's default: no overlap); only whole patches.

    Two deliberate differences: ``pad_mode="reflect"`` is librosa's default before 0.10 (the
    wheel's era; 0.10 changed it to "constant", which only affects the edge frames), and the log
    is taken in float32: the wheel casts the mel to float16 first, so 10000 * mel overflows to
    inf wherever mel > 6.55 (loud tonal sounds).
    """
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(audio_16k, dtype=np.float32),
        sr=SR,
        n_fft=N_FFT,
        hop_length=HOP,
        n_mels=N_MELS,
        pad_mode=pad_mode,
    ).T
    logmel = np.log10(1.0 + 10000.0 * mel).astype(np.float32)
    starts = range(0, logmel.shape[0] - PATCH_FRAMES + 1, hop)
    patches = [logmel[s : s + PATCH_FRAMES] for s in starts]
    if not patches:
        return np.zeros((0, PATCH_FRAMES, N_MELS), dtype=np.float32)
    return np.stack(patches)


# --- architecture -----------------------------------------------------------------------------


def build_musicnn(
    frames: int | None = PATCH_FRAMES,
    n_tags: int = 50,
    filters_midend: int = 64,
    units_backend: int = 200,
):
    """The musicnn graph of the wheel's models.py as a Keras functional model.

    Input ``(frames, 96)``; outputs ``{"logits", "tags" (sigmoid), "penultimate", "max_pool",
    "mean_pool", "pool" (both, interleaved)}``.

    Front-end: input BN; timbral convs 7x38 and 7x67 over the mel axis (time zero-padded by 3
    each side) and temporal convs 128/64/32 x 1 ("same"); each is conv(ReLU) -> BN -> max over
    frequency. Mid-end: three 7-frame convs over all channels of
    the previous layer (zero-padded), conv(ReLU) -> BN, the 2nd and 3rd residual. Back-end:
    max and mean over time of front-end + mid-end outputs (interleaved per channel, as the TF1
    ``concat(axis=2)`` + flatten), BN, dropout 0.5, dense 200 ReLU, BN ("penultimate"), dropout
    0.5, dense to the tag logits.
    """
    import keras
    from keras import layers

    def name(s):
        return PREFIX + s

    def block(x, filters, kernel, padding, label):
        x = layers.Conv2D(
            filters, kernel, padding=padding, activation="relu", name=name(label + "_conv")
        )(x)
        x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name(label + "_bn"))(x)
        return x

    def pad_time(x, label):
        return layers.ZeroPadding2D(((3, 3), (0, 0)), name=name(label + "_pad"))(x)

    inputs = keras.Input(shape=(frames, N_MELS), name="musicnn_logmel")
    x = layers.Reshape((-1, N_MELS, 1), name=name("expand"))(inputs)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name("input_bn"))(x)

    front = []
    padded = pad_time(x, "timbral")
    for label, width in (("timbral_74", int(0.4 * N_MELS)), ("timbral_77", int(0.7 * N_MELS))):
        f = block(padded, 204, (7, width), "valid", label)
        f = layers.MaxPooling2D((1, N_MELS - width + 1), name=name(label + "_pool"))(f)
        front.append(layers.Reshape((-1, 204), name=name(label + "_squeeze"))(f))
    for length in (128, 64, 32):
        label = f"temporal_{length}"
        f = block(x, 51, (length, 1), "same", label)
        f = layers.MaxPooling2D((1, N_MELS), name=name(label + "_pool"))(f)
        front.append(layers.Reshape((-1, 51), name=name(label + "_squeeze"))(f))
    front = layers.Concatenate(axis=-1, name=name("frontend"))(front)  # (frames, 561)

    # Each mid-end conv spans all channels of its input (kernel 7 x channels, 1 input channel),
    # so its (frames, 1, filters) output is the TF1 graph's transpose to (frames, filters, 1).
    mid = [front]
    y = front
    for i in (1, 2, 3):
        channels = 561 if i == 1 else filters_midend
        y4 = layers.Reshape((-1, channels, 1), name=name(f"midend_{i}_expand"))(y)
        c = block(
            pad_time(y4, f"midend_{i}"), filters_midend, (7, channels), "valid", f"midend_{i}"
        )
        c = layers.Reshape((-1, filters_midend), name=name(f"midend_{i}_squeeze"))(c)
        y = c if i == 1 else layers.Add(name=name(f"midend_{i}_residual"))([c, y])
        mid.append(y)
    features = layers.Concatenate(axis=-1, name=name("midend"))(mid)  # (frames, 753)

    max_pool = layers.GlobalMaxPooling1D(name=name("max_pool"))(features)
    mean_pool = layers.GlobalAveragePooling1D(name=name("mean_pool"))(features)
    width = features.shape[-1]
    pooled = layers.Concatenate(axis=-1, name=name("pool_pairs"))(
        [
            layers.Reshape((width, 1), name=name("max_pool_column"))(max_pool),
            layers.Reshape((width, 1), name=name("mean_pool_column"))(mean_pool),
        ]
    )
    pooled = layers.Flatten(name=name("pool"))(pooled)  # [max_0, mean_0, max_1, mean_1, ...]
    z = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name("pool_bn"))(pooled)
    z = layers.Dropout(0.5, name=name("pool_dropout"))(z)
    z = layers.Dense(units_backend, activation="relu", name=name("penultimate_dense"))(z)
    penultimate = layers.BatchNormalization(
        epsilon=1e-3, momentum=0.99, name=name("penultimate_bn")
    )(z)
    z = layers.Dropout(0.5, name=name("penultimate_dropout"))(penultimate)
    logits = layers.Dense(n_tags, name=name("tag_logits"))(z)
    tags = layers.Activation("sigmoid", dtype="float32", name=name("tags"))(logits)
    outputs = {
        "logits": logits,
        "tags": tags,
        "penultimate": penultimate,
        "max_pool": max_pool,
        "mean_pool": mean_pool,
        "pool": pooled,
    }
    return keras.Model(inputs, outputs, name="musicnn")


def build_vgg(frames: int = PATCH_FRAMES, n_tags: int = 50, filters: int = 128):
    """The wheel's ``models.vgg`` (MSD_vgg, MTT_vgg) as a Keras functional model.

    Input ``(187, 96)``; outputs ``{"logits", "tags", "pool5"}``. Input BN; five blocks of
    conv 3x3 ("same", ReLU) -> BN -> max pooling ((4, 1) stride 2, then (2, 2) stride 2 three
    times, then (4, 4) stride 4; TF1's "valid" pooling) with dropout 0.25 between blocks;
    flatten (2 x 1 x 128 = 256, "pool5"), dropout 0.5, dense to the tag logits.
    """
    import keras
    from keras import layers

    if frames != PATCH_FRAMES:
        raise ValueError(f"the vgg models take {PATCH_FRAMES}-frame (3 s) patches, not {frames}")

    def name(s):
        return PREFIX + s

    inputs = keras.Input(shape=(frames, N_MELS), name="musicnn_logmel")
    x = layers.Reshape((frames, N_MELS, 1), name=name("vgg_expand"))(inputs)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name("vgg_input_bn"))(x)
    pools = {1: ((4, 1), (2, 2)), 5: ((4, 4), (4, 4))}
    for i in range(1, 6):
        if i > 1:
            x = layers.Dropout(0.25, name=name(f"vgg_dropout{i - 1}"))(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=name(f"vgg_conv{i}"))(
            x
        )
        x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name(f"vgg_bn{i}"))(x)
        size, stride = pools.get(i, ((2, 2), (2, 2)))
        x = layers.MaxPooling2D(size, stride, name=name(f"vgg_pool{i}"))(x)
    pool5 = layers.Flatten(name=name("vgg_flatten"))(x)
    z = layers.Dropout(0.5, name=name("vgg_pool5_dropout"))(pool5)
    logits = layers.Dense(n_tags, name=name("vgg_tag_logits"))(z)
    tags = layers.Activation("sigmoid", dtype="float32", name=name("vgg_tags"))(logits)
    return keras.Model(inputs, {"logits": logits, "tags": tags, "pool5": pool5}, name="vgg")


def load_musicnn_weights(model, name: str = "MSD_musicnn", variables=None) -> int:
    """Set every weight of ``model`` (from ``build_musicnn``, or any model containing its layers)
    from checkpoint ``name``; returns the number of variables loaded. Raises if a checkpoint
    variable is left unused, a model weight is left unset or a shape differs."""
    variables = read_checkpoint(name) if variables is None else variables
    unused = set(variables)
    unset = []
    for layer in _backbone_layers(model):
        scope = _SCOPES.get(layer.name.removeprefix(PREFIX))
        for weight in layer.weights:
            key = f"{scope}/{weight.name}"
            if scope is None or key not in variables:
                unset.append(weight.path)
                continue
            value = variables[key]
            if tuple(value.shape) != tuple(weight.shape):
                raise ValueError(f"{key}: shape {value.shape} != {weight.path} {weight.shape}")
            weight.assign(value)
            unused.discard(key)
    if unset or unused:
        raise ValueError(
            f"musicnn checkpoint {name}: model weights not in the checkpoint: {sorted(unset)}; "
            f"checkpoint variables not loaded: {sorted(unused)}"
        )
    return len(variables)


def _backbone_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model
            yield from _backbone_layers(layer)
        elif layer.name.startswith(PREFIX) and layer.weights:
            yield layer


def pretrained_musicnn(name: str = "MSD_musicnn", frames: int | None = PATCH_FRAMES):
    """``build_musicnn`` (``build_vgg`` for the vgg checkpoints) with the weights of ``name``."""
    model = build_vgg(frames) if family(name) == "vgg" else build_musicnn(frames)
    load_musicnn_weights(model, name)
    return model


def pretrained_backbone(
    checkpoint: str, embedding: str | None, frames: int, mode: str, name: str = "musicnn"
):
    """The pretrained network of ``checkpoint`` up to ``embedding`` (``(frames, 96)`` input),
    named ``name``; trainable in ``finetune`` mode except its BatchNorm layers."""
    import keras
    from keras import layers

    embedding = embedding or DEFAULT_EMBEDDING[family(checkpoint)]
    if embedding not in embeddings_of(checkpoint):
        raise ValueError(
            f"unknown embedding {embedding!r} for {checkpoint}; "
            f"choose one of {list(embeddings_of(checkpoint))}"
        )
    musicnn_checkpoint(checkpoint)  # fail before building anything when the wheel is missing
    full = pretrained_musicnn(checkpoint, frames)
    backbone = keras.Model(full.input, full.output[embedding], name=name)
    backbone.trainable = mode == "finetune"
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    return backbone


def embedding_network(checkpoint: str, embedding: str | None, frames: int, mode: str):
    """``(frames, 96)`` -> the embedding of ``checkpoint`` (``pretrained_backbone``), or of
    several ``JOIN``-joined checkpoints concatenated in their order; named "musicnn"."""
    import keras
    from keras import layers

    pairs = backbone_pairs(checkpoint, embedding)
    if len(pairs) == 1:
        return pretrained_backbone(*pairs[0], frames, mode)
    inputs = keras.Input(shape=(frames, N_MELS), name="frames_mels")
    outputs = [
        pretrained_backbone(name, emb, frames, mode, name=f"{PREFIX}{name}")(inputs)
        for name, emb in pairs
    ]
    joined = layers.Concatenate(name=f"{PREFIX}joined")(outputs)
    return keras.Model(inputs, joined, name="musicnn")


def classifier_on(
    backbone,
    input_shape,
    n_classes: int,
    mode: str,
    dropout: float,
    standardise=None,
    head=None,
    backbone_learning_rate_factor: float = 1.0,
    tail=None,
):
    """``(96, frames, 1)`` log-mel -> ``backbone`` -> [standardisation] -> dropout -> [tail]
    -> softmax.

    ``standardise``: ``(mean, variance)`` of the embedding on the training split, applied by a
    Normalization layer ("embedding_standardisation") so the saved model stays self-contained;
    ``head``: ``(kernel, bias)`` of the softmax layer ("probs"); ``tail``: a layer before it
    (the kNN probe's ``knn_head.knn_block``)."""
    import keras
    import numpy as np
    from keras import layers

    shape = tuple(input_shape)
    inputs = keras.Input(shape=shape, name="logmel")
    x = layers.Reshape(shape[:2], name="drop_channel")(inputs)
    x = layers.Permute((2, 1), name="to_frames_mels")(x)
    x = backbone(x)
    if standardise is not None:
        x = standardisation_layer(*standardise)(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    if tail is not None:
        x = tail(x)
    probs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")
    model = keras.Model(inputs, probs(x), name=f"musicnn_{mode}")
    if head is not None:
        probs.set_weights([np.asarray(w, dtype="float32") for w in head])
    if backbone_learning_rate_factor != 1.0:
        model.learning_rate_factors = {BACKBONE_VARIABLES: float(backbone_learning_rate_factor)}
    return model


def standardisation_layer(mean, variance):
    import keras
    import numpy as np

    return keras.layers.Normalization(
        axis=-1,
        mean=np.asarray(mean, dtype="float32"),
        variance=np.maximum(np.asarray(variance, dtype="float32"), 1e-6),
        dtype="float32",
        name="embedding_standardisation",
    )


# --- classifier -------------------------------------------------------------------------------


def build_musicnn_classifier(
    input_shape,
    n_classes: int,
    mean=None,
    variance=None,
    mode: str = "frozen",
    embedding: str | None = None,
    dropout: float = 0.5,
    backbone_learning_rate_factor: float = 1.0,
    checkpoint: str = "MSD_musicnn",
    head_init: str = "probe",
    pooling: str = "segment",
    classifier: str = "logistic",
    knn_max_reference: int = 20000,
    **_,
):
    """Pretrained musicnn (or vgg) up to ``embedding`` + dropout + softmax head, on
    ``(96, frames, 1)``; with a random head (the training job builds frozen/probe models and
    the fine-tune's probe head in ``genre_classification.training.embeddings``).

    * ``checkpoint``: one of ``CHECKPOINTS``: musicnn or vgg, trained on the Million Song
      Dataset (MSD) or MagnaTagATune (MTT); weights from the wheel, loaded by name. Several
      joined by "+" (frozen/probe): their embeddings concatenated.
    * ``embedding`` (default: "penultimate" for musicnn, "pool5" for vgg): "penultimate" (the
      wheel's feature of that name: BN of the 200-unit dense layer before the tag logits) or
      "pool" (max and mean over time of all front-/mid-end channels, 1506 values); vgg: "pool5"
      (its flattened last pooling, 256 values).
    * ``mode``: "frozen" (a head on the embedding; the backbone runs in inference mode),
      "probe" (a logistic regression on it) or "finetune" (convolutions and dense layers
      trainable). Its BatchNorm layers stay frozen in every mode, i.e. normalise with the
      checkpoint's moving statistics: the usual practice when fine-tuning, and this
      workflow's small batches would give poor batch statistics. (In Keras 3.15
      ``backbone(x, training=False)`` would not do this: a functional model passes the outer
      ``training`` on to its layers, overriding the recorded False.) When fine-tuned, the
      back-end's dropout before the 200-unit dense layer is active in training.
    * ``head_init`` (finetune): "probe" (the training job starts from the linear probe fitted
      on the standardised embedding) or "random".
    * ``backbone_learning_rate_factor`` (finetune only): the backbone's learning rate relative
      to the head's; ``compile_model`` turns the model attribute ``learning_rate_factors`` into
      a ``keras.optimizers.MultiOptimizer`` (``models.scaled_optimizer``).
    * ``pooling`` (frozen/probe, ``POOLINGS``): "segment" or a head on one pooled vector per
      track ("mean", "mean_std", or "auto" for the probe). The training job builds these
      heads; this builder gives the segment model.
    * ``classifier`` (probe): "logistic" or "knn" (``training.knn_head``: a vote of the k
      nearest training segments, at most ``knn_max_reference`` of them kept).
    * ``mean``/``variance`` (per-band training statistics) are not used: the backbone starts
      with its own input BatchNorm, trained on ``musicnn_input``'s log10(1 + 10000 * mel).
    """
    check_options(
        input_shape,
        mode,
        embedding,
        backbone_learning_rate_factor,
        checkpoint,
        head_init,
        pooling,
        classifier,
        knn_max_reference,
    )
    backbone = embedding_network(checkpoint, embedding, tuple(input_shape)[1], mode)
    return classifier_on(
        backbone,
        input_shape,
        n_classes,
        mode,
        dropout,
        backbone_learning_rate_factor=backbone_learning_rate_factor,
    )


def check_options(
    input_shape,
    mode,
    embedding,
    backbone_learning_rate_factor,
    checkpoint,
    head_init,
    pooling="segment",
    classifier="logistic",
    knn_max_reference=20000,
    **_,
):
    if mode not in MODES:
        raise ValueError(f"unknown musicnn mode {mode!r}; choose one of {MODES}")
    pairs = backbone_pairs(checkpoint, embedding)
    if len(pairs) > 1 and mode == "finetune":
        raise ValueError(
            f"musicnn checkpoint {checkpoint!r}: several backbones need mode frozen or probe"
        )
    if pooling not in POOLINGS:
        raise ValueError(f"unknown musicnn pooling {pooling!r}; choose one of {POOLINGS}")
    if pooling != "segment" and mode == "finetune":
        raise ValueError(f"musicnn pooling {pooling!r} needs mode frozen or probe")
    if pooling == "auto" and mode != "probe":
        raise ValueError("musicnn pooling 'auto' (chosen by cross-validation) needs mode: probe")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown musicnn classifier {classifier!r}; choose one of {CLASSIFIERS}")
    if classifier == "knn" and (mode != "probe" or pooling != "segment"):
        raise ValueError("musicnn classifier 'knn' needs mode: probe and pooling: segment")
    if not isinstance(knn_max_reference, int) or knn_max_reference < 1:
        raise ValueError(f"knn_max_reference must be a positive integer, not {knn_max_reference!r}")
    if head_init not in HEAD_INITS:
        raise ValueError(f"unknown head_init {head_init!r}; choose one of {HEAD_INITS}")
    if backbone_learning_rate_factor <= 0:
        raise ValueError("backbone_learning_rate_factor must be > 0")
    if mode != "finetune" and backbone_learning_rate_factor != 1.0:
        raise ValueError("backbone_learning_rate_factor needs mode: finetune")
    shape = tuple(input_shape)
    if shape[0] != N_MELS or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 1):
        raise ValueError(f"musicnn needs input (96 mel bands, frames[, 1]), not {shape}")
