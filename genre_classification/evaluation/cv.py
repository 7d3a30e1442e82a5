"""Cross-validation across folds: the MLflow parent run of a model's folds, the per-model
aggregate (``cv_metrics.json``, pooled out-of-fold predictions and confusion matrix) and the
comparison table of all models (``summary.tsv`` and its plot).

A single split (holdout, ``file``) is one fold: its aggregate has standard deviation 0.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from genre_classification import fileio, provenance, tracking
from genre_classification.evaluation.evaluate import (
    CALIBRATION_KEYS,
    compute_metrics,
    plot_confusion_matrix,
)

log = logging.getLogger(__name__)

SCORES = ("accuracy", "macro_precision", "macro_recall", "macro_f1")


def mean_std(values) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of ``values``."""
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(values.mean()), "std": std}


def aggregate_metrics(fold_metrics: list[dict]) -> dict:
    """Mean, std and per-fold values of the scores and per-genre F1 of the folds' metrics."""
    genres = sorted({g for m in fold_metrics for g in m["per_genre"]})
    result = {
        "n_folds": len(fold_metrics),
        "folds": [
            {
                "fold": i,
                **{k: m[k] for k in SCORES},
                "n_tracks": m["n_tracks"],
                "per_genre_f1": {g: m["per_genre"][g]["f1"] for g in m["per_genre"]},
                "mlflow_run_id": m.get("mlflow_run_id"),
            }
            for i, m in enumerate(fold_metrics)
        ],
    }
    for key in SCORES:
        values = [m[key] for m in fold_metrics]
        result[key] = {**mean_std(values), "folds": values}
    for key in CALIBRATION_KEYS:
        if all(key in m for m in fold_metrics):
            values = [m[key] for m in fold_metrics]
            result[key] = {**mean_std(values), "folds": values}
    result["per_genre_f1"] = {}
    for genre in genres:
        values = [m["per_genre"][genre]["f1"] for m in fold_metrics if genre in m["per_genre"]]
        result["per_genre_f1"][genre] = {**mean_std(values), "folds": values}
    return result


def pooled_predictions(prediction_paths: list[str | Path]) -> pd.DataFrame:
    """The folds' predictions.csv as one table with a ``fold`` column (each track once)."""
    tables = [
        pd.read_csv(p, dtype={"track": str}).assign(fold=i) for i, p in enumerate(prediction_paths)
    ]
    pooled = pd.concat(tables, ignore_index=True)
    twice = pooled["track"][pooled["track"].duplicated()].tolist()
    if twice:
        raise ValueError(f"tracks tested in more than one fold: {twice[:5]}")
    return pooled


def aggregate_folds(
    metrics_paths: list[str | Path],
    prediction_paths: list[str | Path],
    cv_path: str | Path,
    oof_path: str | Path,
    confusion_path: str | Path,
    model: str,
    parent_run_path: str | Path | None = None,
    tracking_uri: str | None = None,
    mlflow_timeout_s: float = 10,
) -> dict:
    """Write ``cv_metrics.json``, the pooled out-of-fold predictions and their confusion matrix;
    log the aggregate to the model's MLflow parent run and finish it (if there is one)."""

    fold_metrics = [json.loads(Path(p).read_text()) for p in metrics_paths]
    result = {"model": model, **aggregate_metrics(fold_metrics)}
    pooled = pooled_predictions(prediction_paths)
    labels = [c.removeprefix("prob_") for c in pooled.columns if c.startswith("prob_")]
    y_true = pooled["true"].map(labels.index).to_numpy()
    y_pred = pooled["predicted"].map(labels.index).to_numpy()
    result["pooled"] = compute_metrics(y_true, y_pred, labels)
    fileio.write_frame(oof_path, pooled, index=False)
    plot_confusion_matrix(
        y_true,
        y_pred,
        labels,
        confusion_path,
        title=f"{model}: out-of-fold, {len(fold_metrics)} folds, macro-F1 "
        f"{result['macro_f1']['mean']:.3f} ± {result['macro_f1']['std']:.3f}",
    )
    if parent_run_path:
        info = tracking.read_run_info(parent_run_path)
        result["mlflow_run_id"] = info["run_id"]

    result.update(provenance.code_provenance())  # what ran: code, image, GPU
    fileio.write_json(cv_path, result)
    f1 = result["macro_f1"]
    log.info(
        "%s: macro-F1 %.4f ± %.4f over %d folds", model, f1["mean"], f1["std"], len(fold_metrics)
    )
    if parent_run_path:
        log_aggregate(
            info, result, [cv_path, oof_path, confusion_path], tracking_uri, mlflow_timeout_s
        )
    return result


