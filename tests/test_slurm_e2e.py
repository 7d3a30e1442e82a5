"""The demo workflow through a real (single-node, loopback) Slurm with --profile profiles/slurm.

scripts/slurm_cluster.sh starts munge + slurmctld + slurmd (installing slurm-wlm/munge with apt
where missing). Its partitions are `debug` (default) and `long`: the profile names none, so
every job goes to the cluster's default partition and the training job gets its GPU by --gres
alone. Checks: jobs went through sbatch (Slurm job ids in Snakemake's log and
.snakemake/slurm_logs), the training job asked for a GPU in the default partition (`scontrol
show job`: the cluster keeps finished jobs for MinJobAge=600 s), results equal a local run's, a
training job killed with `scancel` after its first checkpoint is resubmitted by Snakemake and
resumes from that checkpoint, a job no node can run (more CPUs than the node has) ends the run
within 2 minutes with a message naming the setting to lower, and a job Slurm kills for going
over its memory (the cluster enforces --mem) is resubmitted asking for mem_mb x attempt.

Apptainer cannot be installed here: the profile's `software-deployment-method: apptainer` runs
through tests/fake_apptainer/apptainer, a shim that records its argv and runs the command on the
host. So these tests see the exact `apptainer exec` command of each Slurm job (image, binds,
--nv) but do NOT run anything inside a container. With its image stand-ins (an old copy of the
package as the image's site-packages) one test shows that the jobs run the checkout's package,
changed after the image was made, and record it (issue 28).

Skips without root/apt; with GENRE_REQUIRE_SLURM=1 (CI) it fails instead.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import (
    BAD_FILES,
    BIN,
    REPO,
    SNAKEFILE,
    TINY_CLIPS,
    TINY_GENRES,
    TINY_MODEL,
    SnakemakeRunner,
    files_containing,
)

# One loopback cluster: `make test` (pytest-xdist --dist loadfile) runs this module's tests one
# after another on one worker.
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
FAKE_APPTAINER_DIR = Path(__file__).resolve().parent / "fake_apptainer"
REQUIRE = os.environ.get("GENRE_REQUIRE_SLURM") == "1"
TARGET = "results/eval/tiny/metrics.json"
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# Flags for a cluster without accounting DB / accounts, fast polling for a short test (plugin
# 2.8 waits slurm-init-seconds-before-status-checks after a round in which a job completed,
# 10 s more after each round without; see profiles/slurm/config.yaml).
SLURM_TEST_FLAGS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-keep-successful-logs",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--max-status-checks-per-second",
    "10",
    "--latency-wait",
    "10",
    "--verbose",
]
SBATCH_CALL = re.compile(r"sbatch call: (sbatch .*)")


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


def default_partition() -> str:
    names = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout
    return next(n.rstrip("*") for n in names.split() if n.endswith("*"))


def node_cpus() -> int:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True)
    return max(int(c.rstrip("+")) for c in out.stdout.split())


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
                "resources": {"gpu": 1},  # no partition: the cluster's default
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

    # 2. The training job asked for one GPU, in the cluster's default partition (the profile
    # names none; the partitions here are not called cpu/gpu).
    partition = default_partition()
    assert partition not in ("cpu", "gpu")
    train_id = by_kind["rule_train_model"][0]
    job = scontrol_job(train_id)
    print(
        f"scontrol show job {train_id}:",
        {k: job.get(k) for k in ("JobState", "Partition", "TresPerNode", "ExitCode")},
    )
    assert job["Partition"] == partition
    assert "gpu:1" in job.get("TresPerNode", "")
    assert job["JobState"] == "COMPLETED"
    assert re.search(rf"sbatch call: sbatch .*-p {partition} .*--gres=gpu:1", output)
    extract_id = by_kind["rule_extract_features"][0]
    extract_job = scontrol_job(extract_id)
    assert extract_job["Partition"] == partition
    assert "gpu" not in extract_job.get("TresPerNode", "")
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

    # 4. Each job run on the node left its benchmark record (extended format: the resources it
    # was submitted with, set against what it used in results/resources/jobs.tsv).
    for rule in ("extract_features", "train_model", "evaluate_model"):
        records = list((work / "results/benchmarks" / rule).rglob("*.tsv"))
        assert len(records) == 1, (rule, records)
        bench = pd.read_csv(records[0], sep="\t")
        assert len(bench) == 1 and bench["rule_name"][0] == rule
        assert bench["max_rss"][0] > 0 and "mem_mb" in bench["resources"][0], bench.iloc[0]

    # 5. Same results as the local run.
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
                "resources": {"gpu": 1},
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
    assert last["Partition"] == default_partition() and "gpu:1" in last.get("TresPerNode", "")

    log = (work / "logs/train_model/tiny.log").read_text()
    resumed = [int(k) for k in re.findall(r"[Rr]esuming from .*after epoch (\d+)", log)]
    print("resume lines:", resumed)
    assert resumed and resumed[-1] >= 1, log[-3000:]
    history = pd.read_csv(work / "results/models/tiny/history.csv")
    assert len(history) == model["epochs"]
    assert (work / TARGET).is_file()


def test_unsatisfiable_request_is_reported_and_ends_the_run(slurm_cluster, slurm_env, workflow_dir):
    """extraction.threads above the node's CPUs: Slurm would keep the shard job PENDING
    (reason PartitionConfig) forever. The workflow's start check (slurm executor, onstart)
    compares each job's request with the largest node of its partition and stops the run
    before submitting anything, naming the job and the setting to lower."""
    cpus = node_cpus()
    workflow_dir.overlay("unsatisfiable.yaml", {"extraction": {"threads": cpus + 2}})
    t0 = time.time()
    result = subprocess.run(
        [
            *snakemake_command(workflow_dir),
            "--profile",
            str(PROFILE),
            *SLURM_TEST_FLAGS,
            "results/split/split.tsv",
        ],
        cwd=workflow_dir.workdir,
        capture_output=True,
        text=True,
        timeout=240,
    )
    elapsed = time.time() - t0
    output = result.stdout + result.stderr
    reports = re.findall(r"The Slurm job of rule extract_features .*", output)
    print(f"run ended after {elapsed:.0f}s with exit code {result.returncode}:")
    print("\n".join(reports))
    assert result.returncode != 0, output[-3000:]
    assert reports, output[-3000:]
    assert "(wildcards feature_dir=features, shard=00000)" in reports[0]
    partition = default_partition()
    assert (
        f"it asks for {cpus + 2} CPUs, the largest node of partition {partition} has {cpus}"
        in reports[0]
    )
    assert "Lower extraction.threads. Nothing was submitted." in reports[0]
    assert not submissions(output)
    assert elapsed < 120, f"took {elapsed:.0f}s"


PENDING_SNAKEFILE = """
from pathlib import Path
from snakemake.logging import logger
from genre_classification.slurm_watch import PendingWatch


