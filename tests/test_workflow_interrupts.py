"""An interrupt of the Snakemake process alone (SIGINT or SIGTERM to its pid: a wrapper, a
scheduler, `kill`) stops its running jobs too, training keeps its epoch checkpoints, and the
plain rerun resumes them in the same MLflow run (docs/troubleshooting.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, SNAKEFILE, TINY_MODEL

pytestmark = pytest.mark.slow

EPOCHS = 25
TARGET = "results/eval/slow/metrics.json"


def job_pids(session: int, script: str) -> list[int]:
    """The pids of this session's processes running a Snakemake script job of ``script``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if os.getsid(int(entry.name)) != session:
                continue
        except OSError:
            continue
        if any(part.endswith(script.encode()) for part in cmdline) and b"python" in cmdline[0]:
            pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def epochs_done(state: Path) -> int:
    try:
        return json.loads(state.read_text())["epochs_done"]
    except (OSError, ValueError):
        return 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_snakemake_stops_training_and_plain_rerun_resumes(workflow_dir, sig):
    model = {**TINY_MODEL, "epochs": EPOCHS, "early_stopping": {"patience": 1000}}
    workflow_dir.overlay(
        "training.yaml",
        {"training": {"run": ["slow"], "models": {"slow": model}, "resources": {"gpu": 0}}},
    )
    work = workflow_dir.workdir
    command = [str(BIN / "snakemake"), "--snakefile", str(SNAKEFILE), "--configfile"]
    command += [*workflow_dir.configfiles, "--cores", "2", TARGET]
    state = work / "results/models/slow/checkpoints/state.json"
    with open(work / "first.log", "w") as output:
        # its own session: only a signal to its pid reaches it, never one to a process group
        snakemake = subprocess.Popen(
            command, cwd=work, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 900
        while epochs_done(state) < 1:
            assert snakemake.poll() is None, (work / "first.log").read_text()
            assert time.monotonic() < deadline, "no epoch finished in 15 minutes"
            time.sleep(0.2)
        trainers = job_pids(snakemake.pid, "train_model.py")
        assert len(trainers) == 1, trainers
        os.kill(snakemake.pid, sig)  # that pid only
        began = time.monotonic()
        ended = {}
        while len(ended) < 2 and time.monotonic() - began < 120:
            if "training" not in ended and not alive(trainers[0]):
                ended["training"] = time.monotonic() - began
            if "snakemake" not in ended and snakemake.poll() is not None:
                ended["snakemake"] = time.monotonic() - began
            time.sleep(0.05)
        snakemake.wait(timeout=10)
        training_s = ended.get("training", float("inf"))
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
            snakemake.wait()
    first = (work / "first.log").read_text()
    print(f"{sig.name}: ended after {ended} s")
    assert not alive(trainers[0]), f"training still running {training_s:.0f} s after {sig.name}"
    assert training_s <= 30, first
    assert snakemake.returncode != 0
    stopped_after = epochs_done(state)
    assert 1 <= stopped_after < EPOCHS  # the checkpoints are kept
    log = (work / "logs/train_model/slow.log").read_text()
    assert "received SIGTERM" in log  # from the workflow's handler in Snakemake
    assert f"'slow' stopped by SIGTERM after {stopped_after} finished epoch(s)" in log

    # The same command again, no profile, no flag: the incomplete outputs are redone and
    # training resumes after the last finished epoch.
    rerun = workflow_dir("--cores", "2", TARGET)
    assert "IncompleteFilesException" not in rerun.stderr
    log = (work / "logs/train_model/slow.log").read_text()
    assert f"Resuming from checkpoint after epoch {stopped_after} " in log
    assert (work / "results/models/slow/model.keras").is_file()

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work}/results/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("genre-classification")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.model_name = 'slow'", run_view_type=3
    )
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED" and "test_macro_f1" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))  # each epoch once
    info = json.loads((work / "results/mlflow/runs/slow.json").read_text())
    assert info["run_id"] == run.info.run_id
