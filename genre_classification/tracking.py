"""MLflow helpers: where runs go, one run per training job, provenance tags.

Tracking store: the standard ``MLFLOW_TRACKING_URI`` environment variable wins, then the config
value ``training.tracking_uri``, then a local SQLite store ``sqlite:///results/mlflow/mlflow.db``
with artifacts in ``results/mlflow/artifacts``. SQLite (not the ``./mlruns`` file store) because
MLflow >= 3.7 uses it as its default backend and keeps the file store only for backward
compatibility. Open the UI with::

    mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db

Outages: ``connect`` checks an HTTP(S) server at job start within ``timeout_s`` and bounds
MLflow's HTTP retries (its defaults retry a request for about 4 minutes); ``tracked_run`` turns
a connection failure during the job into one ``TrackingServerError`` saying what to do, without
MLflow's retries on the way out. URIs written to files pass through ``redact.redact``.

MLflow is imported inside the functions (it takes seconds to import).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

from genre_classification import fileio, model_flavor, provenance
from genre_classification.jobcontrol import Interrupted
from genre_classification.redact import MASK, redact, redact_logger

log = logging.getLogger(__name__)

DEFAULT_STORE_DIR = Path("results/mlflow")
DB_NAME = "mlflow.db"
# MLflow's HTTP client limits for workflow jobs (variables already set in the environment win):
# a refused connection fails a request in about 3 s, a server that does not answer in about 65 s.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
WHAT_TO_DO = (
    "Start the server (or fix MLFLOW_TRACKING_URI / training.tracking_uri; unset both to use the "
    "local store under results/mlflow), then rerun snakemake: a training job resumes from its "
    "last epoch checkpoint."
)


class TrackingServerError(RuntimeError):
    """The MLflow tracking server cannot be used; the message names it and says what to do."""


def default_tracking_uri(store_dir: str | Path = DEFAULT_STORE_DIR) -> str:
    # Relative sqlite path (three slashes): resolved against the working directory, which is the
    # repository root for Snakemake jobs, so the URI stays valid when the clone moves.
    return f"sqlite:///{Path(store_dir) / DB_NAME}"


def current_tracking_uri(
    configured: str | None = None, store_dir: str | Path = DEFAULT_STORE_DIR
) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or default_tracking_uri(store_dir)


def resolve_tracking_uri(
    configured: str | None = None, store_dir: str | Path = DEFAULT_STORE_DIR
) -> str:
    """``MLFLOW_TRACKING_URI`` > ``configured`` > the local SQLite store under ``store_dir``."""
    uri = current_tracking_uri(configured, store_dir)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def _local_artifact_location(tracking_uri: str) -> str | None:
    """For a local SQLite store keep artifacts next to the database; servers choose their own."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.parent / "artifacts").resolve().as_uri()


def _store_lock(tracking_uri: str):
    """Serialise SQLite schema creation between parallel jobs (a no-op for servers)."""
    if not tracking_uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return fileio.exclusive_lock(Path(tracking_uri.removeprefix("sqlite:///")).with_suffix(".lock"))


