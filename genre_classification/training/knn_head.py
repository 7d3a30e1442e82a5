"""The k-nearest-neighbour probe (musicnn ``mode: probe, classifier: knn``).

A segment's answer is a weighted vote of the ``k`` training segments whose standardised
embeddings point in the most similar direction (cosine similarity ``s``), each weighing
``exp((s - 1) / VOTE_TEMPERATURE)``, smoothed by ``SMOOTHING`` so that no class has
probability 0; a track's answer is the mean over its segments, as for the logistic probe. k is
chosen among ``KNN_K`` by the same grouped cross-validation over the train and val tracks
(``track_head.cv_folds``): the lowest out-of-fold log loss of the tracks' answers, each k at
its own fitted temperature, which the model then keeps.

The reference set is every training segment up to ``max_reference`` (a seeded sample above
that): the saved model holds it (``max_reference`` x embedding width floats), so its size and
a prediction's cost stop growing with the collection there. The saved head uses built-in Keras
layers and ops only (``knn_block``) and computes what ``log_votes`` computes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from genre_classification.training import track_head

log = logging.getLogger(__name__)

KNN_K = (5, 10, 20, 40)
VOTE_TEMPERATURE = 0.1
SMOOTHING = 0.01
KNN_BLOCK = "knn_votes"
QUERY_CHUNK = 2048  # segments compared with the reference set at a time (memory bound)


@dataclass
class KnnChoice:
    k: int
    cv_loss: float
    folds: int
    temperature: float
    mean: np.ndarray  # standardisation of the embedding
    variance: np.ndarray
    reference: np.ndarray  # (R, width) unit vectors of the standardised reference segments
    reference_labels: np.ndarray  # (R,) class of each
    n_classes: int
    losses: dict = field(default_factory=dict)  # k -> out-of-fold log loss at its temperature
    pooling: str = "segment"

    @property
    def kernel(self) -> np.ndarray:
        """The "probs" layer after ``knn_block`` is the identity: softmax(log p) = p."""
        return np.eye(self.n_classes, dtype=np.float32)

    @property
    def bias(self) -> np.ndarray:
        return np.zeros(self.n_classes, dtype=np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def reference_rows(n_rows: int, max_reference: int, seed: int) -> np.ndarray:
    """The rows of the reference set: all of them, or a seeded sample of ``max_reference``."""
    if n_rows <= max_reference:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).permutation(n_rows)[:max_reference])


def standardised_units(x, mean, variance) -> np.ndarray:
    """Rows of ``x`` standardised, as unit vectors (float32): what the votes compare."""
    return unit_rows((np.asarray(x, dtype=np.float32) - mean) / np.sqrt(variance)).astype(
        np.float32
    )


def log_votes(reference, reference_labels, queries, n_classes: int, ks) -> dict:
    """``{k: (queries, n_classes) log-probabilities}`` of the weighted votes of each query's
    ``k`` most similar reference rows (all unit vectors), ``QUERY_CHUNK`` queries at a time.
    Rows tying with the k-th similarity vote too, as in ``knn_block``."""
    one_hot = np.eye(n_classes, dtype=np.float32)[reference_labels]
    out = {k: np.empty((len(queries), n_classes)) for k in ks}
    for start in range(0, len(queries), QUERY_CHUNK):
        s = queries[start : start + QUERY_CHUNK] @ reference.T
        ordered = -np.partition(-s, max(ks) - 1, axis=1)[:, : max(ks)]  # the top, unordered
        ordered = -np.sort(-ordered, axis=1)
        weights = np.exp((s - 1.0) / VOTE_TEMPERATURE)
        for k in ks:
            kth = ordered[:, k - 1 : k]
            votes = np.where(s >= kth, weights, 0.0) @ one_hot
            p = votes / votes.sum(axis=1, keepdims=True)
            out[k][start : start + len(s)] = np.log(p * (1 - SMOOTHING) + SMOOTHING / n_classes)
    return out


def choose_knn_probe(
    x: np.ndarray,
    owners: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    seed: int,
    max_reference: int,
) -> KnnChoice:
    """The kNN probe on segments ``x`` (``owners``: each segment's track index; ``y``,
    ``groups``: per track) of the k whose tracks' out-of-fold answers have the lowest log loss
    at their fitted temperature, over ``track_head.cv_folds``; its reference set every segment
    (up to ``max_reference``)."""
    owners = np.asarray(owners, dtype=np.int64)
    y = np.asarray(y)
    row_y = y[owners]
    folds = track_head.cv_folds(y, groups, seed)
    row_fold = track_head.row_folds(folds, len(y), owners)
    smallest = min(min(int(np.sum(row_fold != i)), max_reference) for i in range(len(folds)))
    ks = [k for k in KNN_K if k <= smallest] or [smallest]
    oof = {k: np.zeros((len(x), n_classes)) for k in ks}
    for i in range(len(folds)):
        train, held = np.flatnonzero(row_fold != i), row_fold == i
        mean, variance = track_head.standardisation(x[train])
        ref = train[reference_rows(len(train), max_reference, seed)]
        votes = log_votes(
            standardised_units(x[ref], mean, variance),
            row_y[ref],
            standardised_units(x[held], mean, variance),
            n_classes,
            ks,
        )
        for k in ks:
            oof[k][held] = votes[k]
    temperatures = {k: track_head.fit_temperature(oof[k], owners, row_y) for k in ks}
    losses = {k: track_head.track_log_loss(oof[k], owners, row_y, temperatures[k]) for k in ks}
    k = min(losses, key=losses.get)
    mean, variance = track_head.standardisation(x)
    ref = reference_rows(len(x), max_reference, seed)
    log.info(
        "kNN probe: k=%d (out-of-fold log loss of the tracks %.4f over %d folds of %d tracks), "
        "temperature %.3f, %d reference segments of %d",
        k, losses[k], len(folds), len(y), temperatures[k], len(ref), len(x),
    )  # fmt: skip
    return KnnChoice(
        k=k,
        cv_loss=losses[k],
        folds=len(folds),
        temperature=temperatures[k],
        mean=mean,
        variance=variance,
        reference=standardised_units(x[ref], mean, variance),
        reference_labels=row_y[ref],
        n_classes=n_classes,
        losses=losses,
    )


def knn_block(choice: KnnChoice):
    """Standardised embedding -> its unit vector -> similarity to every reference row (a
    fixed ``Dense``) -> the weights of the k most similar -> class votes (a fixed one-hot
    ``Dense``) -> smoothed log-probabilities: ``log_votes`` in built-in layers and ops."""
    import keras
    from keras import layers, ops

    n_reference, width = choice.reference.shape
    inputs = keras.Input(shape=(width,), name="standardised_embedding")
    x = layers.UnitNormalization(name="unit_embedding")(inputs)
    similarity = layers.Dense(n_reference, use_bias=False, trainable=False, name="similarity")
    s = similarity(x)
    kth = ops.top_k(s, choice.k)[0][:, -1:]
    weights = ops.where(s >= kth, ops.exp((s - 1.0) / VOTE_TEMPERATURE), 0.0)
    class_votes = layers.Dense(choice.n_classes, use_bias=False, trainable=False, name="votes")
    votes = class_votes(weights)
    p = votes / ops.sum(votes, axis=1, keepdims=True)
    outputs = ops.log(p * (1 - SMOOTHING) + SMOOTHING / choice.n_classes)
    block = keras.Model(inputs, outputs, name=KNN_BLOCK)
    similarity.set_weights([choice.reference.T.astype(np.float32)])
    one_hot = np.eye(choice.n_classes, dtype=np.float32)[choice.reference_labels]
    class_votes.set_weights([one_hot])
    return block
