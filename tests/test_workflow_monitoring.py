"""What a whole run leaves for monitoring (issue 20), through the real workflow on the tiny data
set: one resource row per job with used and declared memory and runtime, and its picture in the
Snakemake report (rendered in a real browser); MLflow system metrics of the training run; the
report jobs' snapshots in the Evidently workspace, and after a second run on a new DVC data
version (one clip changed) `evidently ui` serving both versions' snapshots and their dashboard."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from _browser import EvidentlyUI, headless_chromium
from conftest import TINY_MODEL, planned_jobs
from genre_classification.data.demo_data import synthesize_clip
from genre_classification.data.dvc_repo import add_and_push, dvc_executable
from genre_classification.fileio import read_tsv

pytestmark = pytest.mark.slow
# Where the test leaves the browser's screenshot of the report page with the resource picture
# (docs/snakemake_report_resources.png is one).
SCREENSHOT_ENV = "GENRE_REPORT_SCREENSHOT"
# ... and of the Evidently dashboard of the two data versions (docs/evidently_dashboard.png).
DASHBOARD_ENV = "GENRE_EVIDENTLY_SCREENSHOT"
KINDS = ("classification", "data_drift", "data_quality")


def declared_resources(dry_run: str) -> dict[tuple[str, str], dict[str, str]]:
    """(rule, wildcards) -> the resources a dry run prints for each job."""
    jobs, rule, wildcards = {}, None, ""
    for line in dry_run.splitlines():
        line = line.strip()
        if match := re.match(r"(?:local)?rule (\w+):", line):
            rule, wildcards = match.group(1), ""
        elif line.startswith("wildcards:"):
            wildcards = ",".join(sorted(w.strip() for w in line[10:].split(",")))
        elif line.startswith("resources:") and rule:
            values = dict(item.strip().split("=", 1) for item in line[10:].split(","))
            jobs[(rule, wildcards)] = values
    return jobs


def test_resources_system_metrics_and_evidently_across_two_data_versions(workflow_dir, tmp_path):
    workflow_dir.overlay(
        "training.yaml",
        {"training": {"run": ["tiny"], "models": {"tiny": TINY_MODEL}, "resources": {"gpu": 0}}},
    )
    dry = workflow_dir("--cores", "2", "--dry-run").stdout  # threads as in the run
    planned = planned_jobs(dry)
    declared = declared_resources(dry)
    workflow_dir("--cores", "2")
    work = workflow_dir.workdir

    # one row per job that ran (all but the target rule and the collection itself)
    rows = read_tsv(work / "results/resources/jobs.tsv")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["rule"]] = counts.get(row["rule"], 0) + 1
    expected = {r: n for r, n in planned.items() if r not in ("all", "resource_usage")}
    assert counts == expected
    # declared: what Snakemake gave each job; used: measured
    by_job = {(r["rule"], r["wildcards"]): r for r in rows}
    for key, resources in declared.items():
        if key[0] in expected:
            assert by_job[key]["mem_mb"] == resources["mem_mb"], key
            assert by_job[key]["runtime_min"] == resources["runtime"], key
    train = by_job[("train_model", "model=tiny")]
    assert float(train["max_rss_mb"]) > 200  # TensorFlow is loaded
    assert float(train["wall_s"]) > 1 and float(train["cpu_time_s"]) > 1
    assert (work / "results/resources/jobs.png").read_bytes()[:4] == b"\x89PNG"

    # MLflow system metrics of the training run (training.system_metrics defaults to true)
    import mlflow

    info = json.loads((work / "results/mlflow/runs/tiny.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work}/results/mlflow/mlflow.db")
    metrics = client.get_run(info["run_id"]).data.metrics
    assert "system/cpu_utilization_percentage" in metrics
    assert "system/system_memory_usage_megabytes" in metrics

    # the Evidently workspace: one project (the experiment), the three report snapshots
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(work / "results/evidently"))
    [project] = workspace.list_projects()
    kinds = sorted(
        workspace.get_run(project.id, s).metadata["kind"] for s in workspace.list_runs(project.id)
    )
    assert kinds == ["classification", "data_drift", "data_quality"]

    # nothing left to do; the report shows the picture in a real browser
    assert planned_jobs(workflow_dir("--dry-run").stdout) == {}
    workflow_dir("--report", "report.html")
    html = (work / "report.html").read_text(errors="replace")
    assert "jobs.png" in html and "used vs declared" in html
    render_resource_picture(work / "report.html", tmp_path)

    # A collaborator changes one clip and publishes a new data version (dvc add + push); the
    # next plain run adds that version's snapshots to the same project.
    first = json.loads((work / "results/data/data_version.json").read_text())["md5"]
    new_data_version(workflow_dir.data["repo"])
    workflow_dir("--cores", "2")
    second = json.loads((work / "results/data/data_version.json").read_text())["md5"]
    assert second != first
    assert second in (workflow_dir.data["repo"] / "genres.dvc").read_text()

    with EvidentlyUI(work / "results/evidently", tmp_path / "ui.log") as ui:
        [project] = ui.api("projects/")
        snapshots = ui.api(f"projects/{project['id']}/snapshots")
        slots = sorted((s["metadata"]["kind"], s["metadata"]["data_version"]) for s in snapshots)
        assert slots == sorted((kind, v) for kind in KINDS for v in (first, second))
        tags = {tag for s in snapshots for tag in s["tags"]}
        assert {f"data:{first[:12]}", f"data:{second[:12]}", "model:tiny"} <= tags
        # the dashboard, drawn by the UI's JavaScript from its API, in a real browser
        png = Path(os.environ.get(DASHBOARD_ENV) or tmp_path / "dashboard.png")
        dom = headless_chromium(
            f"{ui.url}/projects/{project['id']}",
            tmp_path / "chromium-ui",
            screenshot=png,
            window="1400,1100",
            budget_ms=20000,
        )
        for title in ("Data drift: share of drifted columns", "Macro-F1: tiny"):
            assert title in dom, dom[-2000:]


def new_data_version(repo: Path) -> None:
    """One clip of the DVC data repo replaced by another recording, added and pushed."""
    import soundfile as sf

    subprocess.run([dvc_executable(), "pull", "-q", "genres.dvc"], cwd=repo, check=True)
    changed = repo / "genres" / "metal" / "metal.00002.wav"
    sf.write(changed, synthesize_clip("metal", 3.5, 22050, seed=999), 22050, subtype="PCM_16")
    add_and_push(repo, "genres", "new version of one clip")


# Opens the picture as a user does: the "Resources" category, then its result.
SHOW_PICTURE = """
<script>
window.addEventListener("load", () => setTimeout(() => {
  const path = Object.keys(results).find((p) => p.endsWith("resources/jobs.png"));
  app.showCategory("Resources");
  app.setView({content: "img", contentPath: results[path].data_uri, resultPath: path});
  document.title = "shown " + path;
}, 500));
</script>
"""


def render_resource_picture(report: Path, tmp_path: Path) -> None:
    page = tmp_path / "report-resources.html"
    head, tail = report.read_text(errors="replace").rsplit("</body>", 1)  # the page's own
    page.write_text(head + SHOW_PICTURE + "</body>" + tail)
    png = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "report.png")
    dom = headless_chromium(page.as_uri(), tmp_path / "chromium", screenshot=png, window="1500,900")
    assert "<title>shown results/resources/jobs.png</title>" in dom, dom[:2000]
    assert '<img src="data:image/png;' in dom
