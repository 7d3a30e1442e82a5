"""A job stops when the Snakemake process that started it has ended (jobcontrol.watch_workflow),
and GracefulStop turns SIGTERM into a stop at a safe point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from genre_classification import jobcontrol

JOB = """
import time
from genre_classification.jobcontrol import watch_workflow
assert watch_workflow(poll_s=0.2) is not None
print("watching", flush=True)
time.sleep(120)
"""


def test_job_stops_when_its_workflow_process_ends():
    workflow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        start = jobcontrol.process_start(workflow.pid)
        env = {**os.environ, jobcontrol.WORKFLOW_PID_ENV: f"{workflow.pid}:{start}"}
        job = subprocess.Popen(
            [sys.executable, "-c", JOB], env=env, stdout=subprocess.PIPE, text=True
        )
        assert job.stdout.readline() == "watching\n"
        time.sleep(1)
        assert job.poll() is None  # the workflow lives: the job runs on
        workflow.kill()
        workflow.wait()  # reaped: gone from /proc (a zombie would count as gone too)
        began = time.monotonic()
        assert job.wait(timeout=30) == -signal.SIGTERM
        assert time.monotonic() - began < 5
    finally:
        workflow.kill()
        workflow.wait()
    assert jobcontrol.process_start(workflow.pid) is None


def test_not_watching_outside_a_workflow_or_in_the_workflow_itself(monkeypatch):
    monkeypatch.delenv(jobcontrol.WORKFLOW_PID_ENV, raising=False)
    assert jobcontrol.watch_workflow() is None
    monkeypatch.setenv(jobcontrol.WORKFLOW_PID_ENV, f"{os.getpid()}:1")  # a `run:` job
    assert jobcontrol.watch_workflow() is None


def test_graceful_stop_defers_a_signal_to_a_safe_point():
    with jobcontrol.GracefulStop() as stop:
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs; nothing is raised inside the section
            assert stop.requested == signal.SIGTERM
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the workflow's SIGTERM
            time.sleep(0.1)
        with pytest.raises(jobcontrol.Interrupted, match="stopped by SIGTERM"):
            stop.check()
    with jobcontrol.GracefulStop():
        with pytest.raises(jobcontrol.Interrupted, match="stopped by SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)  # outside a section: at once
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
