"""Report (and cancel) Slurm jobs of this workflow that Slurm can never start.

Two checks, both used only with the slurm executor (`rules/common.smk`, onstart):

* before anything is submitted, `unfit_jobs` compares every job's first request (threads,
  mem_mb, GPUs, runtime; partition: its `slurm_partition` or the cluster's default) with what
  the largest node of that partition offers; the run stops at once naming the setting to lower;
* while the run goes on, `PendingWatch` catches what the first check cannot see: a retry
  whose request grew past the nodes (mem_mb x attempt), a QOS or association limit.

snakemake-executor-plugin-slurm 2.8 treats every PENDING job as "still running": a job whose
request no node of its partition can meet (e.g. `extraction.threads: 4` on 2-CPU nodes, which
Slurm keeps PENDING with reason `PartitionConfig`) makes the run wait without a word. When the
workflow runs with the slurm executor, `rules/common.smk` starts a `PendingWatch` thread in the
main Snakemake process (onstart). Every `interval_s` it lists this working directory's pending
jobs (`squeue --me`); a job is unsatisfiable when its request exceeds what the largest node of
its partition has (`sinfo`, `scontrol show partition`), or when Slurm's reason is one that
waiting never clears (`PartitionConfig`, `PartitionTimeLimit`, `QOSMax...PerJob...`, ...).
Seen so `checks` times in a row, it is logged (Slurm job id, rule and wildcards, Slurm's reason,
what exceeds what, the config setting to lower) and cancelled, so that Snakemake records the
job as failed instead of waiting forever. A retry of the same job (same rule and wildcards)
is cancelled at first sight. The Slurm commands are injected (`run`) for the unit tests.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Reasons that waiting never clears: the job breaks a partition, QOS or association limit.
PERMANENT_REASON = re.compile(
    r"^(PartitionConfig|PartitionNodeLimit|PartitionTimeLimit|BadConstraints|InvalidAccount"
    r"|InvalidQOS|MaxMemPerLimit|(QOS|Assoc)Max\w*Per(Job|Node)\w*)$"
)

# The config setting behind each Slurm request of the workflow's rules (the rest of a rule's
# resources are fixed in the rule or come from the profile).
_EXTRACTION = {
    "cpus": "extraction.threads",
    "mem": "extraction.mem_mb_per_thread (or extraction.threads)",
    "time": "extraction.runtime_s_per_file / extraction.files_per_shard",
}
_TRAINING = {
    "cpus": "training.threads",
    "mem": "training.resources.mem_mb (or the model's resources.mem_mb)",
    "gpus": "training.resources.gpu / gres (or the model's resources)",
    "time": "training.resources.runtime (or the model's resources.runtime)",
    "partition": "training.resources.partition",
}
SETTINGS = {
    "extract_features": _EXTRACTION,
    "predict_extract_features": _EXTRACTION,
    "reference_track_table": {"cpus": "extraction.threads"},
    "train_model": _TRAINING,
    "evaluate_model": {"cpus": "training.threads"},
    "predict_set": {"cpus": "training.threads"},
}
PROFILE_HINT = "the rule's resources (set-resources.{rule} / default-resources in the profile)"

Runner = Callable[[list[str]], str]


def run_command(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def parse_fields(line: str) -> dict[str, str]:
    """`scontrol show <x> -o` output: KEY=VALUE tokens (values have no spaces with -o)."""
    fields = {}
    for token in line.split():
        if "=" in token:
            key, value = token.split("=", 1)
            fields[key] = value
    return fields


def mem_mb(value: str) -> int:
    """Slurm memory (1000M, 4G, 2T, 512K, or plain MB) in MB."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", value.strip())
    if not match:
        return 0
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[match.group(2)]
    return int(float(match.group(1)) * factor)


def minutes(value: str) -> float | None:
    """Slurm time ([days-]hh:mm:ss, mm:ss, minutes) in minutes; None for UNLIMITED/INFINITE."""
    if not value or value.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    days, _, clock = value.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        total = parts[0]
    elif len(parts) == 2:
        total = parts[0] + parts[1] / 60
    else:
        total = parts[0] * 60 + parts[1] + parts[2] / 60
    return total + (int(days) * 24 * 60 if days else 0)