def aggregate_mlflow_metrics(result: dict) -> dict[str, float]:
    values = {}
    for key in SCORES:
        values[f"cv_{key}_mean"] = result[key]["mean"]
        values[f"cv_{key}_std"] = result[key]["std"]
        values[f"oof_{key}"] = result["pooled"][key]
    for genre, scores in result["per_genre_f1"].items():
        values[f"cv_f1.{genre}_mean"] = scores["mean"]
        values[f"cv_f1.{genre}_std"] = scores["std"]
    return values


def log_aggregate(info: dict, result: dict, files, tracking_uri=None, timeout_s=10) -> None:
    """Log the aggregate metrics and files to the parent run and end it (FINISHED)."""
    import mlflow

    uri = tracking.run_tracking_uri(info, tracking_uri)
    tracking.connect(uri, timeout_s)
    with tracking.tracked_run(uri, None, run_id=info["run_id"]):
        mlflow.log_metrics(aggregate_mlflow_metrics(result))
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="cv")


def start_parent_run(
    run_path: str | Path,
    model: str,
    model_config: dict,
    n_folds: int,
    *,
    experiment: str,
    tracking_uri: str | None,
    timeout_s: float,
) -> dict:
    """Create the MLflow parent run of a model's fold runs (left RUNNING until the aggregate
    job finishes it) and record it in ``run_path``; fold jobs tag their runs as its children."""
    import mlflow
    from mlflow.entities import Param

    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.connect(uri, timeout_s)
    experiment_id = tracking.setup_experiment(experiment, uri)
    client = mlflow.MlflowClient()
    run = client.create_run(
        experiment_id, run_name=model, tags={"model_name": model, "cv.n_folds": str(n_folds)}
    )
    params = {**tracking.flatten_params(model_config), "model_name": model, "n_folds": n_folds}
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return tracking.write_run_info(run_path, run.info.run_id, experiment_id, uri)


def summary_table(cv_paths: dict[str, str | Path], model_configs: dict[str, dict]) -> pd.DataFrame:
    """One row per model: its options (flattened, without resources) and CV mean ± std."""
    rows = []
    for model, path in cv_paths.items():
        cv = json.loads(Path(path).read_text())
        config = {k: v for k, v in model_configs[model].items() if k != "resources"}
        row = {"model": model, "n_folds": cv["n_folds"], **tracking.flatten_params(config)}
        for key in ("accuracy", "macro_f1"):
            row[f"{key}_mean"] = round(cv[key]["mean"], 6)
            row[f"{key}_std"] = round(cv[key]["std"], 6)
        row["macro_f1"] = f"{cv['macro_f1']['mean']:.3f} ± {cv['macro_f1']['std']:.3f}"
        row["oof_macro_f1"] = round(cv["pooled"]["macro_f1"], 6)
        rows.append(row)
    table = pd.DataFrame(rows)
    scores = [c for c in table.columns if c.endswith(("_mean", "_std")) or "macro_f1" in c]
    options = [c for c in table.columns if c not in scores and c not in ("model", "n_folds")]
    return table[["model", "n_folds", *scores, *options]]


def plot_summary(table: pd.DataFrame, path: str | Path) -> None:
    """Macro-F1 mean ± std per model, best on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = table.sort_values("macro_f1_mean")
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(table)))
    ax.barh(table["model"], table["macro_f1_mean"], xerr=table["macro_f1_std"], capsize=3)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"macro-F1 (mean ± std over {int(table['n_folds'].max())} folds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_summary(
    cv_paths: dict[str, str | Path],
    model_configs: dict[str, dict],
    tsv_path: str | Path,
    plot_path: str | Path,
) -> pd.DataFrame:
    table = summary_table(cv_paths, model_configs)
    fileio.write_frame(tsv_path, table, sep="\t", index=False)
    plot_summary(table, plot_path)
    return table