def is_server(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


@contextlib.contextmanager
def _environ(**values: str):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it was raised from) is a failed HTTP connection."""
    import requests

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
        if isinstance(error, requests.exceptions.RetryError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _short_cause(error: BaseException) -> str:
    text = str(error)
    errno = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if errno:
        return errno.group(0).strip()
    if "timed out" in text or "Timeout" in text:
        return "no answer (timed out)"
    return text


def outage_message(uri: str, error: BaseException, when: str) -> str:
    failing = re.search(r"too many (5\d\d) error responses", str(error))
    if failing:  # the server is there, but what it stands on (its database, its store) is not
        return redact(
            f"MLflow tracking server {uri} answers with server errors {when} (HTTP "
            f"{failing.group(1)}: its backend store or artifact store may be down; see the "
            "server's log). "
        )
    return redact(f"MLflow tracking server {uri} is unreachable {when}: {_short_cause(error)}. ")


def check_server(uri: str, timeout_s: float) -> None:
    """Raise ``TrackingServerError`` unless the server at ``uri`` answers within ``timeout_s``.

    A refused connection is retried once a second until ``timeout_s``; an error answer (e.g.
    401) fails at once. Only HTTP(S) URIs are checked; local stores need no server.
    """
    import mlflow

    if not is_server(uri):
        return
    client = mlflow.MlflowClient(tracking_uri=uri)
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = max(1, round(deadline - time.monotonic()))
        limits = {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(remaining),
        }
        try:
            with _environ(**limits):
                client.search_experiments(max_results=1)
            return
        except Exception as error:
            if not is_connection_error(error):
                raise TrackingServerError(
                    redact(
                        f"MLflow tracking server {uri} answered with an error: {error}. Check the "
                        "URI and the credentials (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN)."
                    )
                ) from None
            if time.monotonic() + 1 >= deadline:
                when = f"(checked for {timeout_s:g} s at job start)"
                raise TrackingServerError(outage_message(uri, error, when) + WHAT_TO_DO) from None
        time.sleep(1)


def connect(uri: str, timeout_s: float) -> None:
    """Use ``uri`` for this process with bounded HTTP retries; check a server is there."""
    import mlflow

    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)
    check_server(uri, timeout_s)


def setup_experiment(name: str, tracking_uri: str) -> str:
    """Point MLflow at ``tracking_uri``; return the id of experiment ``name`` (created if new)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    with _store_lock(tracking_uri):
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(
                name, artifact_location=_local_artifact_location(tracking_uri)
            )
        except MlflowException as error:
            # another job created it since (jobs of a sweep start together on a server)
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(name).experiment_id


# MLflow's system metrics monitor samples every SYSTEM_METRICS_INTERVAL_S seconds (its default
# is 10 s, more than a short epoch); MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides.
SYSTEM_METRICS_INTERVAL_S = 1.0


def start_run(
    experiment_id: str,
    run_id: str | None = None,
    run_name: str | None = None,
    system_metrics: bool = False,
):
    """Resume run ``run_id`` if given (a rerun of an interrupted job), else start a new run.

    ``system_metrics``: MLflow's system metrics monitor (a thread sampling CPU, memory, disk,
    network with psutil, and GPUs with pynvml when nvidia-ml-py is installed and sees one) logs
    ``system/...`` metrics to the run until it ends; a resumed run continues their steps."""
    import mlflow

    if system_metrics:
        os.environ.setdefault(
            "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", str(SYSTEM_METRICS_INTERVAL_S)
        )
        # its thread warns with the tracking URI (credentials included) when the server is lost
        redact_logger("mlflow.system_metrics.system_metrics_monitor")
    if run_id:
        return mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
    return mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, log_system_metrics=system_metrics
    )


@contextlib.contextmanager
def tracked_run(
    uri: str,
    experiment_id: str,
    run_id: str | None = None,
    run_name: str | None = None,
    timeout_s: float = 10,
    on_outage: str = WHAT_TO_DO,
    system_metrics: bool = False,
):
    """``start_run`` as a block; a lost server inside it raises ``TrackingServerError``.

    On a connection failure the run is marked failed with one quick attempt (no retries), so
    the job ends soon after the failing call; ``on_outage`` is appended to the message. An
    interrupted job (``jobcontrol.Interrupted``, KeyboardInterrupt) leaves it KILLED.
    ``system_metrics``: see ``start_run``.
    """
    import mlflow

    run = start_run(experiment_id, run_id, run_name, system_metrics)
    try:
        yield run
    except BaseException as error:
        lost = isinstance(error, Exception) and is_connection_error(error)
        quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
        status = "KILLED" if isinstance(error, Interrupted | KeyboardInterrupt) else "FAILED"
        with _environ(**(quick if lost else {})), contextlib.suppress(Exception):
            mlflow.end_run(status)
        if lost:
            raise TrackingServerError(
                outage_message(uri, error, "during the job") + on_outage
            ) from None
        raise
    mlflow.end_run()


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


VERSION_TAG = "workflow.version"  # genre_classification.__version__
PARENT_TAG = "mlflow.parentRunId"  # MLflow nests a run under the run with this id
# What the package code the model carries imports when it serves (besides TensorFlow, Keras and
# librosa), pinned to the installed versions, which are the lock's (tests/test_packaging.py).
SERVING_REQUIREMENTS = ("mlflow", "numpy", "pandas", "h5py", "soundfile", "pyyaml", "threadpoolctl")


