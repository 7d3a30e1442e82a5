"""The Evidently monitoring workspace: the reports of two data versions add their snapshots to
one project; a rerun of a version replaces its snapshots; a real `evidently ui` on the workspace
serves the project, both versions' snapshots and the dashboard panels over its HTTP API.
(The same through the real workflow, with the dashboard in a real browser:
tests/test_workflow_monitoring.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from _browser import EvidentlyUI
from _monitoring_data import predictions, track_table
from genre_classification.reports.monitoring import Monitor
from genre_classification.reports.reports import (
    classification_report,
    data_drift_report,
    data_quality_report,
)

PROJECT = "genre-classification"
VERSIONS = {"aaaa1111aaaa1111": (1, 0.0, 0.85), "bbbb2222bbbb2222": (2, 1.5, 0.55)}


def run_reports(workspace: Path, out: Path, version: str, commit: str = "0123abc") -> None:
    """The three reports of one data version, as the report jobs make them."""
    seed, shift, right = VERSIONS[version]
    table = track_table(seed, shift)
    provenance = {"data_version": {"md5": version}, "git_commit": commit}
    monitor = Monitor(workspace, PROJECT)
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    data_drift_report(
        train, test, out / "d.html", out / "d.json", provenance=provenance, monitor=monitor
    )
    data_quality_report(
        table, out / "q.html", out / "q.json", provenance=provenance, monitor=monitor
    )
    classification_report(
        predictions(table, right),
        out / "c.html",
        out / "c.json",
        model="cnn",
        provenance=provenance,
        monitor=monitor,
    )


def test_two_data_versions_in_the_ui_and_a_rerun_replaces(tmp_path):
    workspace = tmp_path / "evidently"
    for version in VERSIONS:
        run_reports(workspace, tmp_path / "out", version)
    # a rerun on the second data version (another commit) replaces its three snapshots
    run_reports(workspace, tmp_path / "out", "bbbb2222bbbb2222", commit="4567def")
    # the HTML and JSON files are still written as before
    assert json.loads((tmp_path / "out/q.json").read_text())["passed"] is True

    with EvidentlyUI(workspace, tmp_path / "ui.log") as ui:
        projects = ui.api("projects/")
        assert [p["name"] for p in projects] == [PROJECT]
        project_id = projects[0]["id"]
        snapshots = ui.api(f"projects/{project_id}/snapshots")
        slots = sorted((s["metadata"]["kind"], s["metadata"]["data_version"]) for s in snapshots)
        assert slots == sorted(
            (kind, version)
            for kind in ("classification", "data_drift", "data_quality")
            for version in VERSIONS
        )
        commits = {s["metadata"]["data_version"]: s["metadata"]["git_commit"] for s in snapshots}
        assert commits == {"aaaa1111aaaa1111": "0123abc", "bbbb2222bbbb2222": "4567def"}
        tags = {tag for s in snapshots for tag in s["tags"]}
        assert {"data:aaaa1111aaaa", "data:bbbb2222bbbb", "model:cnn"} <= tags
        dashboard = ui.api(f"v2/dashboards/{project_id}")
        titles = {panel["title"] for panel in dashboard["panels"]}
        assert titles == {
            "Data drift: share of drifted columns",
            "Data quality tests: failing counts (0 = passed)",
            "Macro-F1: cnn",
        }


def _add(workspace: str, version: str, out: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    run_reports(Path(workspace), Path(out), version)


def test_concurrent_report_jobs_lose_no_snapshot(tmp_path):
    """Report jobs of two data versions writing to one workspace at once (separate processes,
    as Snakemake runs them): the lock keeps every snapshot and one project."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    jobs = [
        context.Process(target=_add, args=(str(tmp_path / "ws"), v, str(tmp_path / v)))
        for v in VERSIONS
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=300)
        assert job.exitcode == 0
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(tmp_path / "ws"))
    [project] = workspace.list_projects()
    assert len(workspace.list_runs(project.id)) == 6
    assert len(workspace.get_dashboard(project.id).panels) == 3


@pytest.mark.parametrize("kind", ["data_drift", "classification"])
def test_snapshot_labels(kind):
    from genre_classification.reports.monitoring import snapshot_labels

    model = "cnn" if kind == "classification" else None
    labels = snapshot_labels(kind, {"data_version": {"md5": "f" * 32}, "git_commit": "c"}, model)
    assert labels["metadata"]["data_version"] == "f" * 32
    assert labels["metadata"]["git_commit"] == "c"
    assert (f"model:{model}" in labels["tags"]) is bool(model)
    with pytest.raises(ValueError, match="kind"):
        snapshot_labels("drift", {})