onstart:
    PendingWatch(Path.cwd(), logger.error, interval_s=2, checks=2).start()


# The first attempt fails; its retry asks for more CPUs than any node has (a request that
# grows with `attempt`, as mem_mb and runtime do in the workflow): Slurm keeps it PENDING.
rule grows:
    output: "out/grown.txt"
    resources:
        cpus_per_task=lambda wildcards, attempt: 1 if attempt == 1 else {cpus},
        mem_mb=200,
        runtime=5,
    shell: "exit 1"
"""


def test_retry_no_node_can_run_is_reported_and_cancelled(slurm_cluster, slurm_env, tmp_path):
    """slurm_watch.PendingWatch on the real cluster: the retry of a failed job asks for more
    CPUs than the node has; it is reported (job, Slurm's reason, what exceeds what) within two
    looks and cancelled, and the run ends instead of waiting."""
    cpus = node_cpus()
    work = tmp_path / "pending"
    work.mkdir()
    (work / "Snakefile").write_text(PENDING_SNAKEFILE.format(cpus=cpus + 2))
    t0 = time.time()
    result = subprocess.run(
        [str(BIN / "snakemake"), "--profile", str(PROFILE), *SLURM_TEST_FLAGS, "--retries", "1"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=240,
        env={
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(REPO),
        },
    )
    elapsed = time.time() - t0
    output = result.stdout + result.stderr
    reports = re.findall(r"Slurm job \d+ of rule grows .*", output)
    print(f"run ended after {elapsed:.0f}s with exit code {result.returncode}:")
    print("\n".join(reports))
    assert result.returncode != 0, output[-3000:]
    subs = [j for j, log in submissions(output) if "rule_grows" in log]
    assert len(subs) == 2, subs
    assert len(reports) == 1 and reports[0].startswith(f"Slurm job {subs[1]} of rule grows")
    assert "Slurm's reason is PartitionConfig" in reports[0]
    assert f"it asks for {cpus + 2} CPUs" in reports[0]
    assert "set-resources.grows" in reports[0]
    assert scontrol_job(subs[1])["JobState"] == "CANCELLED"
    assert elapsed < 120, f"took {elapsed:.0f}s"


def snakemake_command(runner: SnakemakeRunner) -> list[str]:
    """The snakemake command SnakemakeRunner runs (without its arguments), for a run that
    needs a timeout."""
    return [str(BIN / "snakemake"), "--snakefile", str(SNAKEFILE), "--configfile",
            *runner.configfiles]  # fmt: skip


OOM_SNAKEFILE = """
rule all:
    input: "out/copied.txt"

# Holds ~{hold} MB for 4 s (the cluster samples memory every second). Its first Slurm job asks
# for {first} MB (killed), the retry for 2 x {first} MB.
rule hungry:
    output: "out/hungry.txt"
    resources:
        mem_mb=lambda wildcards, attempt: {first} * attempt,
        runtime=5,
    shell:
        "python3 -c 'import time; b = b\\"x\\" * ({hold} << 20); time.sleep(4)' "
        "&& echo {{resources.mem_mb}} > {{output}}"

rule copy:
    input: "out/hungry.txt"
    output: "out/copied.txt"
    resources:
        mem_mb=500,
        runtime=5,
    shell: "cp {{input}} {{output}}"
"""


def test_oom_kill_is_retried_with_more_memory(slurm_cluster, slurm_env, tmp_path):
    """A job over its --mem is killed (cluster: cgroup limit, or RSS sampling); Snakemake
    (profile retries: 2) submits a new Slurm job asking for mem_mb x attempt, which completes,
    and the workflow finishes. The first job ran once: no retry inside its allocation
    (plugin issues 284, 348)."""
    first, hold = 700, 900
    work = tmp_path / "oom"
    work.mkdir()
    (work / "Snakefile").write_text(OOM_SNAKEFILE.format(first=first, hold=hold))
    t0 = time.time()
    result = subprocess.run(
        [str(BIN / "snakemake"), "--profile", str(PROFILE), *SLURM_TEST_FLAGS],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )
    elapsed = time.time() - t0
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    calls = [c for c in SBATCH_CALL.findall(output) if "rule_hungry" in c]
    print(f"workflow finished in {elapsed:.0f}s; sbatch calls of rule hungry:")
    print("\n".join(calls))
    assert len(calls) == 2, calls
    assert f"--mem {first} " in calls[0] and f"--mem {2 * first} " in calls[1]
    subs = [(j, Path(log)) for j, log in submissions(output) if "rule_hungry" in log]
    assert len(subs) == 2, subs
    (killed_id, killed_log), (retry_id, _) = subs
    killed = scontrol_job(killed_id)
    print(f"first job {killed_id}:", {k: killed.get(k) for k in ("JobState", "ExitCode")})
    assert killed["JobState"] in ("FAILED", "OUT_OF_MEMORY", "CANCELLED")
    slurm_log = killed_log.read_text()
    # cgroup: "srun: error: <node>: task 0: Out Of Memory"; sampling: "Exceeded job memory limit"
    kill = re.search(r"task \d+: Out Of Memory|Exceeded job memory limit", slurm_log)
    assert kill, slurm_log[-3000:]
    print(f"first job's Slurm log: {kill.group(0)!r}")
    assert "Trying to restart job" not in slurm_log  # one attempt per allocation
    assert scontrol_job(retry_id)["JobState"] == "COMPLETED"
    assert "Trying to restart job" in output
    # Nothing lost: the retry's output and the job after it.
    assert (work / "out/hungry.txt").read_text().strip() == str(2 * first)
    assert (work / "out/copied.txt").read_text().strip() == str(2 * first)


def _fingerprint(package_parent: Path, cwd: Path) -> str:
    """package_fingerprint() of the package in ``package_parent`` (a fresh interpreter)."""
    script = "from genre_classification import code_version as c; print(c.package_fingerprint())"
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(package_parent)},
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_container_jobs_run_the_checkouts_code_not_the_images(
    slurm_cluster, slurm_env, workflow_dir, tmp_path, monkeypatch
):
    """Issue 28 item 3 (choice: the image holds only the environment; jobs import the
    checkout's package, exported by workflow/rules/container.smk). The fake apptainer stands in
    for an image that still holds an OLD copy of the package in its site-packages
    (FAKE_APPTAINER_IMAGE_PYTHONPATH, after PYTHONPATH as in an image) on a host whose checkout
    does not reach the job through PYTHONPATH (FAKE_APPTAINER_HOST_PYTHONPATH=drop: an editable
    install). The checkout's package is changed after that image was made; the Slurm jobs must
    run the changed code, and record it (code fingerprint, git commit and dirty flag, the
    image's lock sha256) in metrics.json, the MLflow run and the registered model version. A
    second change, then the evaluation again: the newer code."""
    import mlflow

    from genre_classification import tracking

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
    image_site = tmp_path / "image-site"  # the image's copy: the code when it was built
    shutil.copytree(
        REPO / "genre_classification", image_site / "genre_classification", ignore=ignore
    )
    image_info = {
        "lock_sha256": "ab" * 32,  # an image built from another lock than the checkout's
        "package_version": "0.0.0-image",
        "base": "debian:bookworm",
        "code": "none: jobs import the checkout package",
    }
    (tmp_path / "image.json").write_text(json.dumps(image_info))

    checkout = tmp_path / "checkout"  # a git checkout, changed after the image was built
    shutil.copytree(REPO / "genre_classification", checkout / "genre_classification", ignore=ignore)
    shutil.copy(REPO / "requirements.lock", checkout / "requirements.lock")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "checkout"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    evaluate_py = checkout / "genre_classification/evaluation/evaluate.py"
    evaluate_py.write_text(evaluate_py.read_text() + '\nCHANGE = "after the image was built"\n')
    old_fp = _fingerprint(image_site, tmp_path)
    new_fp = _fingerprint(checkout, tmp_path)
    assert old_fp != new_fp

    monkeypatch.setenv("PYTHONPATH", str(checkout))  # what the workflow (Snakemake) imports
    monkeypatch.setenv("FAKE_APPTAINER_HOST_PYTHONPATH", "drop")
    monkeypatch.setenv("FAKE_APPTAINER_IMAGE_PYTHONPATH", str(image_site))
    monkeypatch.setenv(
        "FAKE_APPTAINER_IMAGE_ENV",
        json.dumps({"GENRE_CLASSIFICATION_IMAGE_INFO": str(tmp_path / "image.json")}),
    )
    workflow_dir.overlay(
        "training.yaml",
        {
            "training": {"run": ["tiny"], "models": {"tiny": TINY_MODEL}, "resources": {"gpu": 1}},
            "extraction": {"threads": 2},
        },
    )
    work = workflow_dir.workdir
    t0 = time.time()
    result = workflow_dir("--profile", str(PROFILE), *SLURM_TEST_FLAGS, TARGET)
    output = result.stdout + result.stderr
    subs = {Path(log).relative_to(work / ".snakemake/slurm_logs").parts[0]: jid
            for jid, log in submissions(output)}  # fmt: skip
    assert {"rule_train_model", "rule_evaluate_model"} <= set(subs), output[-3000:]

    # The Slurm jobs' containers got the exported copy of the checkout on PYTHONPATH.
    calls = [c for c in fake_apptainer_calls(slurm_env) if c["argv"][:1] == ["exec"]]
    job_calls = [c for c in calls if c["slurm_job_id"] in subs.values()]
    assert job_calls, calls
    exported = {c["apptainerenv"].get("APPTAINERENV_PYTHONPATH") for c in job_calls}
    assert len(exported) == 1 and None not in exported, exported
    code_dir = Path(exported.pop())
    assert code_dir.parent == work / ".snakemake/genre-classification-code"
    assert (
        "after the image was built"
        in (code_dir / "genre_classification/evaluation/evaluate.py").read_text()
    )

    metrics = json.loads((work / TARGET).read_text())
    code = metrics["code"]
    print("metrics.json code:", code, "image:", metrics.get("image"))
    assert code["fingerprint"] == new_fp != old_fp  # the changed checkout's code ran
    assert code["git_commit"] == head and code["git_dirty"] is True
    assert code["lock_sha256"] == image_info["lock_sha256"]  # inside the image: the image's
    lock_sha = hashlib.sha256((checkout / "requirements.lock").read_bytes()).hexdigest()
    assert code["checkout_lock_sha256"] == lock_sha
    assert metrics["image"] == image_info
    assert metrics["git_commit"] == f"{head}-dirty"

    # The MLflow run (tags set by the training job in its container) and the model version.
    info = tracking.read_run_info(work / "results/mlflow/runs/tiny.json")
    monkeypatch.chdir(work)
    client = mlflow.MlflowClient(tracking.run_tracking_uri(info))
    tags = client.get_run(info["run_id"]).data.tags
    assert tags["code.fingerprint"] == new_fp
    assert tags["code.git_commit"] == head and tags["code.git_dirty"] == "true"
    assert tags["code.lock_sha256"] == image_info["lock_sha256"]
    assert tags["image.package_version"] == image_info["package_version"]
    versions = client.search_model_versions("name = 'genre-classifier'")
    assert versions
    version = max(versions, key=lambda v: int(v.version))
    assert version.tags["code.fingerprint"] == new_fp
    assert version.tags["code.git_dirty"] == "true"
    assert version.tags["code.lock_sha256"] == image_info["lock_sha256"]
    assert new_fp in (version.description or ""), version.description

    # Another change to the checkout; the evaluation again (forced: its inputs are unchanged).
    evaluate_py.write_text(evaluate_py.read_text() + 'CHANGE_2 = "and again"\n')
    newer_fp = _fingerprint(checkout, tmp_path)
    workflow_dir(
        "--profile", str(PROFILE), *SLURM_TEST_FLAGS, "--forcerun", "evaluate_model", TARGET
    )
    assert json.loads((work / TARGET).read_text())["code"]["fingerprint"] == newer_fp != new_fp
    print(f"container code test: {time.time() - t0:.0f}s")


def test_lab_stack_through_slurm(slurm_cluster, slurm_env, workflow_dir, lab_stack, monkeypatch):
    """The lab's infrastructure from Slurm jobs: audio fetched from the S3 DVC remote, the
    training and evaluation jobs (through sbatch) log to the MLflow server (PostgreSQL
    metadata, S3 artifacts through the server: the jobs need no S3 credentials for MLflow) and
    the evaluation job promotes the champion there; no credential lands in a file."""
    import mlflow

    lab_stack.serve_dvc_data(workflow_dir, monkeypatch)
    workflow_dir.overlay(
        "lab.yaml",
        {
            "training": {
                "run": ["tiny"],
                "models": {"tiny": TINY_MODEL},
                "resources": {"gpu": 1},
                "tracking_uri": lab_stack.tracking_uri,
                "experiment": "lab-slurm",
            },
            "extraction": {"threads": 2},
            # a predict set of the data repository's DVC target: its audio from S3 too
            "predict": {"sets": {"archive": {"target": "genres"}}},
        },
    )
    predictions = "results/predict/archive/predictions.csv"
    result = workflow_dir("--profile", str(PROFILE), *SLURM_TEST_FLAGS, TARGET, predictions)
    output = result.stdout + result.stderr
    work = workflow_dir.workdir
    kinds = {
        Path(log).relative_to(work / ".snakemake" / "slurm_logs").parts[0]
        for _, log in submissions(output)
    }
    assert {"rule_train_model", "rule_evaluate_model", "rule_predict_set"} <= kinds, kinds
    rows = list(csv.DictReader(io.StringIO((work / predictions).read_text())))
    assert len(rows) == len(TINY_GENRES) * TINY_CLIPS + len(BAD_FILES), len(rows)
    assert sum(row["genre"] in TINY_GENRES for row in rows) == len(TINY_GENRES) * TINY_CLIPS

    info = json.loads((work / "results/mlflow/runs/tiny.json").read_text())
    assert info["tracking_uri"] == lab_stack.tracking_uri
    client = mlflow.MlflowClient(tracking_uri=lab_stack.tracking_uri)
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED" and "test_macro_f1" in run.data.metrics
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    champion = client.get_model_version_by_alias("genre-classifier", "champion")
    assert champion.run_id == info["run_id"]
    bucket = lab_stack.exports["GENRE_LAB_DVC_REMOTE"].removeprefix("s3://").split("/")[0]
    pages = lab_stack.s3_client().get_paginator("list_objects_v2")
    keys = [
        item["Key"]
        for page in pages.paginate(Bucket=bucket, Prefix="mlflow/")
        for item in page.get("Contents", [])
    ]
    assert any(f"{info['run_id']}/artifacts/evaluation/metrics.json" in k for k in keys), keys
    for name, secret in lab_stack.secrets().items():
        for where in ("results", "logs", ".snakemake"):
            assert files_containing(work / where, secret) == [], (name, where)
        assert secret not in output, name
