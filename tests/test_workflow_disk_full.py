"""A full disk under the features through the real workflow: extraction onto a small tmpfs
mounted on results/features (a real ENOSPC from the kernel, no injection: the test runs as root
here and mounts it; without the right to mount it fails saying so). The job fails naming the
directory, nothing is quarantined for it, and after the space is freed a plain rerun extracts
the rest and trains on every track."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from conftest import BAD_FILES, TINY_CLIPS, TINY_GENRES, TINY_MODEL

pytestmark = pytest.mark.slow
TARGET = "results/models/tiny/model.keras"


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def mount_tmpfs(where: Path, size: str, remount: bool = False) -> None:
    options = f"remount,size={size}" if remount else f"size={size}"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs (needs root): {result.stderr.strip()}")


def test_a_full_features_disk_fails_the_job_and_a_rerun_trains_on_every_track(workflow_dir):
    work = workflow_dir.workdir
    workflow_dir.overlay(
        "training.yaml",
        {
            "training": {
                "run": ["tiny"],
                "models": {"tiny": {**TINY_MODEL, "epochs": 1}},
                "resources": {"gpu": 0},
            }
        },
    )
    features = work / "results" / "features"
    features.mkdir(parents=True)
    # Each HDF5 of the tiny set is ~68 KiB: 400 KiB hold about 5 of its 15 good clips.
    mount_tmpfs(features, "400k")
    try:
        failed = workflow_dir("--cores", "2", TARGET, check=False)
        assert failed.returncode != 0
        log = (work / "logs/extract_features/features/00000.log").read_text()
        message = log[log.index("ShardWriteError: ") :]
        assert message.startswith(
            "ShardWriteError: the features directory results/features cannot take this shard's "
            "features: cannot write feature file results/features/"
        )
        assert "No space left on device" in message and "Free there: " in message
        assert "needed: about " in message and "Free space there" in message
        assert "ShardWriteError: the features directory results/features" in failed.stderr
        # The job wrote no record and quarantined nothing; the finished HDF5s are kept.
        assert not (features / ".shards" / "00000.tsv").exists()
        assert not (work / "results/qc/rejected.tsv").exists()
        quarantined = [
            line for line in log.splitlines() if " WARNING " in line and "quarantined" in line
        ]
        assert all(any(bad in line for bad in BAD_FILES) for line in quarantined), quarantined
        finished = {p.name: p.stat().st_mtime_ns for p in features.glob("*/*.h5")}
        assert 0 < len(finished) < len(TINY_GENRES) * TINY_CLIPS
        assert not list(features.glob("*/.tmp-*"))

        mount_tmpfs(features, "64m", remount=True)  # space freed
        plan = workflow_dir("--dry-run", TARGET)
        assert "extract_features" in plan.stdout
        workflow_dir("--cores", "2", TARGET)

        after = {p.name: p.stat().st_mtime_ns for p in features.glob("*/*.h5")}
        assert len(after) == len(TINY_GENRES) * TINY_CLIPS
        assert all(after[name] == mtime for name, mtime in finished.items())  # kept
        rejected = read_rows(work / "results/qc/rejected.tsv")
        assert {f"{r['genre']}/{r['track']}.wav" for r in rejected} == set(BAD_FILES)
        assert len(read_rows(work / "results/data/manifest.tsv")) == len(after)
        split = read_rows(work / "results/split/split.tsv")
        assert len(split) == len(after)

        import mlflow

        info = json.loads((work / "results/mlflow/runs/tiny.json").read_text())
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work}/results/mlflow/mlflow.db")
        params = client.get_run(info["run_id"]).data.params
        n_train = sum(r["split"] == "train" for r in split)
        assert int(params["n_train_segments"]) == 2 * n_train  # 2 segments per 3.5 s clip
    finally:
        subprocess.run(["umount", "-l", str(features)], check=False)
