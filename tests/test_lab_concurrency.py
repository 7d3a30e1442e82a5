"""16 training jobs of a sweep logging at once to the lab's MLflow server (metadata in
PostgreSQL, artifacts in S3 through the server) lose no run, param, metric point or artifact,
and log none twice: counted through the MLflow client."""

from __future__ import annotations

import json

import pytest

from _logging_job import METRICS, PARAMS, run_jobs

pytestmark = pytest.mark.slow

JOBS = 16
EPOCHS = 20


def test_sixteen_jobs_logging_at_once_lose_nothing(lab_stack):
    import mlflow

    uri = lab_stack.tracking_uri
    results = []
    for job in run_jobs(uri, "concurrency-test", JOBS, EPOCHS, timeout_s=600):
        assert job.returncode == 0, job.stderr[-3000:]
        results.append(json.loads(job.stdout.strip().splitlines()[-1]))
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