def provenance_tags(
    data_version_path: str | Path | None = None,
    snakemake_rule: str | None = None,
    wildcards: dict | None = None,
    repo: str | Path = ".",
) -> dict[str, str]:
    """Tags: workflow version, data version (DVC md5), git commit, Snakemake rule/wildcards,
    packages, and what ran (``provenance.code_provenance``: ``code.*``, ``image.*``,
    ``gpu.*``; the training job adds the device it ran on)."""

    tags: dict[str, str] = {VERSION_TAG: provenance.workflow_version()}
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
    # What ran: code fingerprint, commit + dirty flag, lock sha256, the image, the GPU.
    tags.update(provenance.provenance_tags(provenance.code_provenance()))
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


def log_keras_model(model, name: str = "model", metadata: dict | None = None):
    """Log ``model`` as an MLflow model (MLflow 3: ``name=``, a LoggedModel linked to the run)
    with two flavors (``model_flavor``): ``tensorflow`` (the Keras model) and a
    ``python_function`` that takes audio and returns genres. ``metadata`` (``model_info``: the
    feature parameters and labels) goes into its MLmodel file; the audio flavor needs it.

    Pinned requirements skip MLflow's slow requirement inference.
    """
    import keras
    import librosa
    import tensorflow as tf
    from mlflow.models import Model

    requirements = [
        f"tensorflow=={tf.__version__}",
        f"keras=={keras.__version__}",
        f"librosa=={librosa.__version__}",
        *(f"{name}=={importlib.metadata.version(name)}" for name in SERVING_REQUIREMENTS),
    ]
    return Model.log(
        artifact_path=None,
        name=name,
        flavor=model_flavor,
        keras_model=model,
        pip_requirements=requirements,
        metadata=metadata,
    )


def write_run_info(path: str | Path, run_id: str, experiment_id: str, tracking_uri: str) -> dict:
    """Record a run; the URI is stored redacted (``run_tracking_uri`` gets the real one back)."""
    info = {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": redact(tracking_uri)}
    fileio.write_json(path, info)
    return info


def read_run_info(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def run_tracking_uri(info: dict, configured: str | None = None) -> str:
    """The real tracking URI of a run recorded by ``write_run_info``.

    The current URI (``current_tracking_uri(configured)``) if it is the recorded one once
    redacted, else the recorded one if it had nothing to redact.
    """
    current = current_tracking_uri(configured)
    recorded = info["tracking_uri"]
    if redact(current) == recorded:
        return current
    if MASK not in recorded:
        return recorded
    raise TrackingServerError(
        f"MLflow run {info['run_id']} was logged to {recorded}, whose credentials are not "
        "stored: set MLFLOW_TRACKING_URI to that URI with its credentials."
    )


def log_to_run(
    uri: str, run_id: str, files, artifact_path: str, metrics: dict | None = None
) -> None:
    """Add ``metrics`` and ``files`` (under ``artifact_path``) to run ``run_id`` as a resumed
    run (``tracked_run``: a lost server raises ``TrackingServerError``); ``connect`` first."""
    import mlflow

    with tracked_run(uri, None, run_id=run_id):
        if metrics:
            mlflow.log_metrics(metrics)
        for path in files:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)


def attach_files(
    run_json: str | Path,
    paths: list[str | Path],
    artifact_path: str = "evidently",
    tracking_uri: str | None = None,
    mlflow_timeout_s: float = 10,
) -> str:
    """Attach files to the run recorded in ``run_json`` (``write_run_info``) without resuming
    it (its status and end time stay as they are); returns the run id.

    ``tracking_uri``: the configured URI (see ``run_tracking_uri``).
    """
    import mlflow

    run = read_run_info(run_json)
    uri = run_tracking_uri(run, tracking_uri)
    connect(uri, mlflow_timeout_s)
    client = mlflow.MlflowClient(tracking_uri=uri)
    for path in paths:
        client.log_artifact(run["run_id"], str(path), artifact_path=artifact_path)
    log.info(
        "logged %s to MLflow run %s (%s)",
        [str(p) for p in paths],
        run["run_id"],
        run["tracking_uri"],
    )
    return run["run_id"]
