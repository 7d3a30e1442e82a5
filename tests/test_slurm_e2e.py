"""The demo workflow through a real (single-node, loopback) Slurm with --profile profiles/slurm.

scripts/slurm_cluster.sh starts munge + slurmctld + slurmd (installing slurm-wlm/munge with apt
where missing). Checks: jobs went through sbatch (Slurm job ids in Snakemake's log and
.snakemake/slurm_logs), the training job asked for the gpu partition and a GPU (`scontrol show
job`: the cluster keeps finished jobs for MinJobAge=600 s), results equal a local run's, and a
training job killed with `scancel` after its first checkpoint is resubmitted by Snakemake and
resumes from that checkpoint.

Apptainer cannot be installed here: the profile's `software-deployment-method: apptainer` runs
through tests/fake_apptainer/apptainer, a shim that records its argv and runs the command on the
host. So these tests see the exact `apptainer exec` command of each Slurm job (image, binds,
--nv) but do NOT run anything inside a container.

Skips without root/apt; with GENRE_REQUIRE_SLURM=1 (CI) it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, TINY_MODEL, SnakemakeRunner

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
FAKE_APPTAINER_DIR = Path(__file__).resolve().parent / "fake_apptainer"
REQUIRE = os.environ.get("GENRE_REQUIRE_SLURM") == "1"
TARGET = "results/eval/tiny/metrics.json"
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# Flags for a cluster without accounting DB / accounts, fast polling for a short test.
SLURM_TEST_FLAGS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-keep-successful-logs",
    "--seconds-between-status-checks",
    "2",
    "--max-status-checks-per-second",
    "10",
    "--latency-wait",
    "10",
    "--verbose",
]


def _unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"GENRE_REQUIRE_SLURM=1 but the Slurm test cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start the loopback test cluster for the session (stop it afterwards if we started it)."""
    if os.geteuid() != 0:
        _unavailable("needs root (installs slurm-wlm/munge, starts munged/slurmctld/slurmd)")
    if not shutil.which("sbatch") and not shutil.which("apt-get"):
        _unavailable("slurm-wlm is not installed and apt-get is not available")
    state_dir = os.environ.get("GENRE_SLURM_STATE_DIR", "/tmp/genre-slurm")
    was_running = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0
    t0 = time.time()
    start = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if start.returncode != 0:
        msg = f"scripts/slurm_cluster.sh start failed:\n{start.stdout}\n{start.stderr}"
        if REQUIRE:
            pytest.fail(msg)
        pytest.skip(msg)
    conf = f"{state_dir}/slurm.conf"
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    print(f"slurm cluster up in {time.time() - t0:.1f}s (SLURM_CONF={conf})")
    yield {"conf": conf, "state_dir": state_dir}
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
    if not was_running:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=120)


def scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
    ).stdout
    fields = {}
    for token in out.split():
        if "=" in token:
            key, value = token.split("=", 1)
            fields[key] = value
    return fields


def submissions(output: str) -> list[tuple[str, str]]:
    """(slurm job id, slurm log path) per sbatch submission in Snakemake's log."""
    return SUBMITTED.findall(output)


