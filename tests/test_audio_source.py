"""Listing and fetching of the audio source (plain directory and DVC)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from genre_classification.audio_source import (
    DataSourceError,
    data_version,
    fetch_audio,
    list_collection,
    list_directory,
    list_dvc,
    listing_digest,
)
from genre_classification.demo_data import make_demo_dataset
from genre_classification.dvc_repo import add_and_push, drop_local_copy, init_data_repo


def dir_config(root) -> dict:
    return {"source": "dir", "dir": str(root), "extensions": ["wav", "flac", "au"],
            "dvc": {"repo": ".", "target": "x"}}  # fmt: skip


def test_lists_gtzan_layout_and_ignores_other_files(tmp_path):
    (tmp_path / "blues").mkdir()
    (tmp_path / "rock").mkdir()
    sf.write(tmp_path / "blues" / "blues.00000.wav", np.zeros(100), 22050)
    sf.write(tmp_path / "rock" / "rock.00001.au", np.zeros(100), 22050)
    (tmp_path / "rock" / "notes.txt").write_text("x")
    (tmp_path / "stray.wav").write_bytes(b"")
    files = list_directory(tmp_path, ["wav", "au"])
    assert [(f.genre, f.track) for f in files] == [("blues", "blues.00000"), ("rock", "rock.00001")]


def test_missing_dir_and_duplicate_ids_are_clear_errors(tmp_path):
    with pytest.raises(DataSourceError, match="data.dir"):
        list_directory(tmp_path / "nope", ["wav"])
    (tmp_path / "jazz").mkdir()
    sf.write(tmp_path / "jazz" / "a.wav", np.zeros(100), 22050)
    sf.write(tmp_path / "jazz" / "a.flac", np.zeros(100), 22050)
    with pytest.raises(DataSourceError, match="same track id jazz/a"):
        list_directory(tmp_path, ["wav", "flac"])


def test_directory_versions_are_size_and_mtime_and_digest_follows_them(tmp_path):
    make_demo_dataset(tmp_path, 2, seconds=1.0, genres=["jazz"])
    files = list_directory(tmp_path, ["WAV"])  # extensions match case-insensitively
    path = tmp_path / files[0].relpath
    assert files[0].version == f"{path.stat().st_size}:{path.stat().st_mtime_ns}"
    assert files[0].content_md5 is None  # computed by the extraction jobs
    before = listing_digest(files)
    assert listing_digest(list_directory(tmp_path, ["wav"])) == before
    sf.write(tmp_path / "jazz" / "new.wav", np.zeros(100), 22050)
    assert listing_digest(list_directory(tmp_path, ["wav"])) != before


def test_data_version_of_each_source(tmp_path):
    repo, _, data = pushed_dvc_repo(tmp_path, clips=1)
    version = data_version(data)
    assert version["source"] == "dvc" and version["md5"] in (repo / "genres.dvc").read_text()
    assert data_version(dir_config(tmp_path))["md5"] is None  # from content md5s, later


def pushed_dvc_repo(tmp_path, clips: int) -> tuple:
    """A DVC data repo whose audio is only on its (local) remote; returns repo, remote, config."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    init_data_repo(repo, remote)
    make_demo_dataset(repo / "genres", clips, seconds=1.5, genres=["disco"])
    add_and_push(repo, "genres", "v1")
    drop_local_copy(repo, "genres")
    data = {"source": "dvc", "dvc": {"repo": str(repo), "target": "genres"}, "extensions": ["wav"]}
    return repo, remote, data


def test_dvc_listing_has_dvc_md5s_before_any_pull(tmp_path):
    repo, _, data = pushed_dvc_repo(tmp_path, clips=2)
    files = list_collection(data)  # the audio is only on the remote
    assert not (repo / "genres").exists()
    assert [f.relpath for f in files] == ["disco/disco.00000.wav", "disco/disco.00001.wav"]
    fetched = fetch_audio(data, files[1:], tmp_path / "fetched.json")
    assert (repo / "genres" / "disco" / "disco.00001.wav").is_file()  # really pulled
    assert not (repo / "genres" / "disco" / "disco.00000.wav").exists()  # another shard's
    assert fetched == {"disco/disco.00001": files[1].version}
    fetch_audio(data, files[:1], tmp_path / "fetched.json")
    dir_listing = {e["relpath"]: e["md5"] for e in json.loads(
        next((repo / ".dvc" / "cache").rglob("*.dir")).read_text())}  # fmt: skip
    assert {f.relpath: f.version for f in files} == dir_listing
    assert all(f.content_md5 == f.version for f in files)
    assert list_dvc(repo, "genres", ["wav"]) == files  # now from the local cache


def test_fetch_dvc_without_remote_data_names_the_fix(tmp_path):
    import shutil

    _, remote, data = pushed_dvc_repo(tmp_path, clips=1)
    files = list_collection(data)
    shutil.rmtree(remote)
    with pytest.raises(DataSourceError, match="(?s)dvc pull.*failed.*DVC remote"):
        fetch_audio(data, files, tmp_path / "fetched.json")

    # Without the remote not even the listing of a new version can be read.
    _, remote, data = pushed_dvc_repo(tmp_path / "second", clips=1)
    shutil.rmtree(remote)
    with pytest.raises(DataSourceError, match="cannot list genres.*DVC remote"):
        list_collection(data)
