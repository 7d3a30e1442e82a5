"""Listing, screening, manifest and data version of the audio source (plain directory and DVC)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from genre_classification.audio_source import (
    DataSourceError,
    directory_fingerprint,
    fetch_audio,
    list_audio_files,
    read_tsv,
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
    files = list_audio_files(tmp_path, ["wav", "au"])
    assert [(f.genre, f.track) for f in files] == [("blues", "blues.00000"), ("rock", "rock.00001")]


def test_missing_dir_and_duplicate_ids_are_clear_errors(tmp_path):
    with pytest.raises(DataSourceError, match="data.dir"):
        list_audio_files(tmp_path / "nope", ["wav"])
    (tmp_path / "jazz").mkdir()
    sf.write(tmp_path / "jazz" / "a.wav", np.zeros(100), 22050)
    sf.write(tmp_path / "jazz" / "a.flac", np.zeros(100), 22050)
    with pytest.raises(DataSourceError, match="same track id jazz/a"):
        list_audio_files(tmp_path, ["wav", "flac"])


def test_fetch_dir_quarantines_and_caches_screening(tmp_path):
    audio = tmp_path / "audio"
    make_demo_dataset(audio, 2, seconds=2.0, genres=["jazz", "metal"])
    (audio / "jazz" / "empty.wav").write_bytes(b"")
    sf.write(audio / "metal" / "short.wav", np.zeros(1000, dtype=np.float32), 22050)
    out = tmp_path / "out"
    out.mkdir()
    paths = [out / "manifest.tsv", out / "rejected.tsv", out / "version.json"]
    cache = out / "screened.tsv"
    version = fetch_audio(dir_config(audio), 1.0, *paths, screen_cache_path=cache)

    manifest = read_tsv(paths[0])
    assert [r["track"] for r in manifest] == [
        "jazz.00000",
        "jazz.00001",
        "metal.00000",
        "metal.00001",
    ]
    assert all(len(r["md5"]) == 32 and float(r["duration_s"]) == 2.0 for r in manifest)
    rejected = {r["track"]: r["reason"] for r in read_tsv(paths[1])}
    assert rejected["empty"].startswith("empty") and rejected["short"].startswith("too short")
    assert version["n_accepted"] == 4 and version["n_rejected"] == 2
    assert json.loads(paths[2].read_text())["md5"] == version["md5"]

    # Same content again: same data version; screening comes from the cache, not decoding.
    (audio / "jazz" / "jazz.00000.wav").touch()
    cached = read_tsv(cache)
    assert len(cached) == 6
    assert (
        fetch_audio(dir_config(audio), 1.0, *paths, screen_cache_path=cache)["md5"]
        == version["md5"]
    )
    # A longer segment makes the 2 s clips too short without decoding them again.
    assert fetch_audio(dir_config(audio), 2.5, *paths, screen_cache_path=cache)["n_accepted"] == 0


def test_fingerprint_changes_with_content_or_mtime(tmp_path):
    make_demo_dataset(tmp_path, 1, seconds=1.0, genres=["jazz"])
    before = directory_fingerprint(tmp_path, ["wav"])
    assert directory_fingerprint(tmp_path, ["wav"]) == before
    sf.write(tmp_path / "jazz" / "new.wav", np.zeros(100), 22050)
    assert directory_fingerprint(tmp_path, ["wav"]) != before
    assert directory_fingerprint(tmp_path / "missing", ["wav"]) == "missing"


def pushed_dvc_repo(tmp_path, clips: int) -> tuple:
    """A DVC data repo whose audio is only on its (local) remote; returns repo, remote, config."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    init_data_repo(repo, remote)
    make_demo_dataset(repo / "genres", clips, seconds=1.5, genres=["disco"])
    add_and_push(repo, "genres", "v1")
    drop_local_copy(repo, "genres")
    data = {"source": "dvc", "dvc": {"repo": str(repo), "target": "genres"}, "extensions": ["wav"]}
    return repo, remote, data


def test_fetch_dvc_pulls_from_remote_and_uses_dvc_md5s(tmp_path):
    repo, _, data = pushed_dvc_repo(tmp_path, clips=2)
    paths = [tmp_path / "m.tsv", tmp_path / "r.tsv", tmp_path / "v.json"]
    version = fetch_audio(data, 1.0, *paths)
    assert (repo / "genres" / "disco" / "disco.00000.wav").is_file()  # really pulled
    assert version["source"] == "dvc" and version["md5"].endswith(".dir")
    assert version["md5"] in (repo / "genres.dvc").read_text()
    dir_listing = {e["relpath"]: e["md5"] for e in json.loads(
        next((repo / ".dvc" / "cache").rglob("*.dir")).read_text())}  # fmt: skip
    assert {r["md5"] for r in read_tsv(paths[0])} == set(dir_listing.values())


def test_fetch_dvc_without_remote_data_names_the_fix(tmp_path):
    import shutil

    _, remote, data = pushed_dvc_repo(tmp_path, clips=1)
    shutil.rmtree(remote)
    with pytest.raises(Exception, match="dvc pull genres.dvc.*failed|DVC remote"):
        fetch_audio(data, 1.0, tmp_path / "m", tmp_path / "r", tmp_path / "v")
