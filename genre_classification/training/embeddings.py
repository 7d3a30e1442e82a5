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
* ``probe``: scikit-learn's multinomial logistic regression on the standardised embedding, one
  fit per regularisation strength of ``PROBE_C`` (strongest first; each one is an "epoch" of the
  history, with the job's early stopping), the best validation loss wins;
* ``finetune`` with ``head_init: probe``: the whole network trains from the probe's head (not
  a random one) on top of the standardisation.

Whatever was trained, the saved model is assembled as ``(96, frames, 1)`` log-mel -> backbone
-> standardisation -> dropout -> softmax (``full_model``), so ``predict``, the registry and the
predict sets use it as any other model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genre_classification.aggregation import aggregate_tracks
from genre_classification.columns import EMBEDDING_RECORD_COLUMNS
from genre_classification.features.packs import accepted_files
from genre_classification.fileio import atomic_path, write_frame
from genre_classification.training import augment
from genre_classification.training.dataset import _read_file, epoch_permutation, track_id
from genre_classification.training.model_kinds import kind_of, musicnn_options
from genre_classification.training.musicnn import (
    check_options,
    classifier_on,
    musicnn_provenance,
    pretrained_backbone,
    standardisation_layer,
)
from genre_classification.training.tf_runtime import set_threads

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

CACHE_DIR = ".embeddings"
SHARD_RECORDS = ".shards"  # in CACHE_DIR: the records of the embed_features jobs
# Inverse regularisation strengths of the probe, strongest regularisation first.
PROBE_C = tuple(float(c) for c in np.logspace(-4, 2, 13))
PROBE_MAX_ITER = 2000
BATCH = 64  # segments per backbone call when embedding


