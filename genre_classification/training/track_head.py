"""Heads on one pooled vector per track (musicnn ``pooling``), the probe's choice of C (and
pooling) by grouped cross-validation, on tracks or on segments, and its temperature from it.

A track's vector pools its segments' embeddings ``e``: ``mean`` (their mean) or ``mean_std``
(mean and standard deviation, per dimension). Both come from the track's mean *moments*
``[mean(e), mean(e * e)]``, which is what the saved model averages over a track's segments
(``aggregation``), so the saved model's answer does not depend on how segments are batched.

The probe (logistic regression on the standardised pooled vector) chooses its pooling (with
``auto``) and C by cross-validation over the tracks of train and val together, folds grouped
like the workflow's split (``split.group_by``: no group in two folds) and stratified by genre;
the chosen pair is refitted on all of them. The probe on segments (``pooling: segment``,
``choose_segment_probe``) chooses its C over the same folds by the log loss of the tracks'
answers, each the mean of its segments' probabilities. The out-of-fold logits of the choice give
the temperature T that minimises their log loss (``training.calibration`` applies it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from genre_classification.aggregation import TEMPERATURE, TRACK_HEAD, aggregate_tracks

log = logging.getLogger(__name__)

# Inverse regularisation strengths of the probe, strongest regularisation first.
PROBE_C = tuple(float(c) for c in np.logspace(-4, 2, 13))
PROBE_MAX_ITER = 2000
CV_FOLDS = 5
PATH_PATIENCE = 2  # values of C without a lower held-out loss before a fold's path stops
AUTO_POOLINGS = ("mean", "mean_std")


def track_moments(embeddings: np.ndarray) -> np.ndarray:
    """``(n, w)`` segment embeddings of one track -> its ``(2w,)`` mean moments (float64)."""
    e = np.asarray(embeddings, dtype=np.float64)
    return np.concatenate([e.mean(axis=0), (e * e).mean(axis=0)])


def pooled(moments: np.ndarray, pooling: str) -> np.ndarray:
    """``(tracks, 2w)`` mean moments -> ``(tracks, w)`` means or ``(tracks, 2w)`` mean and
    standard deviation: the same arithmetic as ``head_model``'s first layers."""
    moments = np.asarray(moments, dtype=np.float64)
    width = moments.shape[1] // 2
    mean = moments[:, :width]
    if pooling == "mean":
        return mean
    if pooling == "mean_std":
        return np.concatenate([mean, np.sqrt(np.maximum(moments[:, width:] - mean**2, 0))], 1)
    raise ValueError(f"unknown pooling {pooling!r}")


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.maximum(x.var(axis=0), 1e-6)


def fit_probe(x_train, y_train, n_classes: int, c: float, seed: int):
    """``(kernel (width, n_classes), bias (n_classes,))`` of a multinomial logistic regression
    on standardised inputs; two classes as a softmax of ``[-z/2, z/2]``."""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(C=c, max_iter=PROBE_MAX_ITER, random_state=seed)
    probe.fit(x_train, y_train)
    return _weights(probe, n_classes)


def probe_path(x_train, y_train, n_classes: int, seed: int, held_loss) -> dict:
    """``{C: (kernel, bias, held-out loss)}`` of the probes along ``PROBE_C``, strongest
    regularisation first, each fit warm-started from the one before (the regularisation path:
    a few times faster than fitting each C afresh, the same optimum within the solver's
    tolerance); stops once ``held_loss(kernel, bias)`` has not fallen for ``PATH_PATIENCE``
    values of C, as the weakest regularisations are the slowest fits."""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=PROBE_MAX_ITER, random_state=seed, warm_start=True)
    path, best, since = {}, np.inf, 0
    for c in PROBE_C:
        probe.set_params(C=c)
        probe.fit(x_train, y_train)
        kernel, bias = _weights(probe, n_classes)
        loss = held_loss(kernel, bias)
        path[c] = (kernel, bias, loss)
        best, since = (loss, 0) if loss < best else (best, since + 1)
        if since >= PATH_PATIENCE:
            break
    return path


