"""Track-level evaluation on the test split: metrics.json, predictions.csv, confusion matrix PNG.

A track's prediction is the mean of the softmax probabilities of its windows: its segments
(``overlap`` 0), or windows of its continuous log-mel that overlap by ``overlap``
(``dataset.overlap_windows``, shared with ``predict.predict_segments``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from genre_classification import fileio, provenance, tracking
from genre_classification.aggregation import TEMPERATURE, SegmentsToTracks, temperature_of
from genre_classification.columns import EVAL_PREDICTION_COLUMNS
from genre_classification.evaluation.registry import register_and_promote
from genre_classification.training import calibration, dataset, embeddings
from genre_classification.training.model_kinds import kind_of

log = logging.getLogger(__name__)

# Segments read and predicted at a time: 4096 x 128 x 129 float32 = 270 MB (plus the windows).
CHUNK_SEGMENTS = 4096


def compute_metrics(y_true, y_pred, labels: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1 and per-genre scores (zero_division=0).

    ``per_genre`` lists every genre of ``labels``; the macro averages are over the genres that
    occur as truth or prediction (``macro_genres``, scikit-learn's default): a genre of the model
    without test tracks that is never predicted does not count as a zero, one that is predicted
    counts with F1 0 (its predictions are all wrong). The same definition as the classification
    report (``genre_classification.reports.reports``).
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    classes = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    present = sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()))
    mp, mr, mf, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=present, average="macro", zero_division=0
    )
    untested = [labels[i] for i in classes if s[i] == 0]
    if untested:
        log.warning("no test tracks of %s: left out of the macro scores unless predicted", untested)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_precision": float(mp),
        "macro_recall": float(mr),
        "macro_f1": float(mf),
        "macro_genres": [labels[i] for i in present],
        "n_tracks": int(len(y_true)),
        "per_genre": {
            genre: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, genre in enumerate(labels)
        },
    }


ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, y_true, bins: int = ECE_BINS) -> float:
    """Top-label expected calibration error: over ``bins`` equal-width bins of the predicted
    class's probability, the track-weighted mean of |accuracy - mean probability|."""
    probs = np.asarray(probs, dtype=np.float64)
    if not len(probs):
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gaps = [
        abs(correct[which == b].mean() - confidence[which == b].mean()) * np.sum(which == b)
        for b in range(bins)
        if np.any(which == b)
    ]
    return float(np.sum(gaps) / len(probs))


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities before temperature scaling: softmax(T * log p)."""
    logits = temperature * np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, 1.0))
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def calibration_metrics(model, probs: np.ndarray, y_true, before: np.ndarray | None = None) -> dict:
    """``ece`` of the probabilities users read; for a temperature-scaled model also its
    ``temperature`` and the ``ece_uncalibrated`` of the same tracks before scaling: ``before``
    (a model whose track answer is a mean of segment probabilities), else those of a track
    head, ``uncalibrated(probs, T)``."""
    result = {"ece": expected_calibration_error(probs, y_true)}
    temperature = temperature_of(model)
    if temperature is not None:
        result["temperature"] = temperature
        if before is None:
            before = uncalibrated(probs, temperature)
        result["ece_uncalibrated"] = expected_calibration_error(before, y_true)
    return result


def predictions_table(tracks, y_true, y_pred, probs, labels: list[str]) -> pd.DataFrame:
    values = (list(tracks), [labels[i] for i in y_true], [labels[i] for i in y_pred])
    table = pd.DataFrame(dict(zip(EVAL_PREDICTION_COLUMNS, values, strict=True)))
    for i, genre in enumerate(labels):
        table[f"prob_{genre}"] = np.round(probs[:, i], 6)
    return table


def plot_confusion_matrix(y_true, y_pred, labels: list[str], path: str | Path, title: str = ""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(labels))))
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted genre")
    ax.set_ylabel("true genre")
    ax.set_title(title or "Confusion matrix (test tracks)")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            color = "white" if cm[i, j] > threshold else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return cm


def predict_tracks(
    model,
    rows: pd.DataFrame,
    labels: list[str],
    batch_size: int,
    overlap: float = 0.0,
    chunk_segments: int | None = None,
) -> tuple[list[str], np.ndarray, dict]:
    """``(tracks, mean window probabilities per track, counts)`` of the tracks of ``rows``,
    read and predicted about ``chunk_segments`` segments at a time (memory: one chunk, not
    the split; default ``CHUNK_SEGMENTS``); ``counts``: the numbers of ``segments`` and
    ``windows``."""
    chunk_segments = chunk_segments or CHUNK_SEGMENTS
    parts = SegmentsToTracks.of(model)
    tracks, probs, counts = [], [], {"segments": 0, "windows": 0}
    sizes = rows["n_segments"].to_numpy(dtype=np.int64)
    chunk_of = np.cumsum(sizes) // max(1, chunk_segments) if len(sizes) else sizes
    for chunk in np.unique(chunk_of):
        data = dataset.load_segments(rows[chunk_of == chunk], labels)
        windows, owners = dataset.track_windows(data.x, data.tracks, overlap)
        outputs = parts.per_segment.predict(windows[..., None], batch_size=batch_size, verbose=0)
        names, means = parts.tracks(outputs, owners)
        tracks += names
        probs.append(means)
        counts["segments"] += len(data)
        counts["windows"] += len(windows)
        log.info("%d of %d tracks predicted", len(tracks), len(rows))
    return tracks, np.concatenate(probs), counts


def _labels_of(model, split: pd.DataFrame) -> list[str]:
    labels = dataset.genre_labels(split)
    n_out = model.output_shape[-1]
    if n_out != len(labels):
        raise ValueError(f"model has {n_out} outputs but the split has {len(labels)} genres")
    return labels


def evaluate(
    model_path: str | Path,
    split_path: str | Path,
    metrics_path: str | Path,
    predictions_path: str | Path,
    confusion_path: str | Path,
    run_info_path: str | Path | None = None,
    data_version_path: str | Path | None = None,
    batch_size: int = 64,
    subset: str = "test",
    tracking_uri: str | None = None,
    mlflow_timeout_s: float = 10,
    name: str | None = None,
    feature_records: list[str] | None = None,
    overlap: float = 0.0,
    model_config: dict | None = None,
) -> dict:
    """Evaluate ``model_path`` on the ``subset`` tracks and write the three outputs.

    ``name``: what the confusion matrix title calls the model (default its directory name).
    ``feature_records``: the model's feature set when it is not the default (as in training).
    ``overlap``: windows predicted per track overlap by this share (``dataset.overlap_windows``).
    ``model_config``: the model's entry (validated); a musicnn ``frozen``/``probe`` model with
    ``overlap`` 0 runs only its head, on the embeddings cached beside the features
    (``embeddings.predict_tracks``: the same probabilities as the whole model).

    If ``run_info_path`` (``results/mlflow/runs/{model}.json``) is given, the test metrics and
    the three files are also logged to the training job's MLflow run (its server is checked
    first; ``tracking_uri``: the configured URI, see ``tracking.run_tracking_uri``).
    """
    import keras

    run_info = tracking.read_run_info(run_info_path) if run_info_path else None
    if run_info is not None:
        uri = tracking.run_tracking_uri(run_info, tracking_uri)
        tracking.connect(uri, mlflow_timeout_s)

    model = keras.models.load_model(model_path)
    split = dataset.read_split(split_path, feature_records)
    labels = _labels_of(model, split)
    rows = split[split.split == subset]
    if rows.empty:
        raise ValueError(f"{split_path}: no {subset} tracks")
    on_embeddings = model_config is not None and kind_of(model_config).fits_on_embeddings

    def tracks_of(model):
        if on_embeddings and not overlap:
            return embeddings.predict_tracks(
                model, model_config, rows, labels, batch_size, CHUNK_SEGMENTS
            )
        return predict_tracks(model, rows, labels, batch_size, overlap)

    # a mean of scaled segment probabilities: the same pass gives the unscaled ones beside them
    scaled = TEMPERATURE in {layer.name for layer in model.layers}
    tracks, track_probs, counts = tracks_of(
        calibration.with_uncalibrated(model) if scaled else model
    )
    track_probs, before = np.split(track_probs, 2, axis=1) if scaled else (track_probs, None)
    truth = {dataset.track_id(r.genre, r.track): labels.index(r.genre) for r in rows.itertuples()}
    y_true = np.array([truth[t] for t in tracks])
    y_pred = track_probs.argmax(axis=1)

    metrics = compute_metrics(y_true, y_pred, labels)
    metrics.update(calibration_metrics(model, track_probs, y_true, before))
    metrics["n_segments"] = counts["segments"]
    metrics["overlap"] = float(overlap)
    metrics["n_windows"] = counts["windows"]
    metrics["model"] = str(model_path)
    if data_version_path and Path(data_version_path).is_file():
        metrics.update(provenance.result_provenance(data_version_path))
    else:
        metrics["git_commit"] = provenance.code_commit(".")
        metrics.update(provenance.code_provenance())
    if run_info is not None:
        metrics["mlflow_run_id"] = run_info["run_id"]

    for path in (metrics_path, predictions_path, confusion_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    table = predictions_table(tracks, y_true, y_pred, track_probs, labels)
    fileio.write_frame(predictions_path, table, index=False)
    plot_confusion_matrix(
        y_true,
        y_pred,
        labels,
        confusion_path,
        title=f"{name or Path(model_path).parent.name}: macro-F1 {metrics['macro_f1']:.3f} "
        f"({len(tracks)} {subset} tracks)",
    )
    fileio.write_json(metrics_path, metrics)
    log.info("%s: accuracy %.3f macro-F1 %.3f", subset, metrics["accuracy"], metrics["macro_f1"])

    if run_info is not None:
        tracking.log_to_run(
            uri,
            run_info["run_id"],
            [metrics_path, predictions_path, confusion_path],
            artifact_path="evaluation",
            metrics=mlflow_metrics(metrics),
        )
    return metrics


def evaluate_and_register(
    model_path: str | Path,
    split_path: str | Path,
    run_info_path: str | Path,
    registry_name: str,
    tracking_uri: str | None = None,
    mlflow_timeout_s: float = 10,
    **evaluate_options,
) -> dict:
    """``evaluate`` a trained model, then register it in the MLflow Model Registry under
    ``registry_name`` and decide about the champion alias (``registry.register_and_promote``)."""

    metrics = evaluate(
        model_path,
        split_path,
        run_info_path=run_info_path,
        tracking_uri=tracking_uri,
        mlflow_timeout_s=mlflow_timeout_s,
        **evaluate_options,
    )
    register_and_promote(
        run_info_path,
        metrics,
        registry_name,
        tracking_uri=tracking_uri,
        mlflow_timeout_s=mlflow_timeout_s,
    )
    return metrics


def mlflow_metrics(metrics: dict, prefix: str = "test_") -> dict[str, float]:
    """The test metrics logged to the training job's MLflow run: the macro scores and the
    F1 of each genre."""
    values = {f"{prefix}{k}": metrics[k] for k in (*METRIC_KEYS, *CALIBRATION_KEYS) if k in metrics}
    for genre, scores in metrics["per_genre"].items():
        values[f"{prefix}f1.{genre}"] = scores["f1"]
    return values


METRIC_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
CALIBRATION_KEYS = ("ece", "ece_uncalibrated", "temperature")
