"""Faults around a training job end fast, clearly and without losing work: an unreachable MLflow
server at the start, a server lost in the middle of training (the rerun resumes), and two jobs
that would share one checkpoint directory. The server is a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from _train_job import start
from _training_data import TINY_CONFIG, make_features
from genre_classification import tracking
from genre_classification.evaluation.evaluate import evaluate
from genre_classification.fileio import LockedError, exclusive_lock

SECRET = "s3cret-token-4711"


def secret_uri(url: str) -> str:
    return url.replace("http://", f"http://alice:{SECRET}@")


def start_job(workdir: Path, split_path: Path, uri: str, epochs: int, **extra):
    config = {**TINY_CONFIG, "epochs": epochs, "early_stopping": {"patience": 1000}}
    job = {
        "config": config,
        "split_path": str(split_path),
        "model_path": "results/model.keras",
        "history_path": "results/history.csv",
        "run_info_path": "results/run.json",
        "checkpoint_dir": "results/checkpoints",
        "experiment": "faults",
        "model_name": "tiny",
        "threads": 1,
        **extra,
    }
    return start(job, workdir, {"MLFLOW_TRACKING_URI": uri})


def wait_for_line(proc, text: str, timeout: float = 300) -> list[str]:
    """Read the job's output until a line containing ``text``; returns the lines read."""
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return lines
        assert time.monotonic() < deadline, "".join(lines)
    raise AssertionError(f"job ended before {text!r}:\n{''.join(lines)}")


def act_at_line(proc, text: str, action, timeout: float = 600) -> tuple[str, float]:
    """Wait for the job's line containing ``text``, call ``action()``, then let the job end:
    ``(its whole output, seconds from the action to its end)``; the job is killed if the test
    fails before it ends."""
    try:
        lines = wait_for_line(proc, text)
        action()
        began = time.monotonic()
        rest, _ = proc.communicate(timeout=timeout)
        return "".join(lines) + rest, time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()


def test_unreachable_server_detected_at_job_start(tmp_path, mlflow_server_process):
    split_path = make_features(tmp_path / "data")
    uri = secret_uri(mlflow_server_process.url)
    mlflow_server_process.stop()  # the server was there, and is gone

    began = time.monotonic()
    proc = start_job(tmp_path / "job", split_path, uri, epochs=2, mlflow_timeout_s=5)
    output, _ = proc.communicate(timeout=120)
    elapsed = time.monotonic() - began
    assert proc.returncode != 0
    assert elapsed <= 30, f"training noticed the outage after {elapsed:.0f} s"
    assert "TrackingServerError" in output
    assert f"{mlflow_server_process.url.replace('http://', 'http://***@')} is unreachable" in output
    assert "Connection refused" in output and "Start the server" in output
    assert SECRET not in output
    print(f"training: outage detected {elapsed:.1f} s after the job started")

    # evaluation of an earlier run: the same check before any work
    run_info = tmp_path / "run.json"
    tracking.write_run_info(run_info, "0123", "1", uri)
    began = time.monotonic()
    with pytest.raises(tracking.TrackingServerError, match="is unreachable") as error:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", uri)
            evaluate(
                tmp_path / "missing-model.keras",  # never opened: the check comes first
                split_path,
                tmp_path / "m.json",
                tmp_path / "p.csv",
                tmp_path / "c.png",
                run_info_path=run_info,
                mlflow_timeout_s=5,
            )
    assert time.monotonic() - began <= 30
    assert SECRET not in str(error.value)


def test_server_lost_mid_training_ends_attempt_and_rerun_resumes(tmp_path, mlflow_server_process):
    split_path = make_features(tmp_path / "data")
    uri = secret_uri(mlflow_server_process.url)
    workdir = tmp_path / "job"
    epochs = 40
    proc = start_job(workdir, split_path, uri, epochs=epochs)
    output, elapsed = act_at_line(proc, f"Epoch 3/{epochs}", mlflow_server_process.stop, 300)
    assert proc.returncode != 0, output
    assert elapsed <= 120, f"the attempt ended {elapsed:.0f} s after the server was lost"
    assert "is unreachable during the job" in output
    assert "results/checkpoints are kept" in output
    assert SECRET not in output
    print(f"server lost mid-training: attempt ended after {elapsed:.1f} s")
    state = json.loads((workdir / "results/checkpoints/state.json").read_text())
    done = state["epochs_done"]
    assert 2 <= done < epochs
    run_id = json.loads((workdir / "results/checkpoints/mlflow_run.json").read_text())["run_id"]

    mlflow_server_process.start()  # the server is back: the rerun resumes the same run
    proc = start_job(workdir, split_path, uri, epochs=epochs)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert f"Resuming from checkpoint after epoch {done}" in output
    assert json.loads((workdir / "results/run.json").read_text())["run_id"] == run_id

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server_process.url)
    steps = sorted(m.step for m in client.get_metric_history(run_id, "val_loss"))
    assert steps == list(range(1, epochs + 1))
    assert client.get_run(run_id).info.status == "FINISHED"


