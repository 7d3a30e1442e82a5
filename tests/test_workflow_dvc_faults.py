"""A DVC remote that lacks the objects of one shard: that shard's fetch fails naming the files,
the remote and the fix, the other shards' audio stays in the workspace, and once the objects are
back the plain rerun finishes with every track (docs/troubleshooting.md)."""

from __future__ import annotations

import shutil

import pytest

from genre_classification.data.audio_source import file_md5, list_collection
from genre_classification.data.dvc_repo import object_path
from genre_classification.data.shards import assign_shards, shard_count
from genre_classification.fileio import read_tsv

pytestmark = pytest.mark.slow

TARGET = "results/data/manifest.tsv"
FILES_PER_SHARD = 5  # the tiny data set's 18 files in 4 shards (by hash: 3 hold files)


def test_missing_objects_of_one_shard_then_plain_rerun_recovers(workflow_dir, tmp_path):
    data = workflow_dir.data
    repo, remote, target = data["repo"], data["remote"], data["target"]
    config = {"source": "dvc", "dvc": {"repo": str(repo), "target": target}, "extensions": ["wav"]}
    files = list_collection(config)
    shards = assign_shards(files, FILES_PER_SHARD)
    assert shard_count(len(files), FILES_PER_SHARD) == 4 and len(shards) == 3
    # the shard with most files loses every object on the remote
    broken = max(shards, key=lambda name: len(shards[name]))
    lost = {audio.relpath: audio.version for audio in shards[broken]}
    held = tmp_path / "held"
    held.mkdir()
    for md5 in lost.values():
        shutil.move(object_path(remote / "files" / "md5", md5), held / md5)
    workflow_dir.overlay("shards.yaml", {"extraction": {"files_per_shard": FILES_PER_SHARD}})

    failed = workflow_dir("--cores", "2", "--keep-going", TARGET, check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    first = sorted(lost)[0]
    assert f"`dvc fetch` from the DVC remote 'storage' ({remote}) failed" in output
    assert f"{target}/{first} (md5 {lost[first]})" in output
    assert "Put the missing objects back on the remote (`dvc push`" in output
    assert "run the same snakemake command again" in output
    work = workflow_dir.workdir
    fetched = sorted(p.stem for p in (work / "results/data/fetched").glob("*.json"))
    assert fetched == sorted(set(shards) - {broken})
    # every other shard's audio is in the workspace, with its content; the broken one's is not
    for name, members in shards.items():
        for audio in members:
            path = repo / target / audio.relpath
            if name == broken:
                assert not path.exists()
            else:
                assert file_md5(path) == audio.version, path
    # no half-copied files left behind
    assert not [p for p in (repo / target).rglob("*") if p.name.endswith(".tmp")]

    for md5 in lost.values():
        shutil.move(held / md5, object_path(remote / "files" / "md5", md5))
    workflow_dir("--cores", "2", TARGET)  # the same command, nothing done by hand
    manifest = read_tsv(work / TARGET)
    rejected = read_tsv(work / "results/qc/rejected.tsv")
    every = sum(len(members) for members in shards.values())
    assert len(manifest) + len(rejected) == every == 18
    assert len(manifest) == 15  # the 3 bad files are quarantined, every good track is there
    for audio in shards[broken]:
        assert file_md5(repo / target / audio.relpath) == audio.version
    dry_run = workflow_dir("--dry-run", TARGET)
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr
