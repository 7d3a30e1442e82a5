"""Evidently 0.7 reports on the per-track table: classification, data drift and data quality.

Evidently 0.7 API used here (checked against the installed 0.7.23):

* ``Report([...], include_tests=...)``; ``report.run(current, reference)`` -- current FIRST --
  returns a ``Snapshot`` with ``save_html(path)`` (self-contained: the JS bundle and the icon font
  are inlined, nothing is fetched from a CDN), ``dict()`` (``{"metrics": [...], "tests": [...]}``)
  and ``json()``;
* ``Dataset.from_pandas(df, data_definition=DataDefinition(numerical_columns=...,
  categorical_columns=..., classification=[MulticlassClassification(...)]))``; two labels need
  ``BinaryClassification(..., pos_label=...)`` (a two-label multiclass task fails with
  "Undefined pos_label");
* presets ``ClassificationPreset`` and ``DataDriftPreset`` in ``evidently.presets``; dataset
  metrics in ``evidently.metrics``; tests are conditions attached to metrics
  (``DuplicatedRowCount(tests=[eq(0)])``, conditions from ``evidently.tests``), not a TestSuite.

Each report writes the Evidently HTML and a small JSON summary whose keys are defined here (not
Evidently's internal layout), so that tests and the workflow can rely on them.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd

from genre_classification import tracking
from genre_classification.fileio import write_json
from genre_classification.provenance import result_provenance
from genre_classification.reports.monitoring import Monitor, add_snapshot, snapshot_labels
from genre_classification.reports.track_table import (
    PREDICTION_COLUMN,
    attach_predictions,
    feature_columns,
    read_table,
)

log = logging.getLogger(__name__)

TARGET = "genre"
PASS = "SUCCESS"


def _write_json(data: dict, path: str | Path) -> None:
    write_json(path, data, default=_json_default)


def _json_default(value):
    try:
        return value.item()  # numpy scalars
    except AttributeError:
        return str(value)


def _save_html(snapshot, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))


def _metric_type(metric: dict) -> str:
    """``"evidently:metric_v2:Accuracy"`` -> ``"Accuracy"``."""
    return metric["config"]["type"].rsplit(":", 1)[-1]


def _status(test: dict) -> str:
    status = test["status"]
    return getattr(status, "value", str(status))


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------

CLASSIFICATION_KEYS = {
    "Accuracy": "accuracy",
    "Precision": "precision",
    "Recall": "recall",
    "F1Score": "f1",
    "RocAuc": "roc_auc",
    "LogLoss": "log_loss",
}
BY_LABEL_KEYS = {
    "PrecisionByLabel": "precision",
    "RecallByLabel": "recall",
    "F1ByLabel": "f1",
    "RocAucByLabel": "roc_auc",
}


def classification_frame(predictions: pd.DataFrame) -> tuple[pd.DataFrame, list[str] | None]:
    """``genre prediction <label>...`` columns for Evidently from a table with predictions.

    ``predictions`` has ``genre`` (true), ``prediction`` and optional ``prob_<genre>`` columns.
    Evidently's multiclass probabilities are one column per label, named by the label. When they
    are given, Evidently 0.7 ignores ``prediction_labels`` and scores the argmax of the
    probabilities, and it needs every probability column's label among the true labels (ROC AUC
    of a class without test tracks is undefined). So they are used only if the probability
    columns are exactly the labels that occur (true or predicted), every one of them has test
    tracks, and their argmax is the ``prediction`` of every row; otherwise the labels are the
    truth and ROC AUC/log loss are left out.
    """
    frame = predictions[[TARGET, PREDICTION_COLUMN]].astype(str).reset_index(drop=True)
    labels = sorted(set(frame[TARGET]) | set(frame[PREDICTION_COLUMN]))
    prob_columns = {c[len("prob_") :]: c for c in predictions.columns if c.startswith("prob_")}
    if not prob_columns:
        return frame, None
    if not set(labels) <= set(prob_columns):
        log.warning("probability columns do not cover labels %s: ROC AUC/log loss left out", labels)
        return frame, None
    untested = sorted(set(prob_columns) - set(frame[TARGET]))
    if untested:
        log.warning("genres %s have no test tracks: ROC AUC/log loss left out", untested)
        return frame, None
    probas = sorted(prob_columns)
    values = predictions[[prob_columns[label] for label in probas]].astype(float).to_numpy()
    argmax = pd.Series(probas).iloc[values.argmax(axis=1)].to_numpy()
    mismatch = int((argmax != frame[PREDICTION_COLUMN].to_numpy()).sum())
    if mismatch:
        log.warning(
            "%d predictions are not the argmax of their probabilities: ROC AUC/log loss left out",
            mismatch,
        )
        return frame, None
    for i, label in enumerate(probas):
        frame[label] = values[:, i]
    return frame, probas


def classification_task(labels: list[str], probas: list[str] | None, frame: pd.DataFrame):
    """Evidently's classification task for ``labels`` (the labels that occur, true or predicted).

    Evidently treats two labels as a binary task and then needs a positive label: the first
    label is positive, its probability (normalised over the two, so that the 0.5 threshold
    Evidently applies gives the argmax, ties to the first label) the only probability column.
    Evidently still reports precision/recall/F1 of both labels (by label). ``frame`` is changed.
    """
    from evidently import BinaryClassification, MulticlassClassification

    if len(labels) != 2:
        return MulticlassClassification(
            target=TARGET, prediction_labels=PREDICTION_COLUMN, prediction_probas=probas
        )
    positive = labels[0]
    if probas:
        frame[positive] = frame[positive] / (frame[positive] + frame[labels[1]])
        frame.drop(columns=labels[1], inplace=True)
    return BinaryClassification(
        target=TARGET,
        prediction_labels=PREDICTION_COLUMN,
        prediction_probas=positive if probas else None,
        pos_label=positive,
    )


def classification_report(
    predictions: pd.DataFrame,
    html_path: str | Path,
    json_path: str | Path,
    model: str = "",
    provenance: dict | None = None,
    monitor: Monitor | None = None,
) -> dict:
    """Evidently ClassificationPreset on the test tracks; returns the JSON summary; ``monitor``:
    the snapshot also goes to that Evidently workspace (``monitoring.add_snapshot``).

    ``labels`` are the genres that occur in ``predictions`` as truth or prediction (a genre of
    the model without test tracks that is never predicted is not scored). ``accuracy`` and the
    ``precision``/``recall``/``f1`` macro averages over ``labels`` match scikit-learn's defaults
    (zero for a predicted genre without test tracks). ``per_class``: Evidently's per-label scores
    (Evidently leaves out a predicted genre without test tracks) with the test ``support``. With
    two labels Evidently runs a binary task (``positive_label``) whose precision/recall/F1 are
    the positive label's; the summary's are still the macro averages.
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    if predictions.empty:
        raise ValueError("no predicted tracks: cannot build a classification report")
    frame, probas = classification_frame(predictions)
    labels = sorted(set(frame[TARGET]) | set(frame[PREDICTION_COLUMN]))
    if len(labels) < 2:
        raise ValueError(
            f"only one genre ({labels[0]}) among the true and predicted genres of the "
            f"{len(frame)} test tracks: cannot build a classification report"
        )
    task = classification_task(labels, probas, frame)
    definition = DataDefinition(
        categorical_columns=[TARGET, PREDICTION_COLUMN],
        numerical_columns=[c for c in frame.columns if c not in (TARGET, PREDICTION_COLUMN)],
        classification=[task],
    )
    dataset = Dataset.from_pandas(frame, data_definition=definition)
    run_labels = snapshot_labels("classification", provenance, model) if monitor else {}
    report = Report([ClassificationPreset()], metadata={"model": model})
    snapshot = report.run(dataset, None, **run_labels)
    _save_html(snapshot, html_path)
    if monitor:
        add_snapshot(monitor, snapshot, run_labels)

    raw = snapshot.dict()
    summary: dict = {"model": model, "n_tracks": int(len(frame))}
    per_class: dict[str, dict] = {}
    for metric in raw["metrics"]:
        kind = _metric_type(metric)
        if kind in CLASSIFICATION_KEYS:
            summary[CLASSIFICATION_KEYS[kind]] = float(metric["value"])
        elif kind in BY_LABEL_KEYS:
            for label, value in metric["value"].items():
                per_class.setdefault(str(label), {})[BY_LABEL_KEYS[kind]] = float(value)
    if isinstance(task, BinaryClassification):
        summary["positive_label"] = task.pos_label
        for key in ("precision", "recall", "f1"):  # Evidently's are the positive label's
            scores = [per_class.get(label, {}).get(key, 0.0) for label in labels]
            summary[key] = sum(scores) / len(labels)
    support = frame[TARGET].value_counts()
    for label in per_class:
        per_class[label]["support"] = int(support.get(label, 0))
    summary["labels"] = labels
    summary["per_class"] = dict(sorted(per_class.items()))
    summary["probabilities"] = probas is not None
    summary["evidently"] = raw
    summary.update(provenance or {})  # data version, git commit, package versions
    _write_json(summary, json_path)
    return summary


# --------------------------------------------------------------------------------------------
# data drift
# --------------------------------------------------------------------------------------------


def drift_columns(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Numerical summary features and categorical columns present in both tables."""
    numerical = [c for c in feature_columns(reference) if c in set(feature_columns(current))]
    categorical = [c for c in (TARGET,) if c in reference.columns and c in current.columns]
    return numerical, categorical


def data_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    html_path: str | Path,
    json_path: str | Path,
    drift_share: float = 0.5,
    method: str | None = None,
    threshold: float | None = None,
    reference_info: dict | None = None,
    current_info: dict | None = None,
    provenance: dict | None = None,
    monitor: Monitor | None = None,
) -> dict:
    """Evidently DataDriftPreset of ``current`` against ``reference``; returns the JSON summary;
    ``monitor``: the snapshot also goes to that Evidently workspace.

    Per column Evidently picks the test (K-S for numerical columns with <= 1000 reference rows,
    chi-square for ``genre``) unless ``method`` is given. The dataset drifts when the share of
    drifted columns is >= ``drift_share`` (Evidently's definition).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numerical, categorical = drift_columns(reference, current)
    columns = numerical + categorical
    if not numerical:
        raise ValueError("reference and current track tables share no feature columns")
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    ref = Dataset.from_pandas(reference[columns].reset_index(drop=True), definition)
    cur = Dataset.from_pandas(current[columns].reset_index(drop=True), definition)
    preset = DataDriftPreset(
        columns=columns, drift_share=drift_share, method=method, threshold=threshold
    )
    run_labels = snapshot_labels("data_drift", provenance) if monitor else {}
    snapshot = Report([preset], include_tests=True).run(cur, ref, **run_labels)
    _save_html(snapshot, html_path)
    if monitor:
        add_snapshot(monitor, snapshot, run_labels)

    raw = snapshot.dict()
    features: dict[str, dict] = {}
    for metric in raw["metrics"]:
        if _metric_type(metric) == "ValueDrift":
            features[metric["config"]["column"]] = {
                "drifted": False,
                "score": float(metric["value"]),
                "method": metric["config"].get("method"),
                "threshold": metric["config"].get("threshold"),
            }
    for test in raw["tests"]:
        column = test["metric_config"]["params"].get("column")
        if column in features and test["metric_config"]["params"]["type"].endswith("ValueDrift"):
            features[column]["drifted"] = _status(test) != PASS
    n_drifted = sum(f["drifted"] for f in features.values())
    share = n_drifted / len(features)
    summary = {
        "drifted_share": share,
        "n_drifted": n_drifted,
        "n_features": len(features),
        "dataset_drift": share >= drift_share,
        "drift_share_threshold": drift_share,
        "drifted_features": sorted(name for name, f in features.items() if f["drifted"]),
        "features": features,
        "reference": {"n_tracks": int(len(reference)), **(reference_info or {})},
        "current": {"n_tracks": int(len(current)), **(current_info or {})},
    }
    summary.update(provenance or {})  # data version, git commit, package versions
    _write_json(summary, json_path)
    return summary


# --------------------------------------------------------------------------------------------
# data quality
# --------------------------------------------------------------------------------------------


class DataQualityError(RuntimeError):
    """A data quality test failed and ``reports.fail_on_quality_issue`` is true."""


def _shares(table: pd.DataFrame) -> pd.Series:
    return table[TARGET].value_counts(normalize=True, dropna=True).sort_index()


def data_quality_report(
    table: pd.DataFrame,
    html_path: str | Path,
    json_path: str | Path,
    min_class_ratio: float = 0.5,
    ignore_constant: tuple[str, ...] | list[str] = ("duration_s",),
    provenance: dict | None = None,
    monitor: Monitor | None = None,
) -> dict:
    """Data quality tests on the track table; returns ``{"passed": bool, "tests": [...]}``;
    ``monitor``: the snapshot also goes to that Evidently workspace.

    * missing values: no NaN in the summary features or ``genre``;
    * constant columns: no summary feature with a single value (``ignore_constant`` columns, by
      default ``duration_s``, are left out: fixed-length clips are normal);
    * duplicated tracks: no two tracks with identical features and genre, and no two tracks with
      the same source audio md5;
    * class balance: every genre's share >= ``min_class_ratio`` x the largest genre's share.

    The first four are Evidently metrics with test conditions (shown in the HTML); the md5 test
    is computed here because it is not a column statistic of the features.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import (
        CategoryCount,
        ConstantColumnsCount,
        DatasetMissingValueCount,
        DuplicatedRowCount,
        RowCount,
    )
    from evidently.tests import eq, gte

    features = [c for c in feature_columns(table) if c not in set(ignore_constant)]
    frame = table[features + [TARGET]].reset_index(drop=True)
    definition = DataDefinition(numerical_columns=features, categorical_columns=[TARGET])
    shares = _shares(frame)
    min_share = float(min_class_ratio * shares.max()) if len(shares) else 0.0
    balance_metrics = [
        CategoryCount(column=TARGET, category=label, share_tests=[gte(min_share)])
        for label in shares.index
    ]
    metrics = [
        RowCount(),
        DatasetMissingValueCount(tests=[eq(0)]),
        ConstantColumnsCount(tests=[eq(0)]),
        DuplicatedRowCount(tests=[eq(0)]),
        *balance_metrics,
    ]
    run_labels = snapshot_labels("data_quality", provenance) if monitor else {}
    dataset = Dataset.from_pandas(frame, data_definition=definition)
    snapshot = Report(metrics).run(dataset, None, **run_labels)
    _save_html(snapshot, html_path)
    if monitor:
        add_snapshot(monitor, snapshot, run_labels)

    raw = snapshot.dict()
    status: dict[str, list[str]] = {}
    for test in raw["tests"]:
        kind = test["metric_config"]["params"]["type"].rsplit(":", 1)[-1]
        status.setdefault(kind, []).append(_status(test))

    def passed(kind: str) -> bool:
        return bool(status.get(kind)) and all(s == PASS for s in status[kind])

    missing = frame.isna().sum()
    missing = missing[missing > 0]
    constant = [c for c in features if frame[c].nunique(dropna=False) <= 1]
    dup_rows = table.loc[frame.duplicated(keep=False).to_numpy(), "track_id"]
    tests = [
        {
            "name": "missing_values",
            "passed": passed("DatasetMissingValueCount"),
            "description": "no missing values in the summary features and genre"
            + (f"; missing: {missing.to_dict()}" if len(missing) else ""),
        },
        {
            "name": "constant_columns",
            "passed": passed("ConstantColumnsCount"),
            "description": "no constant summary feature"
            + (f" (ignored: {sorted(ignore_constant)})" if ignore_constant else "")
            + (f"; constant: {constant}" if constant else ""),
        },
        {
            "name": "duplicated_tracks",
            "passed": passed("DuplicatedRowCount"),
            "description": "no two tracks with identical summary features and genre"
            + (f"; duplicated: {sorted(dup_rows)}" if len(dup_rows) else ""),
        },
    ]
    if "source_md5" in table.columns:
        md5 = table["source_md5"].fillna("")
        dup_md5 = table.loc[md5.ne("") & md5.duplicated(keep=False), "track_id"]
        tests.append(
            {
                "name": "duplicated_source_audio",
                "passed": dup_md5.empty,
                "description": "no two tracks with the same source audio md5"
                + (f"; duplicated: {sorted(dup_md5)}" if len(dup_md5) else ""),
            }
        )
    ratio = float(shares.min() / shares.max()) if len(shares) else 0.0
    tests.append(
        {
            "name": "class_balance",
            "passed": passed("CategoryCount") and len(shares) > 1,
            "description": f"smallest/largest genre share {ratio:.3f} >= {min_class_ratio} "
            f"with >= 2 genres; shares: {dict((k, round(v, 4)) for k, v in shares.items())}",
        }
    )
    for test in tests:
        test["status"] = "passed" if test.pop("passed") else "failed"
    summary = {
        "passed": all(t["status"] == "passed" for t in tests),
        "failed": [t["name"] for t in tests if t["status"] != "passed"],
        "tests": [
            {"name": t["name"], "status": t["status"], "description": t["description"]}
            for t in tests
        ],
        "n_tracks": int(len(table)),
        "n_features": len(features),
        "min_class_ratio": min_class_ratio,
    }
    summary.update(provenance or {})  # data version, git commit, package versions
    _write_json(summary, json_path)
    return summary


def enforce_quality(summary: dict, json_path: str | Path, fail: bool) -> None:
    """Raise DataQualityError (``fail``) or log a warning when a quality test failed."""
    if summary["passed"]:
        log.info("data quality: all %d tests passed", len(summary["tests"]))
        return
    failed = [t for t in summary["tests"] if t["status"] != "passed"]
    details = "; ".join(f"{t['name']}: {t['description']}" for t in failed)
    message = (
        f"data quality tests failed: {', '.join(t['name'] for t in failed)} "
        f"(see {json_path}). {details}"
    )
    if fail:
        raise DataQualityError(
            message + " -- set reports.fail_on_quality_issue: false to only warn"
        )
    log.warning("%s -- continuing because reports.fail_on_quality_issue is false", message)


# --------------------------------------------------------------------------------------------
# The workflow's report jobs: paths and parameters in, report files out
# --------------------------------------------------------------------------------------------


def check_tested_splits(tested: pd.DataFrame, expected: str | None) -> list[str]:
    """The splits of the predicted tracks; a warning unless they are only ``expected`` (no check
    for ``None``: pooled out-of-fold predictions cover every split)."""
    splits = sorted(set(tested["split"]))
    if expected and splits != [expected]:
        log.warning("predicted tracks come from splits %s, expected only %s", splits, expected)
    return splits


# The seed of every report's sample of rows (``sample_rows``).
SAMPLE_SEED = 0


def sample_rows(table: pd.DataFrame, max_rows: int | None, what: str) -> tuple[pd.DataFrame, dict]:
    """At most ``max_rows`` rows of ``table`` (a seeded sample, in the table's order) and what
    was kept: Evidently's time and memory grow with the rows, the report's do not past this."""
    rows = {"n_rows": int(len(table)), "n_used": int(len(table)), "sampled": False}
    if max_rows is None or len(table) <= max_rows:
        return table, rows
    sample = table.sample(n=max_rows, random_state=SAMPLE_SEED).sort_index()
    log.info("%s: a seeded sample of %d of %d rows (reports.max_rows)", what, max_rows, len(table))
    return sample, {**rows, "n_used": int(max_rows), "sampled": True, "seed": SAMPLE_SEED}


def write_classification_report(
    table_path: str | Path,
    predictions_path: str | Path,
    outputs: dict[str, str | Path],
    *,
    model: str,
    data_version_path: str | Path,
    split: str | None = None,
    run_path: str | Path | None = None,
    artifact_path: str = "evidently",
    tracking_uri: str | None = None,
    mlflow_timeout_s: float = 10,
    monitor: Monitor | None = None,
    max_rows: int | None = None,
) -> dict:
    """The classification report (``outputs["html"]``, ``outputs["json"]``) of a model's
    predictions (the rows of the track table that have one; ``split``: the split they should all
    come from; at most ``max_rows``, ``sample_rows``); attached to the MLflow run recorded in
    ``run_path`` when given."""
    tested = attach_predictions(read_table(table_path), predictions_path)
    check_tested_splits(tested, split)
    tested, rows = sample_rows(tested, max_rows, "predicted tracks")
    summary = classification_report(
        tested,
        outputs["html"],
        outputs["json"],
        model=model,
        provenance={**result_provenance(data_version_path), "rows": rows},
        monitor=monitor,
    )
    log.info("%s: accuracy %.4f on %d tracks", model, summary["accuracy"], summary["n_tracks"])
    if run_path:
        tracking.attach_files(
            run_path,
            [outputs["html"], outputs["json"]],
            artifact_path=artifact_path,
            tracking_uri=tracking_uri,
            mlflow_timeout_s=mlflow_timeout_s,
        )
    return summary


def drift_inputs(
    tracks: pd.DataFrame,
    reference_tracks: pd.DataFrame | None = None,
    reference_info: dict | None = None,
    reference_split: str = "train",
    current_split: str = "test",
) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """What the data drift report compares: ``(reference, current, reference_info,
    current_info)``. Without a reference data version (``reference_tracks``), the
    ``reference_split`` tracks against the ``current_split`` tracks; with one, its tracks
    (``reference_info``: its ``reference.json``, without the rejected files) against all current
    tracks."""
    if reference_tracks is not None:
        info = {"name": "reference data version", **(reference_info or {})}
        info.pop("rejected", None)
        return reference_tracks, tracks, info, {"name": "current data (all splits)"}
    return (
        tracks[tracks["split"] == reference_split],
        tracks[tracks["split"] == current_split],
        {"name": f"{reference_split} tracks"},
        {"name": f"{current_split} tracks"},
    )


def write_data_drift_report(
    table_path: str | Path,
    outputs: dict[str, str | Path],
    *,
    data_version_path: str | Path,
    reference_path: str | Path | None = None,
    reference_info_path: str | Path | None = None,
    reference_split: str,
    current_split: str,
    monitor: Monitor | None = None,
    max_rows: int | None = None,
    **drift_options,
) -> dict:
    """The data drift report (``outputs["html"]``, ``outputs["json"]``) of the track table (see
    ``drift_inputs`` for what is compared; each side at most ``max_rows``, ``sample_rows``);
    ``drift_options``: ``data_drift_report``'s ``drift_share``, ``method``, ``threshold``."""
    reference_tracks = read_table(reference_path) if reference_path else None
    reference_info = (
        json.loads(Path(reference_info_path).read_text()) if reference_info_path else None
    )
    reference, current, reference_info, current_info = drift_inputs(
        read_table(table_path), reference_tracks, reference_info, reference_split, current_split
    )
    reference, reference_rows = sample_rows(reference, max_rows, reference_info["name"])
    current, current_rows = sample_rows(current, max_rows, current_info["name"])
    reference_info = {**reference_info, "rows": reference_rows}
    current_info = {**current_info, "rows": current_rows}
    summary = data_drift_report(
        reference,
        current,
        outputs["html"],
        outputs["json"],
        reference_info=reference_info,
        current_info=current_info,
        provenance=result_provenance(data_version_path),
        monitor=monitor,
        **drift_options,
    )
    log_drift(f"{reference_info['name']} vs {current_info['name']}", summary)
    return summary


def log_drift(what: str, summary: dict, more: str = "") -> None:
    """One log line of a data drift summary (``data_drift_report``), ``more`` appended."""
    log.info(
        "%s: %d/%d columns drifted (share %.3f), dataset drift: %s; drifted: %s%s",
        what,
        summary["n_drifted"],
        summary["n_features"],
        summary["drifted_share"],
        summary["dataset_drift"],
        summary["drifted_features"],
        more,
    )


def keep_failed_quality_json(
    summary: dict, json_path: str | Path, kept_path: str | Path, fail: bool
) -> Path:
    """The JSON a quality failure names: on a failure that stops the workflow, Snakemake removes
    the job's outputs, so the JSON is first copied to ``kept_path`` (beside the job's log, which
    is kept) and that copy is named; otherwise ``json_path``."""
    if summary["passed"] or not fail:
        return Path(json_path)
    shutil.copyfile(json_path, kept_path)
    return Path(kept_path)


def write_data_quality_report(
    table_path: str | Path,
    outputs: dict[str, str | Path],
    *,
    data_version_path: str | Path,
    kept_json_path: str | Path,
    fail_on_quality_issue: bool,
    monitor: Monitor | None = None,
    max_rows: int | None = None,
    **quality_options,
) -> dict:
    """The data quality report (``outputs["html"]``, ``outputs["json"]``) of the track table; a
    failed test raises ``DataQualityError`` (``fail_on_quality_issue``) naming a kept copy of
    the JSON (``keep_failed_quality_json``), or only warns. ``quality_options``:
    ``data_quality_report``'s ``min_class_ratio``, ``ignore_constant``. At most ``max_rows``
    rows are tested (``sample_rows``)."""
    table, rows = sample_rows(read_table(table_path), max_rows, "track table")
    summary = data_quality_report(
        table,
        outputs["html"],
        outputs["json"],
        provenance={**result_provenance(data_version_path), "rows": rows},
        monitor=monitor,
        **quality_options,
    )
    named = keep_failed_quality_json(
        summary, outputs["json"], kept_json_path, fail_on_quality_issue
    )
    enforce_quality(summary, named, fail=fail_on_quality_issue)
    return summary
