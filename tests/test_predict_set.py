"""Predict sets of the workflow, piece by piece: listing new, unlabelled audio at any depth
(plain directory and DVC), the set's data section, and the drift report with prediction drift."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genre_classification.data.audio_source import (
    UNLABELLED,
    DataSourceError,
    list_dvc_tree,
    list_unlabelled,
    tree_track_id,
)
from genre_classification.data.shards import assign_shards
from genre_classification.predict.predict_set import drift_report, set_source


def test_track_ids_are_unique_file_names():
    assert tree_track_id("song.wav") == "song"
    assert tree_track_id("a/b/song.MP3") == "a%2Fb%2Fsong"
    assert tree_track_id("a/b.c/song") == "a%2Fb.c%2Fsong"
    # a name that looks like an escaped path stays distinct from the path
    assert tree_track_id("a%2Fb.wav") == "a%252Fb"
    assert tree_track_id("a/b.wav") != tree_track_id("a%2Fb.wav")


def test_lists_every_audio_file_below_a_directory(tmp_path):
    (tmp_path / "x" / "y").mkdir(parents=True)
    sf.write(tmp_path / "top.wav", np.zeros(100), 22050)
    sf.write(tmp_path / "x" / "y" / "deep.FLAC", np.zeros(100), 22050, format="FLAC")
    (tmp_path / "x" / "notes.txt").write_text("not audio")
    (tmp_path / "x" / "bad.wav").write_bytes(b"")  # listed: extraction rejects it
    data = set_source(str(tmp_path), {"extensions": ["wav", "flac"]})
    files = list_unlabelled(data)
    assert [(f.genre, f.track, f.relpath) for f in files] == [
        (UNLABELLED, "top", "top.wav"),
        (UNLABELLED, "x%2Fbad", "x/bad.wav"),
        (UNLABELLED, "x%2Fy%2Fdeep", "x/y/deep.FLAC"),
    ]
    assert all(":" in f.version for f in files)  # size:mtime of a plain directory
    assert sum(len(m) for m in assign_shards(files, 2).values()) == 3


def test_listing_errors_name_the_problem(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        list_unlabelled(set_source(str(tmp_path / "missing"), {"extensions": ["wav"]}))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataSourceError, match="no audio files"):
        list_unlabelled(set_source(str(tmp_path), {"extensions": ["wav"]}))
    sf.write(tmp_path / "song.wav", np.zeros(100), 22050)
    sf.write(tmp_path / "song.flac", np.zeros(100), 22050, format="FLAC")
    with pytest.raises(DataSourceError, match="same track id song: song.flac and song.wav"):
        list_unlabelled(set_source(str(tmp_path), {"extensions": ["wav", "flac"]}))


def test_set_source_forms():
    data = {"extensions": ["wav"], "dvc": {"repo": "/data/repo", "target": "genres"}}
    assert set_source("/new/audio", data) == {
        "source": "dir",
        "dir": "/new/audio",
        "extensions": ["wav"],
    }
    assert set_source({"target": "new"}, data)["dvc"] == {"repo": "/data/repo", "target": "new"}
    assert set_source({"repo": "/other", "target": "new"}, data)["dvc"] == {
        "repo": "/other",
        "target": "new",
    }


def test_lists_a_dvc_target_with_md5s_without_pulling(tiny_data_repo):
    files = list_dvc_tree(tiny_data_repo["repo"], "genres", ["wav"])
    assert not (tiny_data_repo["repo"] / "genres").exists()  # listing only, nothing pulled
    tracks = [f.track for f in files]
    assert "classical%2Fclassical.00000" in tracks and "metal%2Fempty" in tracks
    assert len(files) == 3 * 5 + 3
    assert all(f.genre == UNLABELLED and len(f.version) == 32 for f in files)


def _table(rng, n, shift, genres):
    return pd.DataFrame(
        {
            "track_id": [f"t{i}" for i in range(n)],
            "genre": genres,
            "track": [f"t{i}" for i in range(n)],
            "split": "train",
            "source_md5": "",
            "band00_mean": rng.normal(shift, 1, n),
            "band01_mean": rng.normal(0, 1, n),
        }
    )


def test_drift_report_has_prediction_drift_against_training_labels(tmp_path):
    rng = np.random.default_rng(0)
    training = _table(rng, 60, 0.0, ["blues", "rock"] * 30)
    training.loc[:9, "split"] = "test"  # only train tracks are the reference
    same = _table(rng, 40, 0.0, UNLABELLED).assign(prediction=["blues", "rock"] * 20)
    summary = drift_report(
        same, training, tmp_path / "a.html", tmp_path / "a.json", set_name="a", model="cnn"
    )
    assert summary["reference"]["n_tracks"] == 50
    assert summary["prediction_drift"]["drifted"] is False
    assert summary["prediction_drift"]["training_label_shares"] == {"blues": 0.5, "rock": 0.5}
    assert summary["drifted_features"] == []

    shifted = _table(rng, 40, 3.0, UNLABELLED).assign(prediction="rock")
    summary = drift_report(
        shifted, training, tmp_path / "b.html", tmp_path / "b.json", set_name="b", model="cnn"
    )
    assert summary["prediction_drift"]["drifted"] is True
    assert summary["prediction_drift"]["predicted_shares"] == {"rock": 1.0}
    assert summary["drifted_features"] == ["band00_mean", "genre"]
    written = json.loads((tmp_path / "b.json").read_text())
    assert written["prediction_drift"]["method"] == summary["prediction_drift"]["method"]
    assert written["set"] == "b" and written["model"] == "cnn"
    assert (tmp_path / "b.html").stat().st_size > 10_000
