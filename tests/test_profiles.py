"""profiles/slurm and profiles/local: the short form `snakemake --profile slurm` resolves after
`make install-profiles`, resources scale with attempt, and sharded extraction bounds the number
of Slurm submissions (dry run here; on a live cluster: tests/test_slurm_e2e.py and
benchmarks/bench_slurm.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
FAKE_APPTAINER_DIR = Path(__file__).resolve().parent / "fake_apptainer"
TINY = """
rule all:
    input: "a.txt"

rule train_model:
    output: "a.txt"
    shell: "touch {output}"
"""


def run(args, cwd, env=None):
    return subprocess.run(
        [SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=env, check=False
    )


def test_short_profile_names_resolve_after_install_profiles(tmp_path):
    xdg = tmp_path / "xdg"
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg)}
    env.pop("SNAKEMAKE_PROFILE", None)
    subprocess.run(["make", "-s", "install-profiles"], cwd=REPO, env=env, check=True)
    assert (xdg / "snakemake" / "slurm").resolve() == REPO / "profiles" / "slurm"
    work = tmp_path / "wf"
    work.mkdir()
    (work / "Snakefile").write_text(TINY)
    for name in ("slurm", "local"):
        proc = run(["--profile", name, "--dry-run", "--slurm-no-account"], work, env)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-2000:]
        assert f"Using profile {name} for setting default" in out, out[:2000]
        # ...and it is ours: settings only our profiles make.
        marker = "runtime=30" if name == "slurm" else "runtime=60"
        assert marker in out, out[-2000:]
    # Without the link the bare name is not found (Snakemake does not look in ./profiles/).
    env_empty = {**env, "XDG_CONFIG_HOME": str(tmp_path / "empty")}
    proc = run(["--profile", "slurm", "--dry-run"], work, env_empty)
    assert proc.returncode != 0
    # The relative path form works from the repository root without installing anything.
    proc = run(
        [
            "--profile",
            "profiles/slurm",
            "--dry-run",
            "--slurm-no-account",
            "-s",
            str(work / "Snakefile"),
            "-d",
            str(work),
        ],
        REPO,
        env_empty,
    )  # noqa: E501
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_resources_scale_with_attempt():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["retries"] >= 1
    assert "attempt" in str(profile["default-resources"]["mem_mb"])
    assert "attempt" in str(profile["default-resources"]["runtime"])
    # Any cluster unchanged: no partition, account or QoS; GPUs come from the rule's --gres.
    assert "set-resources" not in profile
    assert not {"slurm_partition", "slurm_account"} & set(profile["default-resources"])
    assert not {"slurm-qos", "slurm-partition-config", "slurm-no-account"} & set(profile)
    # Plugin 2.8 ignores seconds-between-status-checks (see the profile's comment).
    assert "seconds-between-status-checks" not in profile
    assert profile["slurm-init-seconds-before-status-checks"] >= 1
    for attempt in (1, 2, 3):
        assert eval(str(profile["default-resources"]["mem_mb"]), {"attempt": attempt}) == (
            2000 * attempt
        )
    local = yaml.safe_load((REPO / "profiles" / "local" / "config.yaml").read_text())
    assert "executor" not in local and "software-deployment-method" not in local


def test_sharded_extraction_bounds_submissions(tmp_path):
    """1,000 files at the default setting: at most 20 extraction jobs, each asking Slurm for
    its threads as CPUs and memory/time for its files."""
    import numpy as np
    import soundfile as sf

    audio = tmp_path / "audio"
    for i in range(1000):
        (audio / f"g{i % 10}").mkdir(parents=True, exist_ok=True)
        sf.write(audio / f"g{i % 10}" / f"t{i:04d}.wav", np.zeros(64, dtype=np.float32), 22050)
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    (work / "config" / "dir.yaml").write_text(
        yaml.safe_dump({"data": {"source": "dir", "dir": str(audio)}})
    )
    env = {**os.environ, "PATH": f"{FAKE_APPTAINER_DIR}{os.pathsep}{os.environ['PATH']}"}
    proc = run(
        ["--snakefile", str(REPO / "workflow" / "Snakefile"), "--configfile",
         str(REPO / "config" / "config.yaml"), "config/dir.yaml", "--profile",
         str(REPO / "profiles" / "slurm"), "--slurm-no-account", "--dry-run", "extract_all"],
        work,
        env,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    blocks = [b for b in out.split("\n\n") if "rule extract_features:" in b]
    assert 1 <= len(blocks) <= 20, len(blocks)
    threads = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["extraction"]["threads"]
    for block in blocks:
        assert f"threads: {threads}" in block, block
        assert "mem_mb=" in block and "runtime=" in block
        assert "slurm_partition" not in block  # the cluster's default partition