def _weights(probe, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    coef, intercept = probe.coef_, probe.intercept_
    if n_classes == 2 and coef.shape[0] == 1:
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    if coef.shape[0] != n_classes:
        raise ValueError(f"probe saw {coef.shape[0]} of {n_classes} classes in training")
    return coef.T.astype(np.float32), intercept.astype(np.float32)


def log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes under softmax(logits)."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_probs[np.arange(len(y)), y]))


def fit_temperature_by(loss_at, n: int) -> float:
    """The T in [0.05, 20] minimising ``loss_at(T)`` (the mean log loss of ``n`` examples)
    plus ``(log T)^2 / (2 n)``: a standard normal prior on log T. Without it, a few val
    tracks that are all right drive T towards 0 (ever surer); with many the data decide."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(
        lambda log_t: loss_at(float(np.exp(log_t))) + log_t * log_t / (2 * max(n, 1)),
        bounds=(-3.0, 3.0),
        method="bounded",
    )
    return float(np.exp(found.x))


def track_log_loss(logits: np.ndarray, owners: np.ndarray, y: np.ndarray, t: float) -> float:
    """Mean negative log-likelihood of the true classes of the tracks' answers, the mean of
    softmax(``logits`` / t) over each track's segments (``owners``: a segment's track index,
    ``y``: its class; one segment per track: a plain log loss)."""
    z = logits / t
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    # a track's class is its segments': the mean of their true-class probability is its answer's
    _, answer = aggregate_tracks(p[np.arange(len(p)), y][:, None], owners)
    return float(-np.mean(np.log(np.clip(answer, 1e-300, 1.0))))


def fit_temperature(logits: np.ndarray, owners: np.ndarray, y: np.ndarray) -> float:
    """The T of ``track_log_loss`` over the tracks (``fit_temperature_by``)."""
    logits = np.asarray(logits, dtype=np.float64)
    owners = np.asarray(owners)
    n_tracks = len(np.unique(owners))
    return fit_temperature_by(lambda t: track_log_loss(logits, owners, y, t), n_tracks)


def cv_folds(y: np.ndarray, groups: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds over tracks with no group in two folds: ``CV_FOLDS`` of them, fewer
    when a genre has fewer groups (at least 2); each training part has every genre."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups_per_class = [len(set(groups[y == k])) for k in np.unique(y)]
    n_splits = min(CV_FOLDS, min(groups_per_class))
    if n_splits < 2:
        raise ValueError(
            "choosing the probe by cross-validation needs at least 2 groups (tracks, or "
            "split.group_by groups) of every genre among its tracks (train and val; for a "
            f"fine-tune's head, train); the smallest genre has {min(groups_per_class)}: add "
            "tracks of it, or use musicnn mode: frozen"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


@dataclass
class ProbeChoice:
    pooling: str
    c: float
    cv_loss: float
    folds: int
    temperature: float
    kernel: np.ndarray
    bias: np.ndarray
    mean: np.ndarray  # standardisation of the pooled vectors
    variance: np.ndarray
    losses: dict = field(default_factory=dict)  # (pooling, C) -> out-of-fold log loss


def choose_probe(
    moments: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    poolings: tuple[str, ...],
    seed: int,
) -> ProbeChoice:
    """The probe on tracks of the (pooling, C) with the lowest out-of-fold log loss, refitted
    on every track; its temperature from the out-of-fold logits."""
    folds = cv_folds(y, groups, seed)
    tracks = np.arange(len(y))
    losses, oof_logits = {}, {}
    for pooling in poolings:
        by_c, oof_logits[pooling] = _out_of_fold(
            pooled(moments, pooling), tracks, y, folds, n_classes, seed
        )
        losses.update({(pooling, c): loss for c, loss in by_c.items()})
    (pooling, c), _ = min(losses.items(), key=lambda item: item[1])
    x = pooled(moments, pooling)
    return _refitted(x, tracks, y, pooling, c, losses, len(folds), oof_logits[pooling](c), seed)


def choose_segment_probe(
    x: np.ndarray,
    owners: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    seed: int,
) -> ProbeChoice:
    """The probe on segments (``pooling: segment``: logistic regression on the standardised
    segment embeddings ``x``, a track's answer the mean of its segments' probabilities) of the C
    whose tracks' answers have the lowest out-of-fold log loss, over ``choose_probe``'s folds of
    the tracks (``owners``: each segment's track index; ``y``, ``groups``: per track); refitted
    on every segment, its temperature from the out-of-fold logits."""
    owners = np.asarray(owners, dtype=np.int64)
    folds = cv_folds(y, groups, seed)
    by_c, oof_logits = _out_of_fold(x, owners, y, folds, n_classes, seed)
    losses = {("segment", c): loss for c, loss in by_c.items()}
    c = min(by_c, key=by_c.get)
    return _refitted(x, owners, y, "segment", c, losses, len(folds), oof_logits(c), seed)


def row_folds(folds, n_tracks: int, owners: np.ndarray) -> np.ndarray:
    """The fold in which each row (a segment of track ``owners[row]``) is held out."""
    fold_of = np.empty(n_tracks, dtype=np.int64)
    for i, (_, held) in enumerate(folds):
        fold_of[held] = i
    return fold_of[owners]


def _out_of_fold(x, owners, y, folds, n_classes: int, seed: int):
    """``({C: the tracks' mean out-of-fold log loss}, logits_of)`` of the probes on the rows
    ``x`` (``owners``: each row's track; one row per track for a pooled probe) along each
    fold's ``probe_path``, for the values of C every fold reached; ``logits_of(C)``: every
    row's out-of-fold logits at that C."""
    row_fold, row_y = row_folds(folds, len(y), owners), np.asarray(y)[owners]
    paths, scalings = [], []
    for i in range(len(folds)):
        train, held = row_fold != i, row_fold == i
        mean, variance = standardisation(x[train])
        scalings.append((mean, np.sqrt(variance)))
        xt, xh = (x[train] - mean) / np.sqrt(variance), (x[held] - mean) / np.sqrt(variance)
        held_loss = _held_track_log_loss(xh, owners[held], row_y[held])
        paths.append(probe_path(xt, row_y[train], n_classes, seed, held_loss))
        del xt, xh
    held_tracks = [len(held) for _, held in folds]
    losses = {
        c: sum(p[c][2] * n for p, n in zip(paths, held_tracks, strict=True)) / len(y)
        for c in PROBE_C
        if all(c in path for path in paths)
    }

    def logits_of(c: float) -> np.ndarray:
        oof = np.zeros((len(x), n_classes))
        for i, (path, (mean, scale)) in enumerate(zip(paths, scalings, strict=True)):
            held = row_fold == i
            oof[held] = (x[held] - mean) / scale @ path[c][0] + path[c][1]
        return oof

    return losses, logits_of


def _held_track_log_loss(x_held, owners_held, y_held):
    return lambda kernel, bias: track_log_loss(x_held @ kernel + bias, owners_held, y_held, 1.0)


def _refitted(x, owners, y, pooling, c, losses, n_folds: int, oof_logits, seed: int):
    """The ``ProbeChoice`` of C refitted on every row of ``x``, its temperature fitted on the
    tracks' out-of-fold answers."""
    row_y = np.asarray(y)[owners]
    temperature = fit_temperature(oof_logits, owners, row_y)
    mean, variance = standardisation(x)
    kernel, bias = fit_probe((x - mean) / np.sqrt(variance), row_y, oof_logits.shape[1], c, seed)
    cv_loss = losses[(pooling, c)]
    log.info(
        "probe, pooling %s: C=%g (out-of-fold log loss of the tracks %.4f over %d folds of %d "
        "tracks, %d rows), temperature %.3f",
        pooling, c, cv_loss, n_folds, len(y), len(x), temperature,
    )  # fmt: skip
    return ProbeChoice(
        pooling, c, cv_loss, n_folds, temperature, kernel, bias, mean, variance, losses
    )


def head_model(
    width: int,
    n_classes: int,
    pooling: str,
    mean,
    variance,
    dropout: float,
    temperature: float = 1.0,
):
    """``TRACK_HEAD``: a track's ``(2 * width,)`` mean moments -> pooled vector (``pooled``)
    -> standardisation -> dropout -> logits / temperature -> softmax ("probs"). The logits'
    kernel starts at zero (chance)."""
    import keras
    from keras import layers, ops

    # float64 up to the pooled vector: mean(e * e) - mean(e)^2 cancels digits
    inputs = keras.Input(shape=(2 * width,), dtype="float64", name="moments")
    mean_e = inputs[:, :width]
    x = mean_e
    if pooling == "mean_std":
        std = ops.sqrt(ops.maximum(inputs[:, width:] - mean_e * mean_e, 0.0))
        x = layers.Concatenate(dtype="float64", name="mean_std")([mean_e, std])
    x = ops.cast(x, "float32")
    x = layers.Normalization(
        axis=-1,
        mean=np.asarray(mean, dtype="float32"),
        variance=np.asarray(variance, dtype="float32"),
        dtype="float32",
        name="pooled_standardisation",
    )(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    logits = layers.Dense(n_classes, kernel_initializer="zeros", dtype="float32", name="logits")
    x = layers.Rescaling(1.0 / float(temperature), dtype="float32", name=TEMPERATURE)(logits(x))
    outputs = layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=TRACK_HEAD)


def pooling_of(head) -> str:
    return "mean_std" if "mean_std" in {layer.name for layer in head.layers} else "mean"
