"""Slurm overhead of feature extraction: the same clips locally and with --profile profiles/slurm.

    scripts/slurm_cluster.sh start            # loopback test cluster (root)
    SLURM_CONF=/tmp/genre-slurm/slurm.conf .venv/bin/python benchmarks/bench_slurm.py [--files 500]

Both runs build `extract_all` from a plain directory of N clips x 10 s, in fresh working
directories, with `extraction.threads: 2` (the loopback node has 2 CPUs):
  local   `snakemake --cores 2`
  slurm   `snakemake --profile profiles/slurm` with the profile's own polling settings, plus the
          flags this cluster needs (no accounting DB: `--slurm-status-command squeue
          --slurm-no-account`)
Overhead per file = (slurm wall - local wall) / N (target <= 0.2 s). Also prints the number of
extraction submissions. Apptainer cannot run here: the profile's `apptainer exec` goes through
tests/fake_apptainer (runs the command on the host), as in tests/test_slurm_e2e.py.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def workdir(root: Path, name: str, audio: Path) -> Path:
    work = root / name
    (work / "config").mkdir(parents=True)
    overlay = {"data": {"source": "dir", "dir": str(audio)}, "extraction": {"threads": 2}}
    (work / "config" / "bench.yaml").write_text(yaml.safe_dump(overlay))
    return work


def snakemake(work: Path, *args: str) -> tuple[float, str]:
    command = [
        str(BIN / "snakemake"), "--snakefile", str(REPO / "workflow/Snakefile"), "--configfile",
        str(REPO / "config/config.yaml"), "config/bench.yaml", *args, "--", "extract_all",
    ]  # fmt: skip
    path = f"{REPO / 'tests' / 'fake_apptainer'}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}"
    start = time.perf_counter()
    result = subprocess.run(
        command, cwd=work, capture_output=True, text=True, env={**os.environ, "PATH": path}
    )
    elapsed = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed, result.stdout + result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF") or not shutil.which("sbatch"):
        raise SystemExit("start the test cluster (scripts/slurm_cluster.sh start); set SLURM_CONF")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_scale import make_clips

    root = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    try:
        make_clips(root / "audio", args.files, args.seconds, cores=2)
        local_s, _ = snakemake(workdir(root, "local", root / "audio"), "--cores", "2")
        print(f"local  snakemake --cores 2        {local_s:8.1f} s", flush=True)
        slurm_flags = ["--profile", str(REPO / "profiles/slurm"), "--slurm-status-command",
                       "squeue", "--slurm-no-account"]  # fmt: skip
        slurm_s, log = snakemake(workdir(root, "slurm", root / "audio"), *slurm_flags)
        jobs = [p for _, p in SUBMITTED.findall(log) if "rule_extract_features" in p]
        print(f"slurm  --profile profiles/slurm   {slurm_s:8.1f} s  ({len(jobs)} sbatch)")
        per_file = (slurm_s - local_s) / args.files
        print(f"\n{args.files} files x {args.seconds:g} s: Slurm overhead per file "
              f"{per_file:.3f} s (target <= 0.2 s)")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
