"""What every job used against what it asked for: Snakemake's benchmark files of the jobs
(``benchmark:`` of each rule) collected into one table, one row per job, and a picture per rule.

The benchmark files are in Snakemake's extended format (``--benchmark-extended``, which the
workflow turns on in ``rules/common.smk``): besides the measurements they hold the job's rule,
wildcards, threads and resources as Snakemake evaluated them for that job (``mem_mb`` and
``runtime`` of its last attempt), so the declared values come from the rules' own resource
functions and are not repeated here.

What Snakemake measures (``snakemake/benchmark.py``, 9.x): ``s`` is the wall time of the job's
process; every other value is sampled with psutil over the job's process tree (the script's
Python process and its children, e.g. the extraction workers), once at the start, every 0.5 s
for the first 30 samples (about 15 s), then every 30 s. ``max_rss`` is the largest sum of RSS
over the tree at a sample (MiB), ``cpu_time`` the user + system seconds of the processes as last
sampled. A job shorter than half a second is sampled once, at its start: its ``max_rss`` is the
Python interpreter before it imported anything, or ``NA`` (empty here) if the process was gone;
peaks between samples of a long job are missed. Treat small values as a lower bound.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterable
from pathlib import Path

from genre_classification.columns import JOB_RESOURCE_COLUMNS
from genre_classification.fileio import read_tsv, write_tsv

log = logging.getLogger(__name__)


def _number(value: str | None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # "NA", "-", empty


def _mapping(value: str | None) -> dict:
    """A dict column of an extended benchmark row (Python literal), {} if absent or unreadable."""
    try:
        parsed = ast.literal_eval(value) if value else {}
    except (ValueError, SyntaxError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def job_row(record: dict, path: str | Path) -> dict:
    """One jobs.tsv row of a benchmark row ``record`` read from ``path``."""
    resources = _mapping(record.get("resources"))
    wildcards = _mapping(record.get("wildcards"))
    rule = record.get("rule_name") or Path(path).parent.name
    return {
        "rule": rule,
        "wildcards": ",".join(f"{k}={v}" for k, v in sorted(wildcards.items())),
        "threads": record.get("threads", ""),
        "wall_s": _fmt(_number(record.get("s")), 2),
        "max_rss_mb": _fmt(_number(record.get("max_rss"))),
        "cpu_time_s": _fmt(_number(record.get("cpu_time")), 2),
        "mem_mb": _fmt(_number(resources.get("mem_mb")), 0),
        "runtime_min": _fmt(_number(resources.get("runtime")), 0),
        "benchmark": str(path),
    }


def collect_benchmarks(paths: Iterable[str | Path]) -> list[dict]:
    """The rows of every benchmark file (the last repeat of each, one per job), sorted by rule
    and wildcards."""
    rows = []
    for path in paths:
        records = read_tsv(path)
        if records:
            rows.append(job_row(records[-1], path))
        else:
            log.warning("benchmark file %s has no row: left out", path)
    return sorted(rows, key=lambda r: (r["rule"], r["wildcards"]))


def per_rule(rows: list[dict]) -> list[dict]:
    """Per rule: the number of jobs, the largest memory and wall time used by one of them, and
    the largest declared (MB, minutes); None where no job has a value."""

    def top(values):
        values = [v for v in values if v is not None]
        return max(values) if values else None

    summary = {}
    for row in rows:
        summary.setdefault(row["rule"], []).append(row)
    return [
        {
            "rule": rule,
            "jobs": len(jobs),
            "max_rss_mb": top(_number(j["max_rss_mb"]) for j in jobs),
            "mem_mb": top(_number(j["mem_mb"]) for j in jobs),
            "wall_min": top(
                None if _number(j["wall_s"]) is None else _number(j["wall_s"]) / 60 for j in jobs
            ),
            "runtime_min": top(_number(j["runtime_min"]) for j in jobs),
        }
        for rule, jobs in sorted(summary.items())
    ]


def plot_usage(rows: list[dict], path: str | Path) -> None:
    """Two panels, one bar pair per rule: the most memory a job used against the most it
    declared (MB), and the longest wall time against the declared runtime (minutes); log scale,
    each used bar labelled with its share of the request."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rules = per_rule(rows)
    names = [f"{r['rule']} ({r['jobs']})" for r in rules]
    y = np.arange(len(rules))
    height = 0.38
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.45 * max(len(rules), 1)), sharey=True)
    panels = (
        ("max_rss_mb", "mem_mb", "memory (MB): max RSS used / mem_mb declared"),
        ("wall_min", "runtime_min", "time (min): wall time used / runtime declared"),
    )
    for ax, (used_key, declared_key, title) in zip(axes, panels, strict=True):
        used = np.array([r[used_key] or 0 for r in rules], dtype=float)
        declared = np.array([r[declared_key] or 0 for r in rules], dtype=float)
        ax.barh(y + height / 2, declared, height, color="#c7d4e8", label="declared")
        ax.barh(y - height / 2, used, height, color="#2b6cb0", label="used (largest job)")
        for i, (u, d) in enumerate(zip(used, declared, strict=True)):
            if u > 0 and d > 0:
                share = 100 * u / d
                label = f" {share:.0f}%" if share >= 1 else " <1%"
                ax.text(u, i - height / 2, label, va="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_resource_usage(
    benchmark_dir: str | Path, table_path: str | Path, plot_path: str | Path
) -> list[dict]:
    """``table_path`` (results/resources/jobs.tsv: one row per benchmark file under
    ``benchmark_dir``) and its picture ``plot_path``; returns the rows."""
    paths = sorted(Path(benchmark_dir).rglob("*.tsv")) if Path(benchmark_dir).is_dir() else []
    rows = collect_benchmarks(paths)
    write_tsv(table_path, rows, JOB_RESOURCE_COLUMNS)
    plot_usage(rows, plot_path)
    for rule in per_rule(rows):
        log.info(
            "%s: %d job(s), max RSS %s of %s MB, wall %s of %s min",
            rule["rule"],
            rule["jobs"],
            _fmt(rule["max_rss_mb"], 0),
            _fmt(rule["mem_mb"], 0),
            _fmt(rule["wall_min"], 2),
            _fmt(rule["runtime_min"], 0),
        )
    return rows
