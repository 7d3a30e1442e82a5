"""Batch predictions in the workflow: a ``predict`` set of new, unlabelled audio.

* A set is a plain directory (a string in ``predict.sets``) or a DVC-tracked directory
  (``{target: ...}`` inside ``data.dvc.repo``, or ``{repo: ..., target: ...}``). Every audio file
  below it, at any depth, is one track (``audio_source.scan_unlabelled``; a link leaving the
  set's directory is skipped with the reason unless ``data.follow_links``).
* Its files are extracted by the training data's sharded machinery (``shards.extract_shard``,
  ``shards.write_collection``) with the feature parameters recorded with the model
  (``results/models/{model}/features.json``), not with today's ``features`` config.
* Predictions go through ``predict.predict_segments``: the batching, test-time windows
  (``training.evaluate.overlap``, as in evaluation), window -> track mean
  (``aggregation.SegmentsToTracks``) and CSV rows of the ``predict`` command.
* The drift report is ``reports.data_drift_report`` of the set's track table against the train
  tracks; in it the set's ``genre`` column is the predicted genre, so the drift of ``genre`` is
  the prediction drift (predicted genres against the training labels).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from genre_classification.columns import PREDICT_SET_COLUMNS
from genre_classification.features.features import read_features
from genre_classification.features.shards import extract_shard
from genre_classification.fileio import atomic_path, read_tsv, write_json
from genre_classification.predict.predict import Row, csv_row, load_model, predict_segments
from genre_classification.provenance import result_provenance
from genre_classification.reports.reports import TARGET, data_drift_report, log_drift
from genre_classification.reports.track_table import (
    PREDICTION_COLUMN,
    build_track_table,
    read_table,
    write_table,
)
from genre_classification.training import model_info

log = logging.getLogger(__name__)


def set_source(spec: str | dict, data: dict) -> dict:
    """A ``data``-like config section (``source``, ``dir``/``dvc``, ``extensions``) for the
    ``predict.sets`` entry ``spec``; the extensions are ``data.extensions``."""
    if isinstance(spec, str):
        return {"source": "dir", "dir": spec, "extensions": data["extensions"]}
    repo = spec.get("repo") or data["dvc"]["repo"]
    return {
        "source": "dvc",
        "dvc": {"repo": repo, "target": spec["target"]},
        "extensions": data["extensions"],
    }


def _items(rows: list[dict]) -> Iterator[tuple[str, object, str]]:
    """``(path, segments, error)`` of every track; feature files are read one at a time."""
    for row in rows:
        if row["status"] == "rejected":
            yield row["path"], None, row["reason"]
        else:
            yield row["path"], read_features(row["features"])[0], ""


def write_predictions(
    model_path: str | Path,
    manifest_path: str | Path,
    rejected_path: str | Path,
    predictions_path: str | Path,
    top_k: int = 3,
    overlap: float = 0.0,
) -> tuple[int, int]:
    """One row per file of the set (sorted by track): the ``predict`` command's columns after
    ``track``; a rejected file has its reason in ``error``. Returns ``(n_files, n_failed)``.
    ``overlap``: test-time windows as in evaluation (``training.evaluate.overlap``)."""
    loaded = load_model(str(model_path))
    rows = [{**r, "status": "accepted"} for r in read_tsv(manifest_path)]
    rows += [{**r, "status": "rejected"} for r in read_tsv(rejected_path)]
    rows.sort(key=lambda r: r["track"])
    n_failed = 0
    with atomic_path(predictions_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICT_SET_COLUMNS)
        predicted: Iterator[Row] = predict_segments(loaded, _items(rows), overlap=overlap)
        for row, result in zip(rows, predicted, strict=True):
            writer.writerow([row["track"], *csv_row(result, loaded.labels, max(1, top_k))])
            n_failed += bool(result.error)
    log.info("%s: %d files, %d failed, model %s", predictions_path, len(rows), n_failed, model_path)
    return len(rows), n_failed


def set_track_table(
    manifest_path: str | Path, predictions_path: str | Path, n_bands: int, n_mfcc: int
) -> pd.DataFrame:
    """Track table of the set's feature files with the predicted genre as ``prediction``."""
    manifest = read_tsv(manifest_path)
    if not manifest:
        raise ValueError(
            f"{manifest_path}: no file of the set could be used (see its predictions' error "
            "column): no drift report"
        )
    table = build_track_table(manifest, n_bands=n_bands, n_mfcc=n_mfcc)
    predictions = pd.read_csv(predictions_path, dtype=str, keep_default_na=False)
    predicted = dict(zip(predictions["track"], predictions["genre"], strict=True))
    table[PREDICTION_COLUMN] = table["track"].map(predicted)
    return table


