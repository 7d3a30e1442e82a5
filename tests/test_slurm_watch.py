"""genre_classification.slurm_watch on Slurm's own output (captured from the loopback cluster of
scripts/slurm_cluster.sh, Slurm 22.05). The same code on the live cluster:
tests/test_slurm_e2e.py (unsatisfiable request, retry that no node can run)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from genre_classification import slurm_watch as sw

PENDING_JOB = (
    "JobId=3 JobName=wrap UserId=root(0) GroupId=root(0) JobState=PENDING Reason=PartitionConfig "
    "Dependency=(null) TimeLimit=00:30:00 Partition=debug NumNodes=1 NumCPUs=4 NumTasks=1 "
    "CPUs/Task=4 TRES=cpu=4,mem=3000M,node=1,billing=4 MinCPUsNode=4 MinMemoryNode=3000M "
    "WorkDir=/work/run Comment=rule_extract_features_wildcards_features_00000  "
    "StdOut=/dev/null TresPerNode=gres:gpu:1 "
)
PARTITION = (
    "PartitionName=debug AllowGroups=ALL Default=YES MaxNodes=UNLIMITED MaxTime=UNLIMITED "
    "MaxCPUsPerNode=UNLIMITED Nodes=vm State=UP TotalCPUs=2 TotalNodes=1 "
    "DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=21735M,node=1,billing=2"
)


class FakeSlurm:
    """Answers the commands slurm_watch runs with recorded output; records every call."""

    def __init__(self, squeue: str, partition: str = PARTITION, nodes="vm|2|21735|gpu:1\n"):
        self.outputs = {
            "squeue": squeue,
            "sinfo -h -o %P": "debug*\nlong\n",
            "sinfo": nodes,
            "scontrol show partition": partition,
            "scontrol show job": PENDING_JOB,
            "scancel": "",
        }
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> str:
        self.calls.append(argv)
        line = " ".join(argv)
        key = max((k for k in self.outputs if line.startswith(k)), key=len)
        return self.outputs[key]


def test_request_from_scontrol():
    req = sw.Request.from_scontrol(PENDING_JOB)
    assert (req.job_id, req.rule, req.wildcards) == ("3", "extract_features", "features_00000")
    assert (req.partition, req.reason, req.cpus, req.mem_mb, req.gpus) == (
        "debug",
        "PartitionConfig",
        4,
        3000,
        1,
    )
    assert req.time_min == 30


@pytest.mark.parametrize(
    ("value", "expected"),
    [("gpu:1", 1), ("gpu:a100:4(S:0-1)", 4), ("gres:gpu:2", 2), ("gres/gpu=3", 3), ("(null)", 0)],
)
def test_gpu_count(value, expected):
    assert sw.gpu_count(value) == expected


def test_units():
    assert sw.mem_mb("4G") == 4096 and sw.mem_mb("3000M") == 3000 and sw.mem_mb("512") == 512
    assert sw.minutes("1-02:00:00") == 26 * 60 and sw.minutes("45") == 45
    assert sw.minutes("UNLIMITED") is None


def test_partition_limits_lower_the_node_capacity():
    limited = PARTITION.replace("MaxCPUsPerNode=UNLIMITED", "MaxCPUsPerNode=1").replace(
        "MaxTime=UNLIMITED", "MaxTime=01:00:00"
    )
    cap = sw.partition_capacity("debug", FakeSlurm("", partition=limited))
    assert (cap.cpus, cap.mem_mb, cap.gpus, cap.max_time_min) == (1, 21735, 1, 60)


def test_watch_reports_and_cancels_after_n_checks_and_retries_at_first_sight(tmp_path):
    line = f"3|PartitionConfig|rule_extract_features_wildcards_features_00000|{tmp_path}\n"
    other_dir = "4|PartitionConfig|rule_extract_features_wildcards_x|/elsewhere\n"
    slurm = FakeSlurm(line + other_dir)
    logged: list[str] = []
    watch = sw.PendingWatch(tmp_path, logged.append, checks=2, run=slurm)
    assert watch.check() == []  # first look: not yet
    [text] = watch.check()
    assert text.startswith("Slurm job 3 of rule extract_features (wildcards features_00000)")
    assert "Slurm's reason is PartitionConfig" in text
    assert "it asks for 4 CPUs, the largest node of partition debug has 2" in text
    assert "Lower extraction.threads." in text
    assert logged == [text]
    assert ["scancel", "3"] in slurm.calls and ["scancel", "4"] not in slurm.calls
    # The retry (same rule and wildcards, a new job id) is cancelled at its first sighting.
    slurm.outputs["squeue"] = line.replace("3|", "9|", 1)
    slurm.outputs["scontrol show job"] = PENDING_JOB.replace("JobId=3", "JobId=9")
    [retry] = watch.check()
    assert retry.startswith("(retry) Slurm job 9") and ["scancel", "9"] in slurm.calls


def test_watch_leaves_jobs_that_only_wait_for_resources(tmp_path):
    """Reason Resources with a request that fits a node: the job waits for others to finish."""
    fits = PENDING_JOB.replace("Reason=PartitionConfig", "Reason=Resources").replace(
        "cpu=4,", "cpu=2,"
    )
    slurm = FakeSlurm(f"3|Resources|rule_train_model_wildcards_cnn|{tmp_path}\n")
    slurm.outputs["scontrol show job"] = fits
    watch = sw.PendingWatch(tmp_path, print, checks=1, run=slurm)
    assert watch.check() == [] and watch.check() == []
    assert not any(c[0] == "scancel" for c in slurm.calls)


def test_permanent_reason_without_a_visible_excess_is_reported(tmp_path):
    qos = PENDING_JOB.replace("Reason=PartitionConfig", "Reason=QOSMaxCpuPerJobLimit").replace(
        "cpu=4,", "cpu=1,"
    )
    slurm = FakeSlurm(f"3|QOSMaxCpuPerJobLimit|rule_train_model_wildcards_cnn|{tmp_path}\n")
    slurm.outputs["scontrol show job"] = qos.replace("features_00000", "cnn")
    [text] = sw.PendingWatch(tmp_path, print, checks=1, run=slurm).check()
    assert "QOSMaxCpuPerJobLimit" in text and "Slurm will not start it as asked" in text


def job(rule, threads, **resources):
    return SimpleNamespace(
        rule=SimpleNamespace(name=rule),
        threads=threads,
        wildcards_dict={"shard": "00000"},
        resources=resources,
    )


def test_unfit_jobs_one_message_per_rule():
    jobs = [
        job("extract_features", 4, mem_mb=2500, runtime=10),
        job("extract_features", 4, mem_mb=2500, runtime=10),
        job("train_model", 2, mem_mb=30000, runtime=60, gres="gpu:2", slurm_partition="long"),
        job("split_tracks", 1, mem_mb=1000, runtime=5),
        job("evaluate_model", 2, mem_mb="<TBD>"),  # not known yet: skipped
    ]
    requests = [r for r in map(sw.request_of_job, jobs) if r is not None]
    assert len(requests) == 4
    slurm = FakeSlurm("")
    extract, train = sw.unfit_jobs(requests, run=slurm)
    assert extract.startswith(
        "The Slurm job of rule extract_features (wildcards shard=00000) (and 1 more of its jobs)"
    )
    assert "Lower extraction.threads." in extract
    assert "it asks for 30000 MB" in train and "it asks for 2 GPU(s)" in train
    assert "partition long" in train
    assert "training.resources.mem_mb" in train and "training.resources.gpu" in train
    assert sw.unfit_jobs([sw.request_of_job(jobs[3])], run=slurm) == []
