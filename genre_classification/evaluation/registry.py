"""MLflow Model Registry: every trained model becomes a version of one registered model, and the
alias ``champion`` follows the best test macro-F1.

Called after evaluation (the score is known only then). The alias moves to the best version of
the run's experiment only when that version beats the current champion (strictly: a tie keeps
the champion); the decision with both scores goes to the log and the new version's description.
Works with the local SQLite store and with a tracking server (the registry URI is the tracking
URI).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from genre_classification import provenance, tracking

log = logging.getLogger(__name__)

DEFAULT_NAME = "genre-classifier"
CHAMPION = "champion"
SCORE_TAG = "test_macro_f1"
EXPERIMENT_TAG = "experiment_id"
MODEL_ARTIFACT = "model"  # the name train.py logs the model under


@dataclass(frozen=True)
class Decision:
    version: str  # the version registered now
    score: float
    champion: str  # the champion version after the decision
    previous: str | None  # the champion before (None: there was none)
    previous_score: float | None
    moved: bool
    message: str


def version_score(version) -> float:
    """Test macro-F1 of a model version (tag); -inf if it has none (it can never win)."""
    value = version.tags.get(SCORE_TAG)
    try:
        return float(value)
    except (TypeError, ValueError):
        return -math.inf


def version_tags(metrics: dict, run, experiment_id: str) -> dict[str, str]:
    """Data version, git commit, test macro-F1 (from the evaluation metrics), model name."""
    tags = {SCORE_TAG: repr(float(metrics["macro_f1"])), EXPERIMENT_TAG: str(experiment_id)}
    data_version = (metrics.get("data_version") or {}).get("md5") or run.data.tags.get("data.md5")
    if data_version:
        tags["data.md5"] = str(data_version)
    commit = metrics.get("git_commit") or run.data.tags.get("git.commit")
    if commit:
        tags["git.commit"] = str(commit)
    if run.data.tags.get("model_name"):
        tags["model_name"] = run.data.tags["model_name"]
    # What ran (provenance.code_provenance): from the evaluation, else from the training run.

    ran = provenance.provenance_tags(metrics) or {
        key: value
        for key, value in run.data.tags.items()
        if key.startswith(("code.", "image.", "gpu."))
    }
    tags.update(ran)
    return tags


def provenance_note(tags: dict[str, str]) -> str:
    """One sentence for a version's description: the code, commit and lock it was made with."""
    if not tags.get("code.fingerprint"):
        return ""
    commit = tags.get("code.git_commit") or "no git commit"
    dirty = " with local changes" if tags.get("code.git_dirty") == "true" else ""
    lock = (tags.get("code.lock_sha256") or "unknown")[:12]
    image = " in the container image" if any(k.startswith("image.") for k in tags) else ""
    return (
        f" Code {tags['code.fingerprint']} (package {tags.get('code.package_version')}, commit "
        f"{commit}{dirty}), lock sha256 {lock}{image}."
    )


def register_version(client, name: str, run_id: str, tags: dict[str, str]):
    """The version of ``name`` for ``run_id`` (registered now, or the existing one on a rerun of
    the evaluation), with ``tags`` set."""
    import mlflow

    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version = max(existing, key=lambda v: int(v.version))
        for key, value in tags.items():
            client.set_model_version_tag(name, version.version, key, value)
        return client.get_model_version(name, version.version)
    return mlflow.register_model(f"runs:/{run_id}/{MODEL_ARTIFACT}", name, tags=tags)


def current_champion(client, name: str):
    """The version the alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _fmt(score: float | None) -> str:
    return "none" if score is None or math.isinf(score) else f"{score:.4f}"


def promote(client, name: str, version, experiment_id: str) -> Decision:
    """Move ``champion`` to the best version of ``experiment_id`` if it beats the champion."""
    versions = client.search_model_versions(f"name = '{name}'")
    version = next((v for v in versions if str(v.version) == str(version.version)), version)
    same_experiment = [v for v in versions if v.tags.get(EXPERIMENT_TAG) == str(experiment_id)]
    candidates = same_experiment or [version]
    # Best score; among equals the oldest version, so a tie never moves the alias.
    best = max(candidates, key=lambda v: (version_score(v), -int(v.version)))
    champion = current_champion(client, name)
    score = version_score(version)
    best_score = version_score(best)
    if champion is None:
        moved, previous, previous_score = True, None, None
        message = (
            f"{name}: no champion yet; champion -> version {best.version} "
            f"(test macro-F1 {_fmt(best_score)})"
        )
    else:
        previous, previous_score = str(champion.version), version_score(champion)
        moved = str(best.version) != str(champion.version) and best_score > previous_score
        if moved:
            message = (
                f"{name}: champion moves from version {champion.version} (test macro-F1 "
                f"{_fmt(previous_score)}) to version {best.version} ({_fmt(best_score)})"
            )
        elif previous == str(version.version):
            message = f"{name}: version {previous} stays champion (test macro-F1 {_fmt(score)})"
        else:
            best_note = ""
            if str(best.version) != str(version.version):
                best_note = f", best of its experiment version {best.version} ({_fmt(best_score)})"
            message = (
                f"{name}: champion stays version {champion.version} (test macro-F1 "
                f"{_fmt(previous_score)}); version {version.version} scores {_fmt(score)}"
                f"{best_note}: not better"
            )
    if moved:
        client.set_registered_model_alias(name, CHAMPION, best.version)
    note = provenance_note(dict(getattr(version, "tags", None) or {}))
    client.update_model_version(name, version.version, description=message + note)
    log.info(message)
    return Decision(
        version=str(version.version),
        score=score,
        champion=str(best.version if moved else champion.version),
        previous=previous,
        previous_score=previous_score,
        moved=moved,
        message=message,
    )


def register_and_promote(
    run_info_path: str | Path,
    metrics: dict,
    name: str,
    tracking_uri: str | None = None,
    mlflow_timeout_s: float = 10,
) -> Decision:
    """Register the model of the training run in ``run_info_path`` under ``name`` with the
    evaluation ``metrics`` as tags, then decide about the ``champion`` alias.

    ``tracking_uri``: the configured URI (``tracking.run_tracking_uri``); ``mlflow_timeout_s``:
    how long a tracking server may take to answer.
    """
    import mlflow

    info = tracking.read_run_info(run_info_path)
    uri = tracking.run_tracking_uri(info, tracking_uri)
    tracking.connect(uri, mlflow_timeout_s)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(info["run_id"])
    tags = version_tags(metrics, run, run.info.experiment_id)
    # SQLite: parallel evaluation jobs of a sweep must not interleave the read-compare-move.
    with tracking._store_lock(uri):
        version = register_version(client, name, info["run_id"], tags)
        return promote(client, name, version, run.info.experiment_id)