def fake_apptainer_calls(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def clone_runner(src: SnakemakeRunner, workdir: Path) -> SnakemakeRunner:
    """A second working directory with the same config files (same data repo: the config's
    relative data path is linked to the first one's)."""
    shutil.copytree(src.workdir / "config", workdir / "config")
    data = src.data["repo"].parent
    (workdir / data.relative_to(src.workdir)).symlink_to(data, target_is_directory=True)
    other = SnakemakeRunner(workdir, src.data)
    other.configfiles = list(src.configfiles)
    return other


@pytest.fixture
def slurm_env(monkeypatch, tmp_path):
    """PATH with the fake apptainer; its argv log."""
    log = tmp_path / "fake_apptainer.jsonl"
    monkeypatch.setenv("PATH", f"{FAKE_APPTAINER_DIR}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APPTAINER_LOG", str(log))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    return log


def test_demo_workflow_through_slurm_equals_local(slurm_cluster, slurm_env, workflow_dir, tmp_path):
    t0 = time.time()
    workflow_dir.overlay(
        "training.yaml",
        {
            "training": {
                "run": ["tiny"],
                "models": {"tiny": TINY_MODEL},
                "resources": {"partition": "gpu", "gpu": 1},
            },
            # The loopback node has 2 CPUs: a job asking for more would never start.
            "extraction": {"threads": 2},
        },
    )
    local = clone_runner(workflow_dir, tmp_path / "local")
    local("--cores", "2", TARGET)

    result = workflow_dir("--profile", str(PROFILE), *SLURM_TEST_FLAGS, TARGET)
    output = result.stdout + result.stderr
    work = workflow_dir.workdir
    elapsed = time.time() - t0

    # 1. Jobs went through sbatch: Slurm job ids in Snakemake's log, logs in .snakemake/slurm_logs.
    subs = submissions(output)
    assert subs, f"no sbatch submissions in Snakemake's log:\n{output[-3000:]}"
    by_kind: dict[str, list[str]] = {}
    for job_id, log in subs:
        # .snakemake/slurm_logs/<rule_NAME | group_GROUP_RULES>/<wildcards>/<id>.log
        kind = Path(log).relative_to(work / ".snakemake" / "slurm_logs").parts[0]
        by_kind.setdefault(kind, []).append(job_id)
        assert Path(log).is_file(), f"missing Slurm log {log}"
    print("sbatch submissions by rule/group:", by_kind)
    assert "rule_train_model" in by_kind and "rule_evaluate_model" in by_kind
    # The 18 files of the tiny data set are one shard: one extraction job, whose one process
    # extracted (or rejected) every file; the DVC pull ran on the submit host (a localrule).
    assert len(by_kind.get("rule_extract_features", [])) == 1, by_kind
    assert "rule_fetch_audio" not in by_kind
    shard_log = (work / "logs/extract_features/features/00000.log").read_text()
    assert len(re.findall(r"shard of 18 files in process \d+, 2 worker", shard_log)) == 1
    record = pd.read_csv(work / "results/features/.shards/00000.tsv", sep="\t")
    assert sorted(record["status"].value_counts().items()) == [("extracted", 15), ("rejected", 3)]

    # 2. The training job asked for the gpu partition and one GPU.
    train_id = by_kind["rule_train_model"][0]
    job = scontrol_job(train_id)
    print(
        f"scontrol show job {train_id}:",
        {k: job.get(k) for k in ("JobState", "Partition", "TresPerNode", "ExitCode")},
    )
    assert job["Partition"] == "gpu"
    assert "gpu:1" in job.get("TresPerNode", "")
    assert job["JobState"] == "COMPLETED"
    assert re.search(r"sbatch call: sbatch .*-p gpu .*--gres=gpu:1", output)
    extract_id = by_kind["rule_extract_features"][0]
    extract_job = scontrol_job(extract_id)
    assert extract_job["Partition"] == "cpu" and "gpu" not in extract_job.get("TresPerNode", "")
    assert extract_job["NumCPUs"] == "2"  # the job's threads

    # 3. Container wiring inside the Slurm job (fake apptainer, see module docstring).
    calls = [c for c in fake_apptainer_calls(slurm_env) if c["argv"][:1] == ["exec"]]
    train_calls = [c for c in calls if c["slurm_job_id"] == train_id]
    assert train_calls, f"training job {train_id} did not run through apptainer: {calls}"
    argv = train_calls[0]["argv"]
    assert "--nv" in argv
    assert any(a.endswith("containers/genre-classification.sif") for a in argv), argv
    assert "--bind" in argv and "/tmp" in argv
    assert any(c["slurm_job_id"] == extract_id for c in calls), "extraction not in the container"

    # 4. Same results as the local run.
    lw = local.workdir
    for rel in ("results/data/manifest.tsv", "results/split/split.tsv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(work / rel, sep="\t"), pd.read_csv(lw / rel, sep="\t"), check_like=True
        )
    features = sorted((lw / "results/features").rglob("*.h5"))
    assert features
    for path in features:
        other = work / path.relative_to(lw)
        with h5py.File(path) as a, h5py.File(other) as b:
            np.testing.assert_array_equal(a["logmel"][()], b["logmel"][()])
    m_local = json.loads((lw / TARGET).read_text())
    m_slurm = json.loads((work / TARGET).read_text())
    assert m_slurm["accuracy"] == pytest.approx(m_local["accuracy"], abs=1e-6)
    assert m_slurm["macro_f1"] == pytest.approx(m_local["macro_f1"], abs=1e-6)
    preds_local = pd.read_csv(lw / "results/eval/tiny/predictions.csv")
    preds_slurm = pd.read_csv(work / "results/eval/tiny/predictions.csv")
    assert (preds_local["predicted"] == preds_slurm["predicted"]).all()
    print(f"slurm e2e (local + slurm run) took {elapsed:.0f}s")


def test_scancel_mid_training_is_retried_and_resumes(slurm_cluster, slurm_env, workflow_dir):
    """scancel the training job after its first checkpoint: Snakemake resubmits it (retries),
    and the new attempt resumes from the checkpoint (epoch k > 0)."""
    model = {**TINY_MODEL, "epochs": 150, "early_stopping": {"patience": 1000}}
    model["early_stopping"]["restore_best_weights"] = False
    workflow_dir.overlay(
        "training.yaml",
        {
            "training": {
                "run": ["tiny"],
                "models": {"tiny": model},
                "retries": 1,
                "resources": {"partition": "gpu", "gpu": 1},
            },
            "extraction": {"threads": 2},  # the loopback node has 2 CPUs
        },
    )
    work = workflow_dir.workdir
    # Features first, so that the watcher only has the training job to look at.
    workflow_dir("--profile", str(PROFILE), *SLURM_TEST_FLAGS, "results/split/split.tsv")

    state = work / "results/models/tiny/checkpoints/state.json"
    cancelled: dict[str, object] = {}

    def watch():
        deadline = time.time() + 600
        while time.time() < deadline and not cancelled:
            if state.exists():
                try:
                    done = json.loads(state.read_text())["epochs_done"]
                except (ValueError, KeyError):
                    done = 0
                if done >= 1:
                    jobs = subprocess.run(
                        ["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"],
                        capture_output=True,
                        text=True,
                    ).stdout.split("\n")
                    ids = [j.split()[0] for j in jobs if "rule_train_model" in j]
                    if ids:
                        subprocess.run(["scancel", ids[0]], check=True)
                        cancelled.update(job_id=ids[0], epochs_done=done, at=time.time())
                        return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = workflow_dir("--profile", str(PROFILE), *SLURM_TEST_FLAGS, TARGET)
    watcher.join(timeout=5)
    output = result.stdout + result.stderr

    assert cancelled, f"training job was never cancelled (finished too fast?):\n{output[-3000:]}"
    print("scancel:", cancelled)
    train_subs = [jid for jid, log in submissions(output) if "rule_train_model" in log]
    assert len(train_subs) >= 2, f"training was not resubmitted: {train_subs}"
    assert train_subs[0] == cancelled["job_id"]
    first = scontrol_job(train_subs[0])
    last = scontrol_job(train_subs[-1])
    print("first attempt:", first.get("JobState"), "retry:", train_subs[-1], last.get("JobState"))
    assert first["JobState"] == "CANCELLED"
    assert last["JobState"] == "COMPLETED"
    assert last["Partition"] == "gpu" and "gpu:1" in last.get("TresPerNode", "")

    log = (work / "logs/train_model/tiny.log").read_text()
    resumed = [int(k) for k in re.findall(r"[Rr]esuming from .*after epoch (\d+)", log)]
    print("resume lines:", resumed)
    assert resumed and resumed[-1] >= 1, log[-3000:]
    history = pd.read_csv(work / "results/models/tiny/history.csv")
    assert len(history) == model["epochs"]
    assert (work / TARGET).is_file()
