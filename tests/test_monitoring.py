"""The Evidently monitoring workspace: the reports of two data versions add their snapshots to
one project; a rerun of a version replaces its snapshots; a real `evidently ui` on the workspace
serves the project, both versions' snapshots and the dashboard panels over its HTTP API, and a
real browser renders the dashboard."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _monitoring_data import predictions, track_table
from conftest import BIN, free_port, skip_unless_required
from genre_classification.monitoring import Monitor
from genre_classification.reports import (
    classification_report,
    data_drift_report,
    data_quality_report,
)

PROJECT = "genre-classification"
VERSIONS = {"aaaa1111aaaa1111": (1, 0.0, 0.85), "bbbb2222bbbb2222": (2, 1.5, 0.55)}
# Where the test leaves the browser's screenshot of the dashboard (docs/evidently_dashboard.png
# is one of these).
SCREENSHOT_ENV = "GENRE_EVIDENTLY_SCREENSHOT"


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


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class EvidentlyUI:
    """A real `evidently ui --workspace` on 127.0.0.1 (telemetry off)."""

    def __init__(self, workspace: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [str(BIN / "evidently"), "ui", "--workspace", str(workspace)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with open(log, "w") as handle:
            self.proc = subprocess.Popen(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DO_NOT_TRACK": "1"},
                start_new_session=True,
            )

    def wait(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                get(f"{self.url}/api/projects/")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"evidently ui did not start:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=30)


def test_two_data_versions_in_the_ui_and_a_rerun_replaces(tmp_path):
    workspace = tmp_path / "evidently"
    for version in VERSIONS:
        run_reports(workspace, tmp_path / "out", version)
    # a rerun on the second data version (another commit) replaces its three snapshots
    run_reports(workspace, tmp_path / "out", "bbbb2222bbbb2222", commit="4567def")
    # the HTML and JSON files are still written as before
    assert json.loads((tmp_path / "out/q.json").read_text())["passed"] is True

    ui = EvidentlyUI(workspace, tmp_path / "ui.log")
    try:
        ui.wait()
        projects = get(f"{ui.url}/api/projects/")
        assert [p["name"] for p in projects] == [PROJECT]
        project_id = projects[0]["id"]
        snapshots = get(f"{ui.url}/api/projects/{project_id}/snapshots")
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
        dashboard = get(f"{ui.url}/api/v2/dashboards/{project_id}")
        titles = {panel["title"] for panel in dashboard["panels"]}
        assert titles == {
            "Data drift: share of drifted columns",
            "Data quality tests: failing counts (0 = passed)",
            "Macro-F1: cnn",
        }
        screenshot(f"{ui.url}/projects/{project_id}", tmp_path)
    finally:
        ui.stop()


def screenshot(url: str, tmp_path: Path) -> None:
    """The dashboard in headless chromium: the panels are drawn by the UI's JS from the API."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        skip_unless_required("chromium not installed (make system-deps): dashboard not rendered")
    png = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
    common = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--virtual-time-budget=20000",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert "Macro-F1: cnn" in dom and "Data drift: share of drifted columns" in dom, dom[-2000:]
    subprocess.run(
        [*common, "--window-size=1400,1100", f"--screenshot={png}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert png.read_bytes()[:4] == b"\x89PNG"


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
    from genre_classification.monitoring import snapshot_labels

    model = "cnn" if kind == "classification" else None
    labels = snapshot_labels(kind, {"data_version": {"md5": "f" * 32}, "git_commit": "c"}, model)
    assert labels["metadata"]["data_version"] == "f" * 32
    assert labels["metadata"]["git_commit"] == "c"
    assert (f"model:{model}" in labels["tags"]) is bool(model)
    with pytest.raises(ValueError, match="kind"):
        snapshot_labels("drift", {})
