"""A lab's shared infrastructure against the laptop defaults, side by side in one run:

1. `fetch_audio` + extraction (`snakemake --cores <cores> extract_all`) of N generated clips
   from a local DVC remote and from the same data on the lab's S3 server: wall time of the run,
   summed job seconds of `fetch_audio` and of `extract_features`, and the ratio S3 / local.
2. 16 training jobs of a sweep logging at once (tests/_logging_job.py: 10 params, 4 metrics per
   epoch, one artifact, as a training job logs them) to a SQLite store (the workflow's default,
   `sqlite:///…/mlflow.db`) and to the lab's MLflow server (PostgreSQL + S3): runs, params and
   metric points found afterwards against those expected, failed jobs, wall time.

    .venv/bin/python benchmarks/bench_lab.py                      # 2,000 clips, 16 jobs
    .venv/bin/python benchmarks/bench_lab.py --clips 200 --jobs 4 --epochs 5

The lab stack is scripts/lab_stack.sh (rclone S3, PostgreSQL, mlflow server) started in a
temporary directory on free ports and stopped at the end. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))
LOGGING_JOB = REPO / "tests" / "_logging_job.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """scripts/lab_stack.sh in a directory of its own, on free ports."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="genre-lab-bench-"))
        self.root.chmod(0o711)  # as root, PostgreSQL runs as the postgres user
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "GENRE_LAB_DIR": str(self.root / "lab"),
            "GENRE_LAB_S3_PORT": str(free_port()),
            "GENRE_LAB_PG_PORT": str(free_port()),
            "GENRE_LAB_MLFLOW_PORT": str(free_port()),
        }
        self.exports: dict[str, str] = {}

    def run(self, *args: str) -> str:
        result = subprocess.run(
            ["bash", str(REPO / "scripts" / "lab_stack.sh"), *args],
            env=self.env, capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise SystemExit(f"lab_stack.sh {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def __enter__(self) -> Lab:
        for line in self.run("start").splitlines():
            if line.startswith("export "):
                name, _, value = line[len("export ") :].partition("=")
                self.exports[name] = value
        return self

    def __exit__(self, *exc) -> None:
        self.run("stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def s3_env(self) -> dict[str, str]:
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
        return {name: self.exports[name] for name in names}


def job_seconds(work: Path, rule: str) -> float:
    total = 0.0
    for path in (work / "results" / "benchmarks" / rule).rglob("*.tsv"):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                total += float(row["s"])
    return total


def extraction_run(work: Path, repo: Path, cores: int, env: dict) -> dict:
    """`snakemake extract_all` on ``repo`` in a fresh ``work`` directory."""
    work.mkdir(parents=True)
    overlay = work / "bench.yaml"
    overlay.write_text(yaml.safe_dump({"data": {"source": "dvc", "dvc": {"repo": str(repo)}}}))
    command = [
        str(BIN / "snakemake"), "--snakefile", str(REPO / "workflow" / "Snakefile"),
        "--configfile", str(REPO / "config" / "config.yaml"), str(overlay),
        "--cores", str(cores), "extract_all",
    ]  # fmt: skip
    began = time.monotonic()
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    wall = time.monotonic() - began
    if result.returncode != 0:
        raise SystemExit(f"snakemake failed in {work}:\n{result.stderr[-4000:]}")
    return {
        "wall_s": wall,
        "fetch_audio_s": job_seconds(work, "fetch_audio"),
        "extract_features_s": job_seconds(work, "extract_features"),
        "files": sum(1 for _ in (work / "results" / "features").rglob("*.h5")),
    }


def compare_extraction(lab: Lab, clips: int, seconds: float, cores: int, root: Path) -> dict:
    from genre_classification.data.demo_data import GENRES, make_demo_repo
    from genre_classification.lab import use_s3_remote

    per_genre = -(-clips // len(GENRES))
    local_repo, remote = root / "local" / "repo", root / "local" / "remote"
    began = time.monotonic()
    make_demo_repo(local_repo, remote, clips_per_genre=per_genre, seconds=seconds)
    print(f"{per_genre * len(GENRES)} clips of {seconds} s made and pushed in "
          f"{time.monotonic() - began:.0f} s", flush=True)  # fmt: skip
    s3_repo = root / "s3" / "repo"
    s3_repo.parent.mkdir(parents=True)
    shutil.copytree(local_repo, s3_repo)
    os.environ.update(lab.s3_env())  # for the push below (DVC reads them from the environment)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    began = time.monotonic()
    use_s3_remote(
        s3_repo, lab.exports["GENRE_LAB_DVC_REMOTE"], lab.exports["GENRE_LAB_S3_ENDPOINT"]
    )
    print(f"pushed to S3 in {time.monotonic() - began:.0f} s", flush=True)
    local_env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    results = {}
    for name, repo, run_env in (("local", local_repo, local_env), ("s3", s3_repo, env)):
        results[name] = extraction_run(root / name / "work", repo, cores, run_env)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    return results


def logging_run(uri: str, experiment: str, jobs: int, epochs: int) -> dict:
    import mlflow

    from _logging_job import METRICS, PARAMS, run_jobs

    began = time.monotonic()
    outcomes = run_jobs(uri, experiment, jobs, epochs)
    failed = sum(job.returncode != 0 for job in outcomes)
    locked = sum(job.returncode != 0 and "database is locked" in job.stderr for job in outcomes)
    wall = time.monotonic() - began
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=10_000) if found else []
    points = sum(
        len(client.get_metric_history(run.info.run_id, name)) for run in runs for name in METRICS
    )
    return {
        "wall_s": wall,
        "jobs_failed": failed,
        "database_locked": locked,
        "runs": len(runs),
        "runs_expected": jobs,
        "params": sum(len(run.data.params) for run in runs),
        "params_expected": jobs * PARAMS,
        "metric_points": points,
        "metric_points_expected": jobs * epochs * len(METRICS),
    }


def compare_logging(lab: Lab, jobs: int, epochs: int, root: Path) -> dict:
    sys.path.insert(0, str(LOGGING_JOB.parent))
    store = root / "sqlite"
    store.mkdir()
    results = {}
    for name, uri in (
        ("sqlite", f"sqlite:///{store}/mlflow.db"),
        ("server", lab.exports["MLFLOW_TRACKING_URI"]),
    ):
        results[name] = logging_run(uri, "bench-logging", jobs, epochs)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.5, help="length of each clip")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-lab-"))
    try:
        with Lab() as lab:
            extraction = compare_extraction(lab, args.clips, args.seconds, args.cores, root)
            logging_ = compare_logging(lab, args.jobs, args.epochs, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    local, s3 = extraction["local"], extraction["s3"]
    print(f"\n{local['files']} clips, fetch_audio + extraction, {args.cores} cores")
    print(f"{'remote':8} {'wall s':>8} {'fetch s':>8} {'extract s':>10}")
    for name, row in extraction.items():
        print(f"{name:8} {row['wall_s']:8.1f} {row['fetch_audio_s']:8.1f} "
              f"{row['extract_features_s']:10.1f}")  # fmt: skip
    print(f"ratio S3 / local: wall {s3['wall_s'] / local['wall_s']:.2f}, fetch "
          f"{s3['fetch_audio_s'] / max(local['fetch_audio_s'], 1e-9):.2f}")  # fmt: skip
    print(f"\n{args.jobs} jobs logging at once, {args.epochs} epochs each")
    print(f"{'store':8} {'wall s':>8} {'failed':>7} {'locked':>7} {'runs':>9} {'params':>11} "
          f"{'points':>13}")  # fmt: skip
    for name, row in logging_.items():
        print(f"{name:8} {row['wall_s']:8.1f} {row['jobs_failed']:7d} {row['database_locked']:7d} "
              f"{row['runs']:4d}/{row['runs_expected']:<4d} "
              f"{row['params']:5d}/{row['params_expected']:<5d} "
              f"{row['metric_points']:6d}/{row['metric_points_expected']:<6d}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"settings": vars(args), "extraction": extraction, "logging": logging_}, indent=1
            )  # fmt: skip
        )


if __name__ == "__main__":
    main()
