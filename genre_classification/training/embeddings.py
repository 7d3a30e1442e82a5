"""Transfer learning on embeddings computed once: musicnn ``mode: frozen | probe`` and the
fine-tune's head initialisation.

The pretrained backbone is run once per feature file: the embedding of every segment of a track
is cached beside its HDF5, per file like the features,
``<features dir>/.embeddings/<checkpoint>-<embedding>/<genre>/<track>.npz``, keyed on the
feature file's size and modification time (as Snakemake judges it: a stat, not a read of the
file) and the sha256 of the checkpoint's weights (``cache_key``); a rewritten file or other
weights recompute it, everything else is read back. A frozen or probe training job is then one
backbone pass over the uncached files plus a head fit on arrays in memory:

* ``frozen``: Normalization (the training split's mean/variance of each embedding dimension)
  -> dropout -> softmax, the kernel starting at zero so the first loss is ln(n_classes)
  (chance), trained by Keras epoch by epoch (the training job's checkpoints, early stopping,
  resume: the batch order is ``dataset.epoch_permutation``, a function of (seed, epoch));
* ``probe``: scikit-learn's multinomial logistic regression on the standardised embedding, its
  regularisation strength C chosen by cross-validation over the train and val tracks, grouped
  like the split (``track_head.choose_segment_probe``), then refitted on all of them;
* ``finetune`` with ``head_init: probe``: the whole network trains from the probe's head (not
  a random one) on top of the standardisation; that probe is chosen over the train tracks only,
  so val stays unseen for the fine-tune's early stopping.

With ``pooling`` (``track_head``) the frozen or probe head is fitted on one vector per track
instead, and the probe chooses C (and the pooling) by the same cross-validation.

Several backbones (``checkpoint: MSD_musicnn+MTT_musicnn``) are cached one by one and their
embeddings concatenated.

Whatever was trained, the saved model is assembled as ``(96, frames, 1)`` log-mel -> backbone
-> standardisation -> dropout -> softmax (``full_model``), or log-mel -> backbones -> segment
moments -> track head, so ``predict``, the registry and the predict sets use it as any other
model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genre_classification.aggregation import (
    TEMPERATURE,
    TRACK_MOMENTS,
    UNSCALED_PROBS,
    WITH_UNSCALED,
    aggregate_tracks,
)
from genre_classification.columns import EMBEDDING_RECORD_COLUMNS
from genre_classification.data.split import GROUP_COLUMN
from genre_classification.features.packs import accepted_files
from genre_classification.fileio import atomic_path, write_frame
from genre_classification.training import augment, knn_head, track_head
from genre_classification.training.dataset import _read_file, epoch_permutation, track_id
from genre_classification.training.model_kinds import kind_of, musicnn_options, track_pooled
from genre_classification.training.musicnn import (
    backbone_pairs,
    check_options,
    classifier_on,
    embedding_network,
    musicnn_provenance,
    pretrained_backbone,
    standardisation_layer,
)
from genre_classification.training.tf_runtime import set_threads
from genre_classification.training.track_head import log_loss

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

CACHE_DIR = ".embeddings"
SHARD_RECORDS = ".shards"  # in CACHE_DIR: the records of the embed_features jobs
BATCH = 64  # segments per backbone call when embedding


def backbones_of(cfg: dict) -> list[tuple[str, str]]:
    """``[(checkpoint, embedding), ...]`` of a musicnn model entry (several: concatenated)."""
    opts = musicnn_options(cfg)
    return backbone_pairs(opts["checkpoint"], opts["embedding"])


# --- the cache --------------------------------------------------------------------------------


def cache_path(features_file: str | Path, backbone: str) -> Path:
    """The cache file of a feature file ``<dir>/<genre>/<track>.h5``."""
    features_file = Path(features_file)
    root = features_file.parent.parent
    return root / CACHE_DIR / backbone / features_file.parent.name / f"{features_file.stem}.npz"


def cache_key(features_file: str | Path, weights_sha256: str) -> str:
    """``<size>:<mtime ns>:<weights sha256>``: a stat per file, so that checking the cache of
    100,000 files does not read 66 GB of features in every job."""
    stat = os.stat(features_file)
    return f"{stat.st_size}:{stat.st_mtime_ns}:{weights_sha256}"


def shard_record_path(features_dir: str | Path, shard: str) -> Path:
    """The record of the ``embed_features`` job of ``shard`` (its files' embeddings in the
    cache, per backbone)."""
    return Path(features_dir) / CACHE_DIR / SHARD_RECORDS / f"{shard}.tsv"


def cached_backbones(entries) -> list[list[str]]:
    """``[checkpoint, embedding]`` of every model entry (validated) whose job reads the cache
    for training (``model_kinds``), each once, sorted: what ``embed_features`` computes."""
    backbones = {
        pair
        for cfg in entries
        if kind_of(cfg).reads_embeddings("train")
        for pair in backbones_of(cfg)
    }
    return [list(b) for b in sorted(backbones)]


def backbone_name(checkpoint: str, embedding: str) -> str:
    """The cache directory of a backbone: ``<checkpoint>-<embedding>``."""
    return f"{checkpoint}-{embedding}"


class Embedder:
    """The backbone of ``checkpoint`` up to ``embedding``, in inference mode, and its cache.

    The backbone is built on the first file that is not cached (its segments give the
    frames): a job whose files are all cached (the ``embed_features`` jobs ran) never builds
    it."""

    def __init__(self, checkpoint: str, embedding: str):

        self.checkpoint, self.embedding = checkpoint, embedding
        self.name = backbone_name(checkpoint, embedding)
        self.weights_sha256 = musicnn_provenance(checkpoint)["weights_sha256"]
        self.model = None
        self.computed = 0  # files embedded (not read from the cache)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """``(n, 96, frames)`` log-mel segments -> ``(n, width)`` float32 embeddings."""

        if self.model is None:
            self.model = pretrained_backbone(
                self.checkpoint, self.embedding, int(x.shape[2]), "frozen"
            )
        if not len(x):
            return np.zeros((0, self.model.output.shape[-1]), dtype=np.float32)
        frames_first = np.ascontiguousarray(np.transpose(x, (0, 2, 1)), dtype=np.float32)
        out = [
            np.asarray(self.model(frames_first[i : i + BATCH], training=False))
            for i in range(0, len(frames_first), BATCH)
        ]
        return np.concatenate(out).astype(np.float32)

    def track(self, features_file: str | Path, genre: str) -> np.ndarray:
        """The embeddings of one feature file: from the cache when its key matches."""

        path = cache_path(features_file, self.name)
        key = cache_key(features_file, self.weights_sha256)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as cached:
                    if str(cached["key"]) == key:
                        return cached["embeddings"]
            except (OSError, ValueError, KeyError):
                log.warning("unreadable embedding cache %s: recomputing it", path)
        embeddings = self.embed(_read_file(features_file, genre))
        self.computed += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, key=np.asarray(key), embeddings=embeddings)
        return embeddings


class Embedders:
    """The embedders of a model entry's backbones: a file's embeddings concatenated."""

    def __init__(self, cfg: dict):
        self.parts = [Embedder(*pair) for pair in backbones_of(cfg)]
        self.name = "+".join(part.name for part in self.parts)

    @property
    def computed(self) -> int:
        return max(part.computed for part in self.parts)

    def track(self, features_file: str | Path, genre: str) -> np.ndarray:
        embeddings = [part.track(features_file, genre) for part in self.parts]
        return embeddings[0] if len(embeddings) == 1 else np.concatenate(embeddings, axis=1)

    def rows(self, rows, labels: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Embeddings and class indices of every segment of the tracks in ``rows`` (split
        manifest rows, in their order), and the number of segments of each track."""
        index = {genre: i for i, genre in enumerate(labels)}
        xs, ys = [], []
        for row in rows.itertuples(index=False):
            e = self.track(row.features, row.genre)
            xs.append(e)
            ys.append(np.full(len(e), index[row.genre], dtype=np.int32))
        counts = np.array([len(x) for x in xs], dtype=np.int64)
        return np.concatenate(xs), np.concatenate(ys), counts


