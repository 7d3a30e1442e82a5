"""Shared infrastructure that goes away: the S3 server of the DVC remote stops while the workflow
fetches audio. The fetch fails in bounded time naming the remote and what to do, the shards
already extracted are kept (and not re-extracted), no audio is quarantined for it, and once the
server is back the same command finishes (real `rclone serve s3`, real DVC)."""

from __future__ import annotations

import shutil
import time

import pytest

from genre_classification.data.audio_source import list_collection
from genre_classification.data.shards import assign_shards
from genre_classification.fileio import read_tsv
from genre_classification.lab import use_s3_remote

pytestmark = pytest.mark.slow

TARGET = "results/data/manifest.tsv"
FILES_PER_SHARD = 5  # the tiny data set's 18 files in 3 non-empty shards
FAIL_WITHIN_S = 180


def test_s3_stopped_during_fetch_fails_clearly_and_a_rerun_finishes(
    workflow_dir, s3_server, monkeypatch
):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    data = workflow_dir.data
    repo, target = data["repo"], data["target"]
    url = f"s3://{s3_server.bucket}/dvc"
    use_s3_remote(repo, url, s3_server.endpoint)
    shutil.rmtree(data["remote"])  # only S3 has the audio now
    workflow_dir.overlay("shards.yaml", {"extraction": {"files_per_shard": FILES_PER_SHARD}})
    config = {"source": "dvc", "dvc": {"repo": str(repo), "target": target}, "extensions": ["wav"]}
    shards = sorted(assign_shards(list_collection(config), FILES_PER_SHARD))
    assert len(shards) == 3
    work = workflow_dir.workdir

    # one shard fetched and extracted while the server is up
    first = shards[0]
    workflow_dir("--cores", "2", f"results/features/.shards/{first}.tsv")
    extracted = {p: p.stat().st_mtime_ns for p in (work / "results/features").rglob("*.h5")}
    assert extracted

    # the server goes away; the rest of the collection is fetched
    s3_server.stop()
    began = time.monotonic()
    failed = workflow_dir("--cores", "2", "--keep-going", TARGET, check=False)
    took = time.monotonic() - began
    output = failed.stdout + failed.stderr
    print(f"fetch against a stopped S3 server failed after {took:.0f} s")
    assert failed.returncode != 0
    assert took < FAIL_WITHIN_S, f"the failed run took {took:.0f} s"
    assert f"`dvc fetch` from the DVC remote 'lab' ({url}) failed" in output, output[-3000:]
    assert "run the same snakemake command again" in output
    # the extracted shard is kept as it was; nothing was quarantined for the outage
    assert {p: p.stat().st_mtime_ns for p in extracted} == extracted
    assert not (work / "results/qc/rejected.tsv").exists()
    fetched = sorted(p.stem for p in (work / "results/data/fetched").glob("*.json"))
    assert fetched == [first]

    # the server is back: the same command finishes, the first shard is not extracted again
    s3_server.start()
    workflow_dir("--cores", "2", TARGET)
    manifest = read_tsv(work / TARGET)
    rejected = read_tsv(work / "results/qc/rejected.tsv")
    assert len(manifest) == 15 and len(rejected) == 3  # the tiny set's 3 bad files
    assert {p: p.stat().st_mtime_ns for p in extracted} == extracted