def backbone_of(cfg: dict) -> tuple[str, str]:
    """``(checkpoint, embedding)`` of a musicnn model entry."""
    opts = musicnn_options(cfg)
    return opts["checkpoint"], opts["embedding"]


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
    backbones = {backbone_of(cfg) for cfg in entries if kind_of(cfg).reads_embeddings("train")}
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

    def rows(self, rows, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and class indices of every segment of the tracks in ``rows`` (split
        manifest rows, in their order)."""
        index = {genre: i for i, genre in enumerate(labels)}
        xs, ys = [], []
        for row in rows.itertuples(index=False):
            e = self.track(row.features, row.genre)
            xs.append(e)
            ys.append(np.full(len(e), index[row.genre], dtype=np.int32))
        return np.concatenate(xs), np.concatenate(ys)


_LAST: dict = {}


class EmbeddedSplit:
    """Train and val embeddings of a split (computed or read from the cache once per job)."""

    def __init__(self, cfg: dict, train_rows, val_rows, labels: list[str]):
        import time

        start = time.perf_counter()
        embedder = Embedder(*backbone_of(cfg))
        self.x_train, self.y_train = embedder.rows(train_rows, labels)
        self.x_val, self.y_val = embedder.rows(val_rows, labels)
        self.mean = self.x_train.astype(np.float64).mean(axis=0)
        self.variance = self.x_train.astype(np.float64).var(axis=0)
        self.n_classes = len(labels)
        log.info(
            "Embeddings %s of %d train and %d val segments in %.1f s (%d of %d files computed, "
            "the rest read from the cache %s)",
            embedder.name, len(self.y_train), len(self.y_val), time.perf_counter() - start,
            embedder.computed, len(train_rows) + len(val_rows),
            cache_path(train_rows.iloc[0]["features"], embedder.name).parent.parent,
        )  # fmt: skip

    @classmethod
    def of(cls, cfg: dict, train_rows, val_rows, labels: list[str]) -> EmbeddedSplit:
        """The split's embeddings, computed once per process for the same tracks and backbone
        (the job builds its model and fits it from the same arrays)."""
        key = (
            *backbone_of(cfg),
            tuple(train_rows["features"]),
            tuple(val_rows["features"]),
            tuple(labels),
        )
        if _LAST.get("key") != key:
            _LAST.clear()
            _LAST.update(key=key, split=cls(cfg, train_rows, val_rows, labels))
        return _LAST["split"]

    def standardised(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / np.sqrt(np.maximum(self.variance, 1e-6))).astype(np.float32)


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
    standardisation, dropout and softmax layers (the same layer objects, so the same weights
    and arithmetic as the model's own tail)."""
    import keras

    norm = model.get_layer("embedding_standardisation")
    width = int(np.asarray(norm.input_mean).size)
    inputs = keras.Input(shape=(width,), name="embedding")
    outputs = model.get_layer("probs")(model.get_layer("head_dropout")(norm(inputs)))
    return keras.Model(inputs, outputs, name="musicnn_head")


def predict_tracks(model, cfg: dict, rows, labels: list[str], batch_size: int, chunk_segments: int):
    """``evaluate.predict_tracks`` of a frozen/probe model with windows = its segments
    (``overlap`` 0): the head on the cached embeddings of the tracks of ``rows`` (computed
    for the files not cached), about ``chunk_segments`` segments at a time. The same
    probabilities as the whole model on the segments (``tests/test_evaluate.py``)."""

    checkpoint, embedding = backbone_of(cfg)
    embedder, head = Embedder(checkpoint, embedding), head_of(model)
    tracks, probs, counts = [], [], {"segments": 0, "windows": 0}
    xs, owners = [], []

    def flush():
        chunk = head.predict(np.concatenate(xs), batch_size=batch_size, verbose=0)
        names, means = aggregate_tracks(chunk, owners)
        tracks.extend(names)
        probs.append(means)
        xs.clear()
        owners.clear()

    for row in rows.itertuples(index=False):
        e = embedder.track(row.features, row.genre)
        xs.append(e)
        owners.extend([track_id(row.genre, row.track)] * len(e))
        counts["segments"] += len(e)
        if len(owners) >= chunk_segments:
            flush()
    if xs:
        flush()
    counts["windows"] = counts["segments"]
    log.info(
        "%d tracks predicted on the embeddings of %s (%d files computed, the rest cached)",
        len(tracks), embedder.name, embedder.computed,
    )  # fmt: skip
    return tracks, np.concatenate(probs), counts


# --- the heads --------------------------------------------------------------------------------


def head_model(width: int, n_classes: int, mean, variance, dropout: float):
    """Embedding -> standardisation -> dropout -> softmax with a zero kernel (chance)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(width,), name="embedding")
    x = standardisation_layer(mean, variance)(inputs)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(
        n_classes, activation="softmax", kernel_initializer="zeros", dtype="float32", name="probs"
    )(x)
    return keras.Model(inputs, outputs, name="musicnn_head")


def fit_probe(x_train, y_train, n_classes: int, c: float, seed: int):
    """``(kernel (width, n_classes), bias (n_classes,))`` of a multinomial logistic regression
    on standardised embeddings; two classes as a softmax of ``[-z/2, z/2]``."""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(C=c, max_iter=PROBE_MAX_ITER, random_state=seed)
    probe.fit(x_train, y_train)
    coef, intercept = probe.coef_, probe.intercept_
    if n_classes == 2 and coef.shape[0] == 1:
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    if coef.shape[0] != n_classes:
        raise ValueError(f"probe saw {coef.shape[0]} of {n_classes} classes in training")
    return coef.T.astype(np.float32), intercept.astype(np.float32)


def _log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))


def _scores(model, x, y) -> tuple[float, float]:
    probs = np.asarray(model.predict(x, batch_size=1024, verbose=0))
    return _log_loss(probs, y), float(np.mean(probs.argmax(axis=1) == y))


def best_probe(split: EmbeddedSplit, seed: int) -> tuple[float, tuple]:
    """The probe of the ``PROBE_C`` value with the lowest validation loss: ``(c, head)``."""
    xt, xv = split.standardised(split.x_train), split.standardised(split.x_val)
    best = None
    for c in PROBE_C:
        kernel, bias = fit_probe(xt, split.y_train, split.n_classes, c, seed)
        logits = xv @ kernel + bias
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        loss = _log_loss(probs / probs.sum(axis=1, keepdims=True), split.y_val)
        if best is None or loss < best[0]:
            best = (loss, c, (kernel, bias))
    log.info("probe head: C=%g, validation loss %.4f", best[1], best[0])
    return best[1], best[2]


# --- the training job's steps (train.model_and_state, fit, finalize) -------------------------


def initial_model(cfg: dict, train_rows, val_rows, labels: list[str], input_shape):
    """The model a new job starts from: the head model (frozen, probe; its input is the
    embedding), or the full fine-tune model with the probe's head and standardisation."""

    opts = musicnn_options(cfg)
    check_options(
        input_shape,
        opts["mode"],
        opts["embedding"],
        opts["backbone_learning_rate_factor"],
        opts["checkpoint"],
        opts["head_init"],
    )
    if opts["mode"] != "finetune" and augment.is_active(cfg["augment"]):
        raise ValueError(
            f"augment needs mode: finetune (mode {opts['mode']} trains on embeddings computed "
            "once per file)"
        )
    split = EmbeddedSplit.of(cfg, train_rows, val_rows, labels)
    if opts["mode"] != "finetune":
        width = split.x_train.shape[1]
        return head_model(width, len(labels), split.mean, split.variance, opts["dropout"])
    _, head = best_probe(split, cfg["seed"])
    backbone = pretrained_backbone(
        opts["checkpoint"], opts["embedding"], tuple(input_shape)[1], "finetune"
    )
    model = classifier_on(
        backbone,
        input_shape,
        len(labels),
        "finetune",
        opts["dropout"],
        standardise=(split.mean, split.variance),
        head=head,
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
    if musicnn_options(cfg)["mode"] == "probe":
        return _fit_probe_grid(model, cfg, split, state, callback)
    if initial_epoch >= epochs or state["stopped_early"]:
        return None
    model.fit(
        _train_batches(split.x_train, split.y_train, bs, cfg["seed"], initial_epoch, epochs),
        validation_data=(split.x_val, split.y_val),
        validation_batch_size=bs,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=math.ceil(len(split.y_train) / bs),
        shuffle=False,
        callbacks=[callback, *extra_callbacks],
        verbose=2,
    )
    return None


def _fit_probe_grid(model, cfg, split, state, callback) -> None:
    """One "epoch" per value of ``PROBE_C`` (strongest regularisation first), each a
    logistic-regression fit copied into the head's softmax layer, then the job's epoch
    callback (best weights, early stopping, checkpoint, MLflow)."""
    xt = split.standardised(split.x_train)
    callback.set_model(model)
    probs = model.get_layer("probs")
    for epoch in range(state["epochs_done"], len(PROBE_C)):
        if state["stopped_early"]:
            break
        callback.on_epoch_begin(epoch)
        kernel, bias = fit_probe(xt, split.y_train, split.n_classes, PROBE_C[epoch], cfg["seed"])
        probs.set_weights([kernel, bias])
        loss, accuracy = _scores(model, split.x_train, split.y_train)
        val_loss, val_accuracy = _scores(model, split.x_val, split.y_val)
        logs = {
            "C": PROBE_C[epoch],
            "loss": loss,
            "accuracy": accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
        }
        callback.on_epoch_end(epoch, logs)


def full_model(head, cfg: dict, input_shape):
    """The saved model of a frozen/probe job: log-mel -> backbone -> the head's
    standardisation, dropout and softmax (weights copied)."""

    opts = musicnn_options(cfg)
    norm = head.get_layer("embedding_standardisation")
    mean = np.asarray(norm.input_mean, dtype=np.float32).reshape(-1)
    variance = np.asarray(norm.input_variance, dtype=np.float32).reshape(-1)
    backbone = pretrained_backbone(
        opts["checkpoint"], opts["embedding"], tuple(input_shape)[1], "frozen"
    )
    return classifier_on(
        backbone,
        input_shape,
        head.output.shape[-1],
        opts["mode"],
        opts["dropout"],
        standardise=(mean, variance),
        head=head.get_layer("probs").get_weights(),
    )
