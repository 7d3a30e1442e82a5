"""The host that runs Snakemake needs only the core dependencies: the workflow parses and plans
every job while importing any of the jobs' dependencies fails."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import planned_jobs
from test_packaging import JOB_ONLY

BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is a job dependency, not for the Snakemake host")
sys.meta_path.insert(0, Block())
"""
MODULES = {"tensorflow", "keras", "librosa", "soundfile", "mlflow", "evidently", "matplotlib",
           "sklearn", "boto3", "psycopg2"}  # fmt: skip


def test_the_workflow_parses_without_the_jobs_dependencies(workflow_dir, tmp_path, monkeypatch):
    assert len(MODULES) == len(JOB_ONLY)  # one import name per job-only distribution
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER.format(blocked=MODULES))
    path = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    blocked = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True)
    assert b"job dependency" in blocked.stderr  # the blocker works
    plan = workflow_dir("--dry-run")
    jobs = planned_jobs(plan.stdout)
    assert {"fetch_audio", "extract_features", "train_model", "evaluate_model"} <= set(jobs)
