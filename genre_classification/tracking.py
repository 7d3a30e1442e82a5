"""MLflow helpers: where runs go, one run per training job, provenance tags.

Tracking store: the standard ``MLFLOW_TRACKING_URI`` environment variable wins, then the config
value ``training.tracking_uri``, then a local SQLite store ``sqlite:///results/mlflow/mlflow.db``
with artifacts in ``results/mlflow/artifacts``. SQLite (not the ``./mlruns`` file store) because
MLflow >= 3.7 uses it as its default backend and keeps the file store only for backward
compatibility. Open the UI with::

    mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db

MLflow is imported inside the functions (it takes seconds to import).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from genre_classification import fileio

DEFAULT_STORE_DIR = Path("results/mlflow")
DB_NAME = "mlflow.db"


def default_tracking_uri(store_dir: str | Path = DEFAULT_STORE_DIR) -> str:
    # Relative sqlite path (three slashes): resolved against the working directory, which is the
    # repository root for Snakemake jobs, so the URI stays valid when the clone moves.
    return f"sqlite:///{Path(store_dir) / DB_NAME}"


def resolve_tracking_uri(
    configured: str | None = None, store_dir: str | Path = DEFAULT_STORE_DIR
) -> str:
    """``MLFLOW_TRACKING_URI`` > ``configured`` > the local SQLite store under ``store_dir``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured or default_tracking_uri(store_dir)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def _local_artifact_location(tracking_uri: str) -> str | None:
    """For a local SQLite store keep artifacts next to the database; servers choose their own."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.parent / "artifacts").resolve().as_uri()


@contextlib.contextmanager
def _store_lock(tracking_uri: str):
    """Serialise SQLite schema creation between parallel jobs (a no-op for servers)."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(tracking_uri.removeprefix("sqlite:///")).with_suffix(".lock")
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def setup_experiment(name: str, tracking_uri: str) -> str:
    """Point MLflow at ``tracking_uri``; return the id of experiment ``name`` (created if new)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    with _store_lock(tracking_uri):
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(
            name, artifact_location=_local_artifact_location(tracking_uri)
        )


def start_run(experiment_id: str, run_id: str | None = None, run_name: str | None = None):
    """Resume run ``run_id`` if given (a rerun of an interrupted job), else start a new run."""
    import mlflow

    if run_id:
        return mlflow.start_run(run_id=run_id)
    return mlflow.start_run(experiment_id=experiment_id, run_name=run_name)


def flatten_params(params: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> flat ``{"a.b": "value"}`` (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def provenance_tags(
    data_version_path: str | Path | None = None,
    snakemake_rule: str | None = None,
    wildcards: dict | None = None,
    device: str | None = None,
    repo: str | Path = ".",
) -> dict[str, str]:
    """Tags: data version (DVC md5), git commit, Snakemake rule/wildcards, packages, device."""
    from genre_classification import provenance

    tags: dict[str, str] = {}
    if data_version_path and Path(data_version_path).is_file():
        version = provenance.read_data_version(data_version_path)
        tags["data.md5"] = str(version.get("md5"))
        tags["data.source"] = str(version.get("source"))
        tags["data.n_files"] = str(version.get("n_files"))
        if version.get("rev"):
            tags["data.rev"] = str(version["rev"])
    commit = provenance.code_commit(repo)
    if commit:
        tags["git.commit"] = commit
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    if snakemake_rule:
        tags["snakemake.rule"] = snakemake_rule
    for key, value in (wildcards or {}).items():
        tags[f"snakemake.wildcard.{key}"] = str(value)
    for name, version in provenance.package_versions().items():
        tags[f"pkg.{name}"] = version
    if device:
        tags["device"] = device
    return tags


def logged_steps(run_id: str, metric: str) -> set[int]:
    import mlflow

    return {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, metric)}


def log_epochs(run_id: str, history: list[dict], only_missing: bool = True) -> None:
    """Log per-epoch metrics (step = epoch number); on resume only the epochs MLflow lacks.

    The checkpoint is written before an epoch's metrics are logged, so a job killed in between
    has the epoch in its checkpoint but not in MLflow; this fills such gaps exactly once.
    """
    import mlflow

    if not history:
        return
    done = logged_steps(run_id, "val_loss") if only_missing else set()
    for row in history:
        if row["epoch"] in done:
            continue
        metrics = {k: float(v) for k, v in row.items() if k != "epoch" and v is not None}
        mlflow.log_metrics(metrics, step=int(row["epoch"]), run_id=run_id)


def log_keras_model(model, name: str = "model", example=None):
    """Log ``model`` as an MLflow model (MLflow 3: ``name=``, a LoggedModel linked to the run).

    Pinned requirements skip MLflow's slow requirement inference; ``example`` (a batch of
    inputs) gives the model a signature.
    """
    import keras
    import mlflow
    import tensorflow as tf

    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
    signature = None
    if example is not None:
        from mlflow.models import infer_signature

        signature = infer_signature(example, model.predict(example, verbose=0))
    return mlflow.tensorflow.log_model(
        model, name=name, pip_requirements=requirements, signature=signature
    )


def write_run_info(path: str | Path, run_id: str, experiment_id: str, tracking_uri: str) -> dict:
    info = {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": tracking_uri}
    fileio.write_json(path, info)
    return info


def read_run_info(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