def test_lock_names_holder_and_times_out(tmp_path):
    lock = tmp_path / "models" / ".checkpoints.lock"
    held, release = threading.Event(), threading.Event()

    def holder():
        with exclusive_lock(lock, what="checkpoint directory X"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        began = time.monotonic()
        with pytest.raises(LockedError) as error:
            with exclusive_lock(lock, timeout_s=1.5, what="checkpoint directory X"):
                pass
        assert 1.4 <= time.monotonic() - began < 10
        message = str(error.value)
        assert message.startswith("checkpoint directory X is in use by pid ")
        assert str(lock) in message and "waited 1.5 s" in message
    finally:
        release.set()
        thread.join()
    with exclusive_lock(lock, timeout_s=1):  # released: free again
        assert "pid" in lock.read_text()
    assert lock.read_text() == ""


def test_second_training_job_cannot_share_checkpoint_dir(tmp_path):
    split_path = make_features(tmp_path / "data")
    workdir = tmp_path / "job"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = start_job(workdir, split_path, uri, epochs=1000)  # still training when we stop it
    try:
        wait_for_line(first, "Epoch 1/1000")
        began = time.monotonic()
        second = start_job(workdir, split_path, uri, epochs=1000, lock_timeout_s=2)
        output, _ = second.communicate(timeout=120)
        assert second.returncode != 0, output
        assert time.monotonic() - began < 60
        assert f"checkpoint directory results/checkpoints is in use by pid {first.pid}" in output
        assert first.poll() is None  # the first job goes on undisturbed
    finally:
        first.kill()
        first.communicate()
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("faults")
    assert len(client.search_runs([experiment.experiment_id])) == 1  # one run, not two


def test_sigterm_stops_training_keeps_checkpoints_and_no_empty_run(tmp_path):
    """SIGTERM (from the workflow, or its own watcher: jobcontrol) stops training at the next
    batch: after a finished epoch the checkpoints stay and the run is KILLED, to be resumed;
    before any, the run holds nothing to resume and is deleted (one run per model)."""
    import signal

    import mlflow

    split_path = make_features(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    epochs = 40
    client = mlflow.MlflowClient(tracking_uri=uri)
    for stop_at, done in ((f"Epoch 1/{epochs}", 0), (f"Epoch 2/{epochs}", 1)):
        workdir = tmp_path / f"after-{done}"
        proc = start_job(workdir, split_path, uri, epochs=epochs)
        output, elapsed = act_at_line(
            proc, stop_at, lambda proc=proc: proc.send_signal(signal.SIGTERM), 120
        )
        print(f"SIGTERM during epoch {done + 1}: the job ended after {elapsed:.1f} s")
        assert proc.returncode != 0 and elapsed <= 30, output
        assert f"'tiny' stopped by SIGTERM after {done} finished epoch(s)" in output
        run_file = workdir / "results/checkpoints/mlflow_run.json"
        experiment = client.get_experiment_by_name("faults")
        runs = client.search_runs([experiment.experiment_id], run_view_type=3)
        if done == 0:
            assert "deleted: no epoch had finished" in output
            assert not run_file.exists()
            assert [r.info.lifecycle_stage for r in runs] == ["deleted"]
        else:
            state = json.loads((workdir / "results/checkpoints/state.json").read_text())
            assert state["epochs_done"] == 1  # the epoch in progress is dropped
            run_id = json.loads(run_file.read_text())["run_id"]
            assert client.get_run(run_id).info.status == "KILLED"
            assert not (workdir / "results/model.keras").exists()


def test_outage_message_tells_a_server_without_its_store_from_no_server():
    uri = "http://alice:s3cret@mlflow.lab:5000"
    answered = RuntimeError(
        "API request to http://mlflow.lab:5000/api/2.0/mlflow/runs/get failed with exception "
        "HTTPConnectionPool(...): Max retries exceeded (Caused by ResponseError('too many 503 "
        "error responses'))"
    )
    message = tracking.outage_message(uri, answered, "during the job")
    assert "answers with server errors during the job (HTTP 503" in message
    assert "backend store" in message and "s3cret" not in message
    refused = ConnectionRefusedError("[Errno 111] Connection refused")
    message = tracking.outage_message(uri, refused, "at the start")
    assert "is unreachable at the start: [Errno 111] Connection refused" in message
