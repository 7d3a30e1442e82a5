"""Shared infrastructure that goes away. The S3 server of the DVC remote stops while the workflow
fetches audio. The fetch fails in bounded time naming the remote and what to do, the shards
already extracted are kept (and not re-extracted), no audio is quarantined for it, and once the
server is back the same command finishes (real `rclone serve s3`, real DVC). PostgreSQL or the
lab's MLflow server stops while a job trains: the job ends in bounded time, and the rerun
resumes into the same MLflow run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from _training_data import make_features
from genre_classification.data.audio_source import list_collection
from genre_classification.data.shards import assign_shards
from genre_classification.fileio import read_tsv
from genre_classification.lab import use_s3_remote

pytestmark = pytest.mark.slow

TARGET = "results/data/manifest.tsv"
FILES_PER_SHARD = 5  # the tiny data set's 18 files in 3 non-empty shards
FAIL_WITHIN_S = 180
LOST_WITHIN_S = 150  # MLflow's client: 2 retries with backoff, then the job's own check


def test_s3_stopped_during_fetch_fails_clearly_and_a_rerun_finishes(
    workflow_dir, s3_server, monkeypatch
):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    data = workflow_dir.data
    repo, target = data["repo"], data["target"]
    url = f"s3://{s3_server.bucket}/dvc"
    use_s3_remote(repo, url, s3_server.endpoint)
    shutil.rmtree(data["remote"])  # only S3 has the audio now
    workflow_dir.overlay("shards.yaml", {"extraction": {"files_per_shard": FILES_PER_SHARD}})
    config = {"source": "dvc", "dvc": {"repo": str(repo), "target": target}, "extensions": ["wav"]}
    shards = sorted(assign_shards(list_collection(config), FILES_PER_SHARD))
    assert len(shards) == 3
    work = workflow_dir.workdir

    # one shard fetched and extracted while the server is up
    first = shards[0]
    workflow_dir("--cores", "2", f"results/features/.shards/{first}.tsv")
    extracted = {p: p.stat().st_mtime_ns for p in (work / "results/features").rglob("*.h5")}
    assert extracted

    # the server goes away; the rest of the collection is fetched
    s3_server.stop()
    began = time.monotonic()
    failed = workflow_dir("--cores", "2", "--keep-going", TARGET, check=False)
    took = time.monotonic() - began
    output = failed.stdout + failed.stderr
    print(f"fetch against a stopped S3 server failed after {took:.0f} s")
    assert failed.returncode != 0
    assert took < FAIL_WITHIN_S, f"the failed run took {took:.0f} s"
    assert f"`dvc fetch` from the DVC remote 'lab' ({url}) failed" in output, output[-3000:]
    assert "run the same snakemake command again" in output
    # the extracted shard is kept as it was; nothing was quarantined for the outage
    assert {p: p.stat().st_mtime_ns for p in extracted} == extracted
    assert not (work / "results/qc/rejected.tsv").exists()
    fetched = sorted(p.stem for p in (work / "results/data/fetched").glob("*.json"))
    assert fetched == [first]

    # the server is back: the same command finishes, the first shard is not extracted again
    s3_server.start()
    workflow_dir("--cores", "2", TARGET)
    manifest = read_tsv(work / TARGET)
    rejected = read_tsv(work / "results/qc/rejected.tsv")
    assert len(manifest) == 15 and len(rejected) == 3  # the tiny set's 3 bad files
    assert {p: p.stat().st_mtime_ns for p in extracted} == extracted


def stop_postgres(stack) -> None:
    """A fast shutdown of the stack's PostgreSQL (its postmaster's pid file), as when the
    database host goes away; ``lab_stack.sh start`` starts it again."""
    data = stack.root / "lab" / "postgres" / "data"
    pid = int((data / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 60
    while (data / "postmaster.pid").exists():
        assert time.monotonic() < deadline, "PostgreSQL did not stop"
        time.sleep(0.2)


@pytest.mark.parametrize("lost", ["postgresql", "mlflow-server"])
def test_lab_service_lost_mid_training_ends_the_job_and_a_rerun_resumes(lab_stack, tmp_path, lost):
    """Training logs to the lab's MLflow server (PostgreSQL + S3). PostgreSQL, or the MLflow
    server itself, stops after epoch 3: the job ends in bounded time with the checkpoints kept,
    and once the service is back the rerun resumes from its checkpoint into the same run."""
    import mlflow

    from test_training_faults import act_at_line, start_job

    split_path = make_features(tmp_path / "data")
    workdir, epochs = tmp_path / "job", 40
    uri = lab_stack.tracking_uri
    password = lab_stack.secrets()["GENRE_LAB_PG_PASSWORD"]

    def stop_service():
        if lost == "postgresql":
            stop_postgres(lab_stack)
        else:
            pid = int((lab_stack.root / "lab" / "mlflow.pid").read_text())
            os.killpg(os.getpgid(pid), signal.SIGTERM)

    proc = start_job(workdir, split_path, uri, epochs=epochs)
    output, took = act_at_line(proc, f"Epoch 3/{epochs}", stop_service)
    print(f"{lost} lost mid-training: the job ended {took:.1f} s later")
    assert proc.returncode != 0, output[-3000:]
    assert took <= LOST_WITHIN_S, f"the job ended {took:.0f} s after {lost} stopped"
    assert "results/checkpoints are kept" in output, output[-3000:]
    if lost == "postgresql":  # the server answers, its database does not
        assert "answers with server errors during the job (HTTP 5" in output
        assert "backend store" in output
    else:
        assert "is unreachable during the job" in output
    assert password not in output
    state = json.loads((workdir / "results/checkpoints/state.json").read_text())
    done = state["epochs_done"]
    assert 2 <= done < epochs
    run_id = json.loads((workdir / "results/checkpoints/mlflow_run.json").read_text())["run_id"]

    lab_stack.start()  # starts what is not running
    proc = start_job(workdir, split_path, uri, epochs=epochs)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    assert f"Resuming from checkpoint after epoch {done}" in output
    assert json.loads((workdir / "results/run.json").read_text())["run_id"] == run_id
    client = mlflow.MlflowClient(tracking_uri=uri)
    steps = sorted(m.step for m in client.get_metric_history(run_id, "val_loss"))
    assert steps == list(range(1, epochs + 1))  # every epoch once, none lost or doubled
    assert client.get_run(run_id).info.status == "FINISHED"