def gpu_count(gres: str) -> int:
    """GPUs in a gres/TRES string: gpu:2, gpu:a100:4(S:0-1), gres:gpu:1, gres/gpu=2."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres or ""):
        item = re.sub(r"\(.*\)", "", item.strip())
        match = re.match(r"^(?:gres[:/])?gpu(?::[^:=]+)?[:=](\d+)$", item)
        if match:
            total += int(match.group(1))
        elif re.fullmatch(r"(?:gres[:/])?gpu", item):
            total += 1
    return total


@dataclass
class Request:
    """What a pending job asks Slurm for (`scontrol show job -o`)."""

    job_id: str
    rule: str
    wildcards: str
    partition: str
    reason: str
    cpus: int
    mem_mb: int
    gpus: int
    time_min: float | None

    @classmethod
    def from_scontrol(cls, line: str) -> Request:
        f = parse_fields(line)
        # cpu=4,mem=4000M,node=1,billing=4,gres/gpu=1 (Slurm 22.05 names it TRES while pending)
        requested = f.get("ReqTRES") or f.get("TRES", "")
        tres = dict(kv.split("=", 1) for kv in requested.split(",") if "=" in kv)
        cpus = int(tres.get("cpu") or f.get("NumCPUs", "1").split("-")[0])
        mem = mem_mb(tres["mem"]) if "mem" in tres else mem_mb(f.get("MinMemoryNode", "0"))
        gpus = int(tres.get("gres/gpu", 0)) or gpu_count(f.get("TresPerNode", ""))
        rule, wildcards = split_comment(f.get("Comment", ""))
        return cls(
            job_id=f.get("JobId", "?"),
            rule=rule,
            wildcards=wildcards,
            partition=f.get("Partition", ""),
            reason=f.get("Reason", ""),
            cpus=cpus,
            mem_mb=mem,
            gpus=gpus,
            time_min=minutes(f.get("TimeLimit", "")),
        )


def request_of_job(job) -> Request | None:
    """A Snakemake job's first Slurm request as the plugin builds it (--cpus-per-task: the
    cpus_per_task resource, else the threads; --mem / --mem-per-cpu; --gres / --gpus; -t);
    None where a resource is not known before the job runs (or cannot be evaluated yet: the
    job's own submission reports that)."""
    try:
        res = job.resources
    except Exception:  # noqa: BLE001 - any error of a rule's resource function
        return None
    values = {k: res.get(k) for k in ("cpus_per_task", "mem_mb", "mem_mb_per_cpu", "runtime")}
    if not all(v is None or isinstance(v, (int, float)) for v in values.values()):
        return None
    cpus = int(values["cpus_per_task"] or job.threads or 1)
    mem = values["mem_mb"] or (values["mem_mb_per_cpu"] or 0) * cpus
    gpus = int(res.get("gpu") or 0) or gpu_count(str(res.get("gres") or ""))
    return Request(
        job_id="-",
        rule=job.rule.name,
        wildcards=", ".join(f"{k}={v}" for k, v in dict(job.wildcards_dict).items()),
        partition=str(res.get("slurm_partition") or ""),
        reason="",
        cpus=cpus,
        mem_mb=int(mem),
        gpus=gpus,
        time_min=values["runtime"],
    )


def split_comment(comment: str) -> tuple[str, str]:
    """The plugin's job comment `rule_<rule>[_wildcards_<w>]` (or group_...) -> (rule, w)."""
    body = re.sub(r"^(rule|group)_", "", comment)
    rule, _, wildcards = body.partition("_wildcards_")
    return rule, wildcards


@dataclass
class Capacity:
    """The most any one node of a partition offers (hardware and partition limits)."""

    partition: str
    cpus: int = 0
    mem_mb: int = 0
    gpus: int = 0
    max_time_min: float | None = None


def partition_capacity(partition: str, run: Runner = run_command) -> Capacity:
    cap = Capacity(partition)
    nodes = run(["sinfo", "-h", "-N", "-p", partition, "-o", "%N|%c|%m|%G"])
    for line in nodes.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            cap.cpus = max(cap.cpus, int(parts[1].rstrip("+") or 0))
            cap.mem_mb = max(cap.mem_mb, int(parts[2].rstrip("+") or 0))
            cap.gpus = max(cap.gpus, gpu_count(parts[3]))
    limits = parse_fields(run(["scontrol", "show", "partition", "-o", partition]))
    if limits.get("MaxCPUsPerNode", "UNLIMITED").isdigit():
        cap.cpus = min(cap.cpus, int(limits["MaxCPUsPerNode"]))
    if limits.get("MaxMemPerNode", "UNLIMITED").isdigit():
        cap.mem_mb = min(cap.mem_mb, int(limits["MaxMemPerNode"]))
    cap.max_time_min = minutes(limits.get("MaxTime", ""))
    return cap


def excesses(req: Request, cap: Capacity) -> list[tuple[str, str]]:
    """(resource, sentence) for each request above what the partition's largest node offers."""
    out = []
    where = f"the largest node of partition {cap.partition}"
    if req.cpus > cap.cpus:
        out.append(("cpus", f"it asks for {req.cpus} CPUs, {where} has {cap.cpus}"))
    if req.mem_mb > cap.mem_mb:
        out.append(("mem", f"it asks for {req.mem_mb} MB, {where} has {cap.mem_mb} MB"))
    if req.gpus > cap.gpus:
        out.append(("gpus", f"it asks for {req.gpus} GPU(s), {where} has {cap.gpus}"))
    if req.time_min and cap.max_time_min is not None and req.time_min > cap.max_time_min:
        out.append(
            (
                "time",
                f"it asks for {req.time_min:.0f} min, partition {cap.partition} allows "
                f"{cap.max_time_min:.0f} min",
            )
        )
    return out


def message(req: Request, found: list[tuple[str, str]]) -> str:
    settings = SETTINGS.get(req.rule, {})
    what = "; ".join(sentence for _, sentence in found) or "Slurm will not start it as asked"
    lower = [settings.get(key, PROFILE_HINT.format(rule=req.rule)) for key, _ in found]
    if not lower:
        lower = [
            "the job's request or its partition/account/QOS "
            f"({', '.join(sorted(set(settings.values()))) or PROFILE_HINT.format(rule=req.rule)})"
        ]
    job = f"rule {req.rule}" + (f" (wildcards {req.wildcards})" if req.wildcards else "")
    return (
        f"Slurm job {req.job_id} of {job} can never start: Slurm's reason is "
        f"{req.reason or '?'}; {what}. Lower {' and '.join(dict.fromkeys(lower))}. "
        "Cancelling it (scancel) so the run does not wait forever."
    )


def default_partition(run: Runner = run_command) -> str:
    """The partition sinfo marks with `*` ("" if none)."""
    names = run(["sinfo", "-h", "-o", "%P"]).split()
    return next((name.rstrip("*") for name in names if name.endswith("*")), "")


def unfit_jobs(requests: list[Request], run: Runner = run_command) -> list[str]:
    """Messages for the requests no node of their partition can meet (one per rule, with the
    number of its other jobs that do not fit either); [] if all fit."""
    capacities: dict[str, Capacity] = {}
    default = None
    by_rule: dict[str, list[tuple[Request, list]]] = {}
    for req in requests:
        if not req.partition:
            default = default_partition(run) if default is None else default
            req.partition = default
        if not req.partition:
            continue
        if req.partition not in capacities:
            capacities[req.partition] = partition_capacity(req.partition, run)
        found = excesses(req, capacities[req.partition])
        if found:
            by_rule.setdefault(req.rule, []).append((req, found))
    messages = []
    for rule, unfit in by_rule.items():
        req, found = unfit[0]
        job = f"rule {rule}" + (f" (wildcards {req.wildcards})" if req.wildcards else "")
        others = f" (and {len(unfit) - 1} more of its jobs)" if len(unfit) > 1 else ""
        lower = [SETTINGS.get(rule, {}).get(k, PROFILE_HINT.format(rule=rule)) for k, _ in found]
        messages.append(
            f"The Slurm job of {job}{others} can never start on this cluster: "
            f"{'; '.join(sentence for _, sentence in found)}. "
            f"Lower {' and '.join(dict.fromkeys(lower))}."
        )
    return messages


@dataclass
class PendingWatch:
    """Polls this working directory's pending Slurm jobs; see the module docstring."""

    workdir: Path
    log: Callable[[str], None]
    interval_s: float = 30.0
    checks: int = 3
    run: Runner = run_command
    seen: dict[str, int] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)  # comments (rule + wildcards)
    _stop: threading.Event = field(default_factory=threading.Event)
    _capacity: dict[str, Capacity] = field(default_factory=dict)

    def pending(self) -> list[tuple[str, str, str]]:
        """(job id, reason, comment) of this working directory's pending jobs."""
        out = self.run(["squeue", "--me", "-h", "-t", "PENDING", "-o", "%i|%r|%k|%Z"])
        here = str(Path(self.workdir).resolve())
        jobs = []
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4 and parts[3] == here and re.match(r"(rule|group)_", parts[2]):
                jobs.append((parts[0], parts[1], parts[2]))
        return jobs

    def capacity(self, partition: str) -> Capacity:
        if partition not in self._capacity:
            self._capacity[partition] = partition_capacity(partition, self.run)
        return self._capacity[partition]

    def check(self) -> list[str]:
        """One look; returns the messages of the jobs cancelled now."""
        messages = []
        jobs = self.pending()
        self.seen = {job_id: self.seen.get(job_id, 0) for job_id, _, _ in jobs}
        for job_id, reason, comment in jobs:
            self.seen[job_id] += 1
            if self.seen[job_id] < self.checks and comment not in self.cancelled:
                continue
            req = Request.from_scontrol(self.run(["scontrol", "show", "job", "-o", job_id]))
            req.reason = req.reason or reason
            found = excesses(req, self.capacity(req.partition)) if req.partition else []
            if not found and not PERMANENT_REASON.match(req.reason):
                continue
            text = message(req, found)
            if comment in self.cancelled:
                text = f"(retry) {text}"
            self.log(text)
            self.run(["scancel", job_id])
            self.cancelled.add(comment)
            messages.append(text)
        return messages

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except (subprocess.SubprocessError, OSError, ValueError) as error:
                self.log(f"pending-job check failed (continuing): {error}")

    def start(self) -> PendingWatch:
        threading.Thread(target=self._loop, name="slurm-pending-watch", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