def tracks_moments(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Segment embeddings of consecutive tracks (``counts`` segments each) -> each track's
    mean moments ``[mean(e), mean(e * e)]`` (``track_head.track_moments``)."""
    starts = np.cumsum(counts) - counts
    return np.stack(
        [track_head.track_moments(x[s : s + n]) for s, n in zip(starts, counts, strict=True)]
    )


def _groups(rows) -> np.ndarray:
    """Each track's group (``split.group_by``), else the track itself."""
    if GROUP_COLUMN in rows.columns:
        return rows[GROUP_COLUMN].astype(str).to_numpy()
    return np.array([track_id(g, t) for g, t in zip(rows["genre"], rows["track"], strict=True)])


_LAST: dict = {}


class EmbeddedSplit:
    """Train and val embeddings of a split (computed or read from the cache once per job)."""

    def __init__(self, cfg: dict, train_rows, val_rows, labels: list[str]):
        import time

        start = time.perf_counter()
        embedder = Embedders(cfg)
        self.x_train, self.y_train, self.train_counts = embedder.rows(train_rows, labels)
        self.x_val, self.y_val, self.val_counts = embedder.rows(val_rows, labels)
        self.train_groups, self.val_groups = _groups(train_rows), _groups(val_rows)
        self._moments: dict = {}
        self.mean = self.x_train.astype(np.float64).mean(axis=0)
        self.variance = self.x_train.astype(np.float64).var(axis=0)
        self.n_classes = len(labels)
        log.info(
            "Embeddings %s of %d train and %d val segments in %.1f s (%d of %d files computed, "
            "the rest read from the cache %s)",
            embedder.name, len(self.y_train), len(self.y_val), time.perf_counter() - start,
            embedder.computed, len(train_rows) + len(val_rows),
            cache_path(train_rows.iloc[0]["features"], embedder.parts[0].name).parent.parent,
        )  # fmt: skip

    @classmethod
    def of(cls, cfg: dict, train_rows, val_rows, labels: list[str]) -> EmbeddedSplit:
        """The split's embeddings, computed once per process for the same tracks and backbone
        (the job builds its model and fits it from the same arrays)."""
        key = (
            *backbones_of(cfg),
            tuple(train_rows["features"]),
            tuple(val_rows["features"]),
            tuple(labels),
        )
        if _LAST.get("key") != key:
            _LAST.clear()
            _LAST.update(key=key, split=cls(cfg, train_rows, val_rows, labels))
        return _LAST["split"]

    def _part(self, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(embeddings, genre index per segment, segments per track, group per track)``."""
        if part == "train":
            return self.x_train, self.y_train, self.train_counts, self.train_groups
        return self.x_val, self.y_val, self.val_counts, self.val_groups

    def segments(self, parts) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(embeddings, each segment's track index, each track's genre index, each track's
        group)`` of the tracks of ``parts`` ("train", "val")."""
        xs, ys, counts, groups = zip(*(self._part(part) for part in parts), strict=True)
        counts = np.concatenate(counts)
        y = np.concatenate(ys)[np.cumsum(counts) - counts]
        owners = np.repeat(np.arange(len(counts)), counts)
        return np.concatenate(xs), owners, y, np.concatenate(groups)

    def head_inputs(self, part: str, pooled: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What a head takes for the tracks of "train" or "val": ``(rows, genre index per row,
        track index per row)``; a row per track (its mean moments) with ``pooled``, else a row
        per segment (its embedding)."""
        if pooled:
            x, y = self.track_moments(part)
            return x, y, np.arange(len(y))
        x, y, counts, _ = self._part(part)
        return x, y, np.repeat(np.arange(len(counts)), counts)

    def track_moments(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """``(moments (tracks, 2w) float64, genre index per track)`` of "train" or "val",
        computed once."""
        if part not in self._moments:
            x, y, counts, _ = self._part(part)
            first_segments = np.cumsum(counts) - counts
            self._moments[part] = (tracks_moments(x, counts), y[first_segments])
        return self._moments[part]


def embed_shard(
    record_path: str | Path,
    backbones,
    output: str | Path,
    threads: int | None = None,
) -> pd.DataFrame:
    """Fill the cache for the accepted files of an extraction shard record, for every
    ``[checkpoint, embedding]`` of ``backbones`` (rule ``embed_features``, one job per shard);
    file by file, so memory is one file's segments. Writes ``output``: one row per file and
    backbone (``EMBEDDING_RECORD_COLUMNS``)."""
    import time

    import pandas as pd  # noqa: F811

    if backbones:
        set_threads(threads)
    files = accepted_files(record_path)
    rows = []
    for checkpoint, embedding in backbones:
        start = time.perf_counter()
        embedder = Embedder(checkpoint, embedding)
        for row in files.itertuples(index=False):
            e = embedder.track(row.features, row.genre)
            rows.append((row.genre, row.track, row.features, embedder.name, len(e)))
        log.info(
            "%s: %d files of %s, %d computed, the rest cached (%.1f s)",
            embedder.name, len(files), record_path, embedder.computed,
            time.perf_counter() - start,
        )  # fmt: skip
    table = pd.DataFrame(rows, columns=list(EMBEDDING_RECORD_COLUMNS))
    write_frame(output, table, sep="\t", index=False)
    return table


def head_of(model):
    """The head of a saved frozen/probe model (``full_model``): embedding -> its
    standardisation, dropout and softmax layers, temperature-scaled ones too (the same layer
    objects, so the same weights and arithmetic as the model's own tail); a track-pooled
    model's ``TRACK_HEAD``."""
    import keras

    names = {layer.name for layer in model.layers}
    if TRACK_MOMENTS in names:
        return model.get_layer(track_head.TRACK_HEAD)
    norm = model.get_layer("embedding_standardisation")
    width = int(np.asarray(norm.input_mean).size)
    inputs = keras.Input(shape=(width,), name="embedding")
    x = model.get_layer("head_dropout")(norm(inputs))
    if knn_head.KNN_BLOCK in names:
        x = model.get_layer(knn_head.KNN_BLOCK)(x)
    if "logits" not in names:
        return keras.Model(inputs, model.get_layer("probs")(x), name="musicnn_head")
    logits = model.get_layer("logits")(x)
    x = model.get_layer("probs")(model.get_layer(TEMPERATURE)(logits))
    if WITH_UNSCALED in names:  # calibration.with_uncalibrated
        x = model.get_layer(WITH_UNSCALED)([x, model.get_layer(UNSCALED_PROBS)(logits)])
    return keras.Model(inputs, x, name="musicnn_head")


def predict_tracks(model, cfg: dict, rows, labels: list[str], batch_size: int, chunk_segments: int):
    """``evaluate.predict_tracks`` of a frozen/probe model with windows = its segments
    (``overlap`` 0): the head on the cached embeddings of the tracks of ``rows`` (computed
    for the files not cached), about ``chunk_segments`` segments at a time; a track head on
    each track's mean moments. The same probabilities as the whole model on the segments
    (``tests/test_evaluate.py``, ``tests/test_track_head.py``)."""

    embedder, head = Embedders(cfg), head_of(model)
    pooled = track_pooled(cfg)
    tracks, probs, counts = [], [], {"segments": 0, "windows": 0}
    xs, owners = [], []

    def flush():
        if pooled:
            chunk = head.predict(np.stack(xs), batch_size=batch_size, verbose=0)
            tracks.extend(owners)
            probs.append(np.asarray(chunk, dtype=np.float64))
        else:
            chunk = head.predict(np.concatenate(xs), batch_size=batch_size, verbose=0)
            names, means = aggregate_tracks(chunk, owners)
            tracks.extend(names)
            probs.append(means)
        xs.clear()
        owners.clear()

    n_segments = 0
    for row in rows.itertuples(index=False):
        e = embedder.track(row.features, row.genre)
        counts["segments"] += len(e)
        if pooled:
            xs.append(track_head.track_moments(e))
            owners.append(track_id(row.genre, row.track))
        else:
            xs.append(e)
            owners.extend([track_id(row.genre, row.track)] * len(e))
        n_segments += len(e)
        if n_segments >= chunk_segments:
            flush()
            n_segments = 0
    if xs:
        flush()
    counts["windows"] = counts["segments"]
    log.info(
        "%d tracks predicted on the embeddings of %s (%d files computed, the rest cached)",
        len(tracks), embedder.name, embedder.computed,
    )  # fmt: skip
    return tracks, np.concatenate(probs), counts


# --- the heads --------------------------------------------------------------------------------


def head_model(width: int, n_classes: int, mean, variance, dropout: float, tail=None):
    """Embedding -> standardisation -> dropout -> [``tail``: the kNN probe's block] -> softmax
    with a zero kernel (chance)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(width,), name="embedding")
    x = standardisation_layer(mean, variance)(inputs)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    if tail is not None:
        x = tail(x)
    outputs = layers.Dense(
        n_classes, activation="softmax", kernel_initializer="zeros", dtype="float32", name="probs"
    )(x)
    return keras.Model(inputs, outputs, name="musicnn_head")


def _scores(model, x, y) -> tuple[float, float]:
    probs = np.asarray(model.predict(x, batch_size=1024, verbose=0))
    return log_loss(np.log(np.clip(probs, 1e-7, 1.0)), y), float(np.mean(probs.argmax(axis=1) == y))


def probe_choice(cfg: dict, split: EmbeddedSplit, with_val: bool = True):
    """The probe chosen by grouped cross-validation over the train and val tracks
    (``track_head.choose_probe`` with ``pooling``, else ``choose_segment_probe``), once per
    job; ``with_val=False``: over the train tracks only (the fine-tune's starting head)."""
    opts = musicnn_options(cfg)
    key = ("probe", opts["pooling"], cfg["seed"], with_val, id(split))
    if _LAST.get("probe_key") != key:
        parts = ("train", "val") if with_val else ("train",)
        x, owners, y, groups = split.segments(parts)
        if track_pooled(cfg):  # each part's moments are computed once per job
            moments = np.concatenate([split.track_moments(part)[0] for part in parts])
            poolings = track_head.AUTO_POOLINGS if opts["pooling"] == "auto" else (opts["pooling"],)
            choice = track_head.choose_probe(
                moments, y, groups, split.n_classes, poolings, cfg["seed"]
            )
        elif opts["classifier"] == "knn":
            choice = knn_head.choose_knn_probe(
                x, owners, y, groups, split.n_classes, cfg["seed"], opts["knn_max_reference"]
            )
        else:
            choice = track_head.choose_segment_probe(
                x, owners, y, groups, split.n_classes, cfg["seed"]
            )
        _LAST.update(probe_key=key, probe=choice)
    return _LAST["probe"]


def _pooled_head(cfg: dict, split: EmbeddedSplit):
    """The track head a new job starts from: the fitted probe, or the frozen head at chance."""
    opts = musicnn_options(cfg)
    width = split.x_train.shape[1]
    if opts["mode"] == "probe":
        choice = probe_choice(cfg, split)
        head = track_head.head_model(
            width, split.n_classes, choice.pooling, choice.mean, choice.variance, opts["dropout"]
        )
        head.get_layer("logits").set_weights([choice.kernel, choice.bias])
        return head
    moments, _ = split.track_moments("train")
    mean, variance = track_head.standardisation(track_head.pooled(moments, opts["pooling"]))
    return track_head.head_model(
        width, split.n_classes, opts["pooling"], mean, variance, opts["dropout"]
    )


# --- the training job's steps (train.model_and_state, fit, finalize) -------------------------


def initial_model(cfg: dict, train_rows, val_rows, labels: list[str], input_shape):
    """The model a new job starts from: the head model (frozen, probe; its input is the
    embedding, or a track's mean moments with ``pooling``), or the full fine-tune model with
    the probe's head and standardisation."""
    import keras

    opts = musicnn_options(cfg)
    check_options(input_shape, **opts)
    if opts["mode"] != "finetune" and augment.is_active(cfg["augment"]):
        raise ValueError(
            f"augment needs mode: finetune (mode {opts['mode']} trains on embeddings computed "
            "once per file)"
        )
    split = EmbeddedSplit.of(cfg, train_rows, val_rows, labels)
    # Building a backbone for uncached files draws seeds: the model must not depend on that.
    keras.utils.set_random_seed(cfg["seed"])
    if track_pooled(cfg):
        return _pooled_head(cfg, split)
    width = split.x_train.shape[1]
    if opts["mode"] == "frozen":
        return head_model(width, len(labels), split.mean, split.variance, opts["dropout"])
    probe = probe_choice(cfg, split, with_val=opts["mode"] == "probe")
    if opts["mode"] == "probe":
        tail = knn_head.knn_block(probe) if isinstance(probe, knn_head.KnnChoice) else None
        head = head_model(width, len(labels), probe.mean, probe.variance, opts["dropout"], tail)
        head.get_layer("probs").set_weights([probe.kernel, probe.bias])
        return head
    backbone = pretrained_backbone(
        opts["checkpoint"], opts["embedding"], tuple(input_shape)[1], "finetune"
    )
    model = classifier_on(
        backbone,
        input_shape,
        len(labels),
        "finetune",
        opts["dropout"],
        standardise=(probe.mean, probe.variance),
        head=(probe.kernel, probe.bias),
        backbone_learning_rate_factor=opts["backbone_learning_rate_factor"],
    )
    return model


def _train_batches(x, y, batch_size: int, seed: int, initial_epoch: int, epochs: int):
    import tensorflow as tf

    perms = np.stack(
        [epoch_permutation(len(y), seed, e) for e in range(initial_epoch, epochs)]
    ).astype(np.int64)
    xt, yt = tf.constant(x), tf.constant(y)
    ds = tf.data.Dataset.from_tensor_slices(perms).flat_map(
        lambda p: tf.data.Dataset.from_tensor_slices(p).batch(batch_size)
    )
    return ds.map(lambda i: (tf.gather(xt, i), tf.gather(yt, i))).prefetch(tf.data.AUTOTUNE)


def fit_head(
    model, cfg: dict, train_rows, val_rows, labels, state: dict, callback, extra_callbacks=()
) -> None:
    """Train the head after ``state["epochs_done"]``; ``callback``: the training job's epoch
    callback (early stopping, checkpoint, MLflow); ``extra_callbacks``: more Keras callbacks
    for the Keras head (the stop between batches)."""
    import math

    split = EmbeddedSplit.of(cfg, train_rows, val_rows, labels)
    initial_epoch, epochs, bs = state["epochs_done"], cfg["epochs"], cfg["batch_size"]
    mode = musicnn_options(cfg)["mode"]
    if mode == "probe":
        return _fit_probe(model, cfg, split, state, callback)
    if initial_epoch >= epochs or state["stopped_early"]:
        return None
    x_train, y_train, _ = split.head_inputs("train", track_pooled(cfg))
    x_val, y_val, _ = split.head_inputs("val", track_pooled(cfg))
    model.fit(
        _train_batches(x_train, y_train, bs, cfg["seed"], initial_epoch, epochs),
        validation_data=(x_val, y_val),
        validation_batch_size=bs,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=math.ceil(len(y_train) / bs),
        shuffle=False,
        callbacks=[callback, *extra_callbacks],
        verbose=2,
    )
    return None


def _fit_probe(model, cfg, split, state, callback) -> None:
    """The probe (fitted when the job built it) as one "epoch": its cross-validated log loss
    is the epoch's ``val_loss``; the choice goes to MLflow."""
    import mlflow

    if state["epochs_done"] >= 1:
        return
    choice = probe_choice(cfg, split)
    callback.set_model(model)
    callback.on_epoch_begin(0)
    x_train, y_train, _ = split.head_inputs("train", track_pooled(cfg))
    x_val, y_val, _ = split.head_inputs("val", track_pooled(cfg))
    loss, accuracy = _scores(model, x_train, y_train)
    val_loss, val_accuracy = _scores(model, x_val, y_val)
    knn = isinstance(choice, knn_head.KnnChoice)
    chosen = {"k": choice.k} if knn else {"C": choice.c}
    if mlflow.active_run() is not None:
        params = {"probe.classifier": "knn" if knn else "logistic", "probe.pooling": choice.pooling}
        params.update({f"probe.{name}": value for name, value in chosen.items()})
        if knn:
            params["probe.reference_segments"] = len(choice.reference)
        mlflow.log_params({**params, "probe.cv_folds": choice.folds})
    logs = {
        **chosen,
        "temperature": choice.temperature,
        "cv_loss": choice.cv_loss,
        "loss": loss,
        "accuracy": accuracy,
        "val_loss": choice.cv_loss,
        "val_accuracy": val_accuracy,
        "fit_val_loss": val_loss,
    }
    if track_pooled(cfg):
        logs["pooling_mean_std"] = float(choice.pooling == "mean_std")
    callback.on_epoch_end(0, logs)


def _layer_or_none(model, name: str):
    return model.get_layer(name) if name in {layer.name for layer in model.layers} else None


def full_model(head, cfg: dict, input_shape):
    """The saved model of a frozen/probe job: log-mel -> backbone(s) -> the head's
    standardisation, dropout and softmax (weights copied); with ``pooling``: log-mel ->
    backbone(s) -> ``TRACK_MOMENTS`` ``[e, e * e]`` -> the track head (``aggregation``)."""
    import keras
    from keras import layers, ops

    opts = musicnn_options(cfg)
    shape = tuple(input_shape)
    backbone = embedding_network(opts["checkpoint"], opts["embedding"], shape[1], "frozen")
    if not track_pooled(cfg):
        norm = head.get_layer("embedding_standardisation")
        mean = np.asarray(norm.input_mean, dtype=np.float32).reshape(-1)
        variance = np.asarray(norm.input_variance, dtype=np.float32).reshape(-1)
        return classifier_on(
            backbone,
            input_shape,
            head.output.shape[-1],
            opts["mode"],
            opts["dropout"],
            standardise=(mean, variance),
            head=head.get_layer("probs").get_weights(),
            tail=_layer_or_none(head, knn_head.KNN_BLOCK),
        )
    inputs = keras.Input(shape=shape, name="logmel")
    x = layers.Reshape(shape[:2], name="drop_channel")(inputs)
    e = backbone(layers.Permute((2, 1), name="to_frames_mels")(x))
    e = ops.cast(e, "float64")  # e * e exactly: the head subtracts mean(e)^2 from its mean
    squares = layers.Multiply(dtype="float64", name="embedding_squared")([e, e])
    moments = layers.Concatenate(dtype="float64", name=TRACK_MOMENTS)([e, squares])
    return keras.Model(inputs, head(moments), name=f"musicnn_{opts['mode']}_tracks")
