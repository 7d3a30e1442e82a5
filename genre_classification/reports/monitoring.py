"""An Evidently monitoring workspace across runs: every data drift, data quality and classification
report of the workflow is also added as a snapshot to a local Evidently workspace
(``results/evidently``), one project per MLflow experiment, so that ``evidently ui --workspace
results/evidently`` shows the metrics across data versions as a dashboard.

Evidently 0.7 API used here (checked against the installed 0.7.23): ``evidently.ui.workspace.
Workspace(path)`` (a local directory; ``search_project``, ``create_project``, ``add_run``,
``list_runs``, ``get_run`` -> ``SnapshotModel`` with ``metadata``/``tags``, ``delete_run``);
``project.dashboard.add_panel(DashboardPanelPlot(...), tab=...)`` with the panels of
``evidently.sdk.panels`` (``line_plot_panel``) and ``PanelMetric(metric=
"DriftedColumnsCount", metric_labels={"value_type": "share"})``: a panel's series are the values
of one metric type (and labels) in the snapshots whose tags/metadata match, by timestamp.
``Report.run(..., metadata=..., tags=...)`` labels a snapshot.

Each snapshot carries metadata ``kind`` (``data_drift``, ``data_quality``, ``classification``),
``data_version`` (the DVC md5 of the data), ``git_commit``, and ``model`` for a classification;
tags ``kind``, ``data:<md5 prefix>`` (and ``model:<name>``). A rerun on the same data version
replaces the snapshot of the same kind (and model) instead of adding a second. Several report
jobs may add at once: the workspace is changed under ``fileio.exclusive_lock``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from genre_classification.fileio import exclusive_lock

log = logging.getLogger(__name__)

LOCK_NAME = ".workspace.lock"
TAB = "Monitoring"
KINDS = ("data_drift", "data_quality", "classification")


@dataclass(frozen=True)
class Monitor:
    """Where a report's snapshot goes: the workspace directory and its project (the MLflow
    experiment's name)."""

    workspace: str | Path
    project: str


def snapshot_labels(kind: str, provenance: dict | None, model: str | None = None) -> dict:
    """``metadata`` and ``tags`` of a report's snapshot (``Report.run``'s keyword arguments)
    from the provenance of its result files (``provenance.result_provenance``)."""
    if kind not in KINDS:
        raise ValueError(f"snapshot kind {kind!r} is not one of {KINDS}")
    provenance = provenance or {}
    version = str((provenance.get("data_version") or {}).get("md5") or "unknown")
    metadata = {
        "kind": kind,
        "data_version": version,
        "git_commit": str(provenance.get("git_commit") or "unknown"),
    }
    rows = provenance.get("rows")
    if rows and rows["sampled"]:  # the report's row count where Evidently shows metadata
        metadata["rows"] = f"a seeded sample of {rows['n_used']} of {rows['n_rows']} rows"
    tags = [kind, f"data:{version[:12]}"]
    if model:
        metadata["model"] = model
        tags.append(f"model:{model}")
    return {"metadata": metadata, "tags": tags}


def _same_slot(metadata: dict, labels: dict) -> bool:
    """A snapshot of the same kind, data version (and model) as ``labels``: the one replaced."""
    keys = ("kind", "data_version", "model")
    return all(metadata.get(k) == labels["metadata"].get(k) for k in keys)


# The dashboard panels, one line plot each: title, description, the tags of the snapshots it
# reads, and its series: (legend, Evidently metric type, metric labels).
DATA_PANELS = (
    (
        "Data drift: share of drifted columns",
        "DriftedColumnsCount share of the data drift report, per data version",
        ["data_drift"],
        [("drift share", "DriftedColumnsCount", {"value_type": "share"})],
    ),
    (
        "Data quality tests: failing counts (0 = passed)",
        "values of the data quality report's tested metrics, per data version",
        ["data_quality"],
        [
            ("missing values", "DatasetMissingValueCount", {"value_type": "count"}),
            ("constant columns", "ConstantColumnsCount", {}),
            ("duplicated tracks", "DuplicatedRowCount", {}),
        ],
    ),
)


def model_panel(model: str) -> tuple:
    """The macro-F1 panel of ``model`` (as DATA_PANELS' entries)."""
    return (
        f"Macro-F1: {model}",
        "Evidently's F1Score (macro average over the genres) of the model's test predictions, "
        "per data version",
        ["classification", f"model:{model}"],
        [("macro-F1", "F1Score", {})],
    )


def panels(model: str | None = None) -> list:
    """The dashboard panels: drift share and quality test values; macro-F1 of ``model``."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    return [
        line_plot_panel(
            title=title,
            description=description,
            values=[
                PanelMetric(legend=legend, metric=metric, metric_labels=labels, tags=tags)
                for legend, metric, labels in series
            ],
            size="half",
        )
        for title, description, tags, series in ([model_panel(model)] if model else DATA_PANELS)
    ]


def _project(workspace, name: str):
    found = workspace.search_project(name)
    if found:
        return found[0]
    project = workspace.create_project(name, description=f"MLflow experiment {name}")
    project.save()
    return project


def _ensure_panels(project, wanted: list) -> None:
    """Add the panels of ``wanted`` whose title the dashboard does not have yet."""
    titles = {panel.title for panel in project.dashboard.model().panels}
    for panel in wanted:
        if panel.title not in titles:
            project.dashboard.add_panel(panel, tab=TAB)


def add_snapshot(monitor: Monitor, snapshot, labels: dict) -> str:
    """Add ``snapshot`` (run with ``labels``, from ``snapshot_labels``) to the monitor's project,
    replacing the snapshot of the same kind, data version and model; returns its id."""
    from evidently.ui.workspace import Workspace

    kind, model = labels["metadata"]["kind"], labels["metadata"].get("model")
    path = Path(monitor.workspace)
    path.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path / LOCK_NAME, what=f"Evidently workspace {path}"):
        workspace = Workspace(str(path))
        project = _project(workspace, monitor.project)
        _ensure_panels(project, panels() + (panels(model) if model else []))
        replaced = []
        for snapshot_id in workspace.list_runs(project.id):
            existing = workspace.get_run(project.id, snapshot_id)
            if existing is not None and _same_slot(existing.metadata, labels):
                workspace.delete_run(project.id, snapshot_id)
                replaced.append(str(snapshot_id))
        ref = workspace.add_run(project.id, snapshot)
    log.info(
        "Evidently workspace %s, project %r: %s snapshot %s (data version %s)%s",
        path,
        monitor.project,
        kind,
        ref.id,
        labels["metadata"]["data_version"],
        f", replacing {', '.join(replaced)}" if replaced else "",
    )
    return str(ref.id)
