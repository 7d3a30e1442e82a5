"""The whole workflow (`rule all`) on N generated 30 s clips: per rule wall time, peak RSS of its
jobs against the `mem_mb` they declared, and the growth from one N to the next.

    .venv/bin/python benchmarks/bench_workflow.py --sizes 1000 5000 20000
    .venv/bin/python benchmarks/bench_workflow.py --sizes 1000 --keep /tmp/wf   # keep the run

Each size runs in a fresh working directory: a plain `<genre>/<file>` directory of N clips in
the demo's 6 styles, `config/config.yaml` with the training run cut to one epoch of the default
CNN (`--epochs`), `snakemake --cores <cores>`. Every job's process tree (Snakemake runs a
`script:` job as `python .snakemake/scripts/tmp*.<script>.py`) is sampled every 0.5 s with
psutil for its RSS; a job's declared `mem_mb` is read from Snakemake's job log. Targets
(issue "Everything after extraction at 100,000 tracks"): every job's peak RSS <= its declared
mem_mb; the training job's peak at the largest N within 1.25x its peak at the smallest; total
time at most linear in N.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SCRIPT = re.compile(r"\.snakemake/scripts/tmp[^.]+\.([A-Za-z0-9_]+)\.py")
JOB = re.compile(r"^(?:local)?rule (\w+):$")
RESOURCES = re.compile(r"resources: .*?\bmem_mb=(\d+)")


class Sampler(threading.Thread):
    """Peak RSS (MB) and first/last seen time of every job process tree under ``root`` (the
    Snakemake process), by pid."""

    def __init__(self, root: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.interval, self.jobs, self.stop = root, interval, {}, threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.root)
        while not self.stop.is_set():
            now = time.perf_counter()
            try:
                descendants = root.children(recursive=True)
            except psutil.Error:
                break
            jobs = {}
            for proc in descendants:
                try:
                    match = SCRIPT.search(" ".join(proc.cmdline()))
                    if match:
                        jobs[proc.pid] = (proc, match.group(1), proc.ppid())
                except psutil.Error:
                    continue
            for pid, (proc, script, parent) in jobs.items():
                if parent in jobs:  # a forked worker of a job (same command line)
                    continue
                try:
                    tree = [proc, *proc.children(recursive=True)]
                    rss = sum(p.memory_info().rss for p in tree) / 1e6
                except psutil.Error:
                    continue
                job = self.jobs.setdefault(pid, {"script": script, "first": now, "peak": 0.0})
                job["peak"], job["last"] = max(job["peak"], rss), now
            self.stop.wait(self.interval)


def declared_mem(log: str) -> dict[str, list[int]]:
    """mem_mb of every job, by rule, from Snakemake's job blocks."""
    declared, rule = defaultdict(list), None
    for line in log.splitlines():
        line = line.strip()
        if match := JOB.match(line):
            rule = match.group(1)
        elif rule and (match := RESOURCES.search(line)):
            declared[rule].append(int(match.group(1)))
            rule = None
    return declared


def run_size(root: Path, n: int, cores: int, epochs: int) -> dict:
    from bench_scale import make_clips

    start = time.perf_counter()
    make_clips(root / "audio", n, 30.0, cores)
    print(f"{n} clips written in {time.perf_counter() - start:.0f} s", flush=True)
    workdir = root / "work"
    (workdir / "config").mkdir(parents=True)
    shutil.copy(REPO / "config/config.yaml", workdir / "config/config.yaml")
    overlay = {
        "data": {"source": "dir", "dir": str(root / "audio")},
        "training": {"run": ["cnn"], "models": {"cnn": {"epochs": epochs}}},
    }
    (workdir / "config/bench.yaml").write_text(yaml.safe_dump(overlay))
    command = [
        str(BIN / "snakemake"), "--snakefile", str(REPO / "workflow/Snakefile"), "--cores",
        str(cores), "--configfile", "config/config.yaml", "config/bench.yaml",
    ]  # fmt: skip
    start = time.perf_counter()
    with open(root / "snakemake.log", "w") as out:
        proc = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid)
        sampler.start()
        returncode = proc.wait()
    total = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    log = (root / "snakemake.log").read_text()
    if returncode:
        raise SystemExit(f"snakemake failed (log: {root / 'snakemake.log'}):\n{log[-3000:]}")
    rules = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "peak_rss_mb": 0.0})
    for job in sampler.jobs.values():
        rule = rules[job["script"]]
        rule["jobs"] += 1
        rule["wall_s"] += job.get("last", job["first"]) - job["first"]
        rule["peak_rss_mb"] = max(rule["peak_rss_mb"], job["peak"])
    for rule, mems in declared_mem(log).items():
        if rule in rules:
            rules[rule]["declared_mem_mb"] = min(mems)
    # a job's record must not grow with its shard (a member list as a param once made the
    # 2,000-file shard's extended benchmark row 152 KB, over the csv module's field limit)
    records = list((workdir / "results/benchmarks").rglob("*.tsv"))
    largest = max((path.stat().st_size for path in records), default=0)
    return {"n": n, "total_s": total, "largest_benchmark_bytes": largest, "rules": dict(rules)}


def report(results: list[dict]) -> None:
    names = sorted({rule for r in results for rule in r["rules"]})
    sizes = [r["n"] for r in results]
    head = " | ".join(f"{n:,}: wall s / peak RSS MB / mem_mb" for n in sizes)
    print(f"\n| rule | {head} | growth {sizes[0]:,} -> {sizes[-1]:,} (wall, RSS) |")
    print("|---|" + "---|" * (len(sizes) + 1))
    ok = True
    for name in names:
        cells = []
        for r in results:
            rule = r["rules"].get(name)
            if not rule:
                cells.append("-")
                continue
            declared = rule.get("declared_mem_mb")
            over = declared is not None and rule["peak_rss_mb"] > declared
            ok &= not over
            flag = " **OVER**" if over else ""
            cells.append(
                f"{rule['wall_s']:.0f} / {rule['peak_rss_mb']:,.0f} / {declared or '-'}{flag}"
            )
        first, last = results[0]["rules"].get(name), results[-1]["rules"].get(name)
        growth = (
            f"{last['wall_s'] / max(first['wall_s'], 0.5):.1f}x, "
            f"{last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x"
            if first and last and len(results) > 1
            else "-"
        )
        print(f"| {name} | " + " | ".join(cells) + f" | {growth} |")
    totals = " | ".join(f"{r['total_s']:.0f} s" for r in results)
    print(f"| **total** | {totals} | {results[-1]['total_s'] / results[0]['total_s']:.1f}x "
          f"for {sizes[-1] / sizes[0]:.0f}x the clips |")  # fmt: skip
    train = [r["rules"].get("train_model", {}).get("peak_rss_mb") for r in results]
    if len(results) > 1 and all(train):
        print(f"\ntraining job peak RSS {train[-1] / train[0]:.2f}x from {sizes[0]:,} to "
              f"{sizes[-1]:,} clips (target <= 1.25)")  # fmt: skip
    largest = ", ".join(f"{r['n']:,}: {r.get('largest_benchmark_bytes', 0):,} B" for r in results)
    print(f"largest benchmark record per size: {largest}")
    print("every job under its declared mem_mb" if ok else "SOME JOB OVER ITS mem_mb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        if args.keep:
            root = args.keep / str(n)
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            results.append(run_size(root, n, args.cores, args.epochs))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                results.append(run_size(Path(tmp), n, args.cores, args.epochs))
        print(json.dumps(results[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    report(results)


if __name__ == "__main__":
    main()