def shares(values: pd.Series) -> dict[str, float]:
    return {str(k): round(float(v), 6) for k, v in values.value_counts(normalize=True).items()}


def drift_report(
    set_table: pd.DataFrame,
    training_table: pd.DataFrame,
    html_path: str | Path,
    json_path: str | Path,
    set_name: str,
    model: str,
    drift_share: float = 0.5,
    method: str | None = None,
    threshold: float | None = None,
    provenance: dict | None = None,
) -> dict:
    """Data and prediction drift of the set against the train tracks (one Evidently report);
    the JSON summary of ``data_drift_report`` plus ``prediction_drift``."""
    reference = training_table[training_table["split"] == "train"]
    if reference.empty:
        raise ValueError("the training track table has no train tracks")
    current = set_table.assign(**{TARGET: set_table[PREDICTION_COLUMN]})
    summary = data_drift_report(
        reference,
        current,
        html_path,
        json_path,
        drift_share=drift_share,
        method=method,
        threshold=threshold,
        reference_info={"name": "train tracks (genre: true label)"},
        current_info={"name": f"predict set {set_name} (genre: predicted by {model})"},
        provenance=provenance,
    )
    summary["prediction_drift"] = {
        **summary["features"][TARGET],
        "training_label_shares": shares(reference[TARGET]),
        "predicted_shares": shares(current[TARGET]),
    }
    summary.update(set=set_name, model=model)
    write_json(json_path, summary, default=str)
    return summary


def extract_set_shard(members: list, model_features_path: str | Path, **shard_options) -> list:
    """One extraction shard of a set (``members``: its ``AudioFile``s) with the feature
    parameters recorded with the model (``model_features_path``), not today's config;
    ``shard_options``: ``shards.extract_shard``'s ``root``, ``features_dir``, ``record_path``,
    ``threads``."""

    params, _ = model_info.read(model_features_path)
    return extract_shard(members, params=params, **shard_options)


def write_drift_report(
    manifest_path: str | Path,
    predictions_path: str | Path,
    training_table_path: str | Path,
    outputs: dict[str, str | Path],
    *,
    data_version_path: str | Path,
    set_name: str,
    model: str,
    table_options: dict[str, int],
    **drift_options,
) -> dict:
    """The set's track table (``outputs["table"]``, ``set_track_table`` with ``table_options``:
    ``n_bands``, ``n_mfcc``) and its drift report (``outputs["html"]``, ``outputs["json"]``)
    against the train tracks of the training track table (``drift_report`` with
    ``drift_options``: ``drift_share``, ``method``, ``threshold``)."""
    table = set_track_table(manifest_path, predictions_path, **table_options)
    write_table(table, outputs["table"])
    training = read_table(training_table_path)
    provenance = result_provenance(data_version_path)
    html_path, json_path = outputs["html"], outputs["json"]
    summary = drift_report(
        table,
        training,
        html_path,
        json_path,
        set_name,
        model,
        **drift_options,
        provenance=provenance,
    )
    predicted = summary["prediction_drift"]
    log_drift(
        set_name,
        summary,
        f"; prediction drift: {predicted['drifted']} ({predicted['predicted_shares']})",
    )
    return summary
