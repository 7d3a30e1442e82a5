"""Count Slurm submissions for per-file feature extraction under profiles/slurm.

The workflow keeps one Snakemake job per audio file (`extract_features`, output
`results/features/{genre}/{track}.h5`, `group: "extract"`); the Slurm profile batches them with
`group-components: extract=<N>`. This benchmark builds a self-contained tiny workflow with the
same rule name, group and output layout in a temporary directory, creates <n> tiny WAV files and
counts the extraction submissions Snakemake plans with `--profile profiles/slurm`:

* dry run (default, no Slurm needed): every "Group job extract" block is one sbatch call, every
  ungrouped `extract_features` job would be one more;
* per-file rerun: after all outputs exist, deleting one output must plan exactly one extraction
  job (in one submission);
* `--real`: additionally runs the workflow through a live Slurm (scripts/slurm_cluster.sh start;
  SLURM_CONF must point at it) and counts the `sbatch` submissions in Snakemake's log.

Usage:
    .venv/bin/python benchmarks/bench_slurm_submissions.py            # 1,000 files, dry run
    .venv/bin/python benchmarks/bench_slurm_submissions.py --n 100 --real
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
GENRES = [
    "blues",
    "classical",
    "country",
    "disco",
    "hiphop",
    "jazz",
    "metal",
    "pop",
    "reggae",
    "rock",
]

SNAKEFILE = """
GENRES, TRACKS = glob_wildcards("data/{genre}/{track}.wav")

rule all:
    input:
        "results/features.done",

rule extract_features:
    input:
        "data/{genre}/{track}.wav",
    output:
        "results/features/{genre}/{track}.h5",
    log:
        "logs/extract_features/{genre}/{track}.log",
    group:
        "extract"
    shell:
        "cp {input} {output} 2> {log}"

rule collect:
    input:
        expand("results/features/{genre}/{track}.h5", zip, genre=GENRES, track=TRACKS),
    output:
        "results/features.done",
    localrule: True
    shell:
        "ls {input} | wc -l > {output}"
