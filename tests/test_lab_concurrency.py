"""16 training jobs of a sweep logging at once to the lab's MLflow server (metadata in
PostgreSQL, artifacts in S3 through the server) lose no run, param, metric point or artifact,
and log none twice: counted through the MLflow client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _logging_job import METRICS, PARAMS

pytestmark = pytest.mark.slow

JOBS = 16
EPOCHS = 20
JOB = Path(__file__).with_name("_logging_job.py")


def run_jobs(uri: str, experiment: str, jobs: int, epochs: int) -> list[dict]:
    """``jobs`` logging processes started together; their results (run id, seconds)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(JOB.parent), *sys.path])}
    procs = [
        subprocess.Popen(
            [sys.executable, str(JOB), uri, experiment, str(i), str(epochs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for i in range(jobs)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_sixteen_jobs_logging_at_once_lose_nothing(lab_stack):
    import mlflow

    uri = lab_stack.tracking_uri
    results = run_jobs(uri, "concurrency-test", JOBS, EPOCHS)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("concurrency-test")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) == JOBS
    assert {r.info.run_id for r in runs} == {r["run_id"] for r in results}
    points = 0
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(run.data.params) == PARAMS
        for name in METRICS:
            history = client.get_metric_history(run.info.run_id, name)
            assert sorted(m.step for m in history) == list(range(EPOCHS)), (run.info.run_name, name)
            points += len(history)
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["history.json"]
    assert points == JOBS * EPOCHS * len(METRICS)
    slowest = max(r["seconds"] for r in results)
    print(f"{JOBS} jobs, {points} metric points, slowest job {slowest:.1f} s")