"""

GROUP_RE = re.compile(r"Group job extract\b")
RULE_RE = re.compile(r"^\s*(?:localrule|rule) (\w+):", re.M)
SUBMITTED_RE = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def snakemake_bin() -> str:
    venv = REPO / ".venv" / "bin" / "snakemake"
    return str(venv) if venv.exists() else "snakemake"


def make_workdir(root: Path, n: int) -> Path:
    (root / "Snakefile").write_text(SNAKEFILE)
    frames = b"\x00\x00" * 160  # 10 ms of 16 kHz mono silence: a real, tiny WAV file
    for i in range(n):
        genre = GENRES[i % len(GENRES)]
        path = root / "data" / genre / f"{genre}.{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(frames)
    return root


def run_snakemake(workdir: Path, *args: str, timeout: int = 1800) -> str:
    cmd = [snakemake_bin(), "--profile", str(PROFILE), *args]
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.stderr.write(out[-5000:])
        raise SystemExit(f"snakemake failed ({proc.returncode}): {' '.join(cmd)}")
    return out


def count_planned(output: str) -> dict[str, int]:
    """Submissions a dry run plans for extraction: group jobs + ungrouped extract jobs."""
    groups = len(GROUP_RE.findall(output))
    # Group members are printed indented inside their "Group job" block; top-level rule blocks
    # start at column 0.
    ungrouped = sum(
        1
        for m in re.finditer(r"^(?:localrule|rule) (\w+):", output, re.M)
        if m.group(1) == "extract_features"
    )
    members = sum(1 for m in RULE_RE.finditer(output) if m.group(1) == "extract_features")
    return {
        "group_jobs": groups,
        "ungrouped_extract_jobs": ungrouped,
        "extract_jobs": members,
        "submissions": groups + ungrouped,
    }


def group_components() -> int:
    import yaml

    cfg = yaml.safe_load((PROFILE / "config.yaml").read_text())
    return int(cfg["group-components"]["extract"])


def dry_run(workdir: Path, extra: list[str]) -> dict[str, int]:
    out = run_snakemake(workdir, "--dry-run", *extra)
    return count_planned(out)


def per_file_rerun(workdir: Path, extra: list[str]) -> dict[str, int]:
    """All outputs present -> nothing to do; one audio file changes -> one extraction job."""
    wavs = sorted((workdir / "data").rglob("*.wav"))
    now = time.time()
    for wav in wavs:
        os.utime(wav, (now - 100, now - 100))
        h5 = workdir / "results" / "features" / wav.parent.name / (wav.stem + ".h5")
        h5.parent.mkdir(parents=True, exist_ok=True)
        h5.write_bytes(b"x")
        os.utime(h5, (now - 50, now - 50))
    done = workdir / "results" / "features.done"
    done.write_text("done\n")
    os.utime(done, (now - 10, now - 10))
    nothing = dry_run(workdir, extra)
    os.utime(wavs[0], (now, now))  # one audio file changed
    one = dry_run(workdir, extra)
    shutil.rmtree(workdir / "results")
    return {
        "jobs_when_complete": nothing["extract_jobs"],
        "jobs_after_one_input_changed": one["extract_jobs"],
        "submissions_after_one_input_changed": one["submissions"],
    }


def real_run(workdir: Path, extra: list[str]) -> dict[str, object]:
    if not os.environ.get("SLURM_CONF") and not Path("/etc/slurm/slurm.conf").exists():
        raise SystemExit('--real needs a running cluster: eval "$(scripts/slurm_cluster.sh start)"')
    t0 = time.time()
    out = run_snakemake(
        workdir,
        "--slurm-status-command",
        "squeue",
        "--slurm-no-account",
        "--seconds-between-status-checks",
        "2",
        *extra,
        timeout=7200,
    )
    subs = SUBMITTED_RE.findall(out)
    extract = [jid for jid, log in subs if "group_extract" in log or "extract_features" in log]
    n_out = len(list((workdir / "results" / "features").rglob("*.h5")))
    return {
        "sbatch_submissions_total": len(subs),
        "sbatch_submissions_extract": len(extract),
        "slurm_job_ids_extract": [int(j) for j in extract],
        "feature_files_written": n_out,
        "wall_seconds": round(time.time() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="number of tiny audio files (default 1000)")
    ap.add_argument("--real", action="store_true", help="also run through the live test Slurm")
    ap.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args(argv)

    # No accounting DB / account on the test cluster; harmless for a dry run.
    extra = ["--slurm-no-account"]
    gc = group_components()
    result: dict[str, object] = {
        "files": args.n,
        "group_components_extract": gc,
        "expected_max_submissions": math.ceil(args.n / gc),
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench_slurm_"))
    try:
        workdir = make_workdir(tmp, args.n)
        t0 = time.time()
        planned = dry_run(workdir, extra)
        result["dry_run"] = planned
        result["dry_run_seconds"] = round(time.time() - t0, 1)
        result["per_file_rerun"] = per_file_rerun(workdir, extra)
        if args.real:
            result["real"] = real_run(workdir, extra)
    finally:
        if args.keep:
            print(f"workdir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(result))
    else:
        d = result["dry_run"]
        print(
            f"{args.n} files -> {d['extract_jobs']} extract_features jobs -> "
            f"{d['submissions']} extraction sbatch submissions "
            f"({d['group_jobs']} group jobs + {d['ungrouped_extract_jobs']} ungrouped; "
            f"group-components extract={gc}; bound {result['expected_max_submissions']})"
        )
        r = result["per_file_rerun"]
        print(
            f"per-file rerun: all outputs present -> {r['jobs_when_complete']} jobs; "
            f"one audio file changed -> {r['jobs_after_one_input_changed']} extract_features job "
            f"in {r['submissions_after_one_input_changed']} submission"
        )
        if "real" in result:
            real = result["real"]
            print(
                f"real Slurm: {real['sbatch_submissions_extract']} extraction submissions "
                f"(job ids {real['slurm_job_ids_extract']}), "
                f"{real['feature_files_written']} feature files, {real['wall_seconds']} s"
            )
        print(json.dumps(result))
    ok = result["dry_run"]["submissions"] <= result["expected_max_submissions"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
