"""Feature sets: named variants of `features`, one directory each, extracted only for the models
of training.run that use them; musicnn's built-in set is its weights' input."""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import TINY_MODEL, planned_jobs
from genre_classification.columns import RECORD_COLUMNS
from genre_classification.config_check import cross_check
from genre_classification.data.demo_data import synthesize_clip
from genre_classification.features.features import (
    BUILTIN_SETS,
    DEFAULT_SET,
    FeatureParams,
    existing_features,
    extract_audio,
    feature_set_dir,
    feature_set_of_dir,
    feature_set_params,
    log_mel_segments,
    params_from_attrs,
)
from genre_classification.fileio import write_tsv
from genre_classification.training import dataset, models, musicnn


def test_set_params_are_the_default_with_the_set_keys_on_top(config):
    config = copy.deepcopy(config)
    config["feature_sets"] = {"small": {"n_mels": 32}}
    assert feature_set_params(config, DEFAULT_SET) == config["features"]
    assert feature_set_params(config, "small") == {**config["features"], "n_mels": 32}
    assert feature_set_params(config, "musicnn")["sample_rate"] == 16000  # built in
    with pytest.raises(ValueError, match=r"'nosuch' is not defined.*'default', 'musicnn', 'small'"):
        feature_set_params(config, "nosuch")


@pytest.mark.parametrize("name", [DEFAULT_SET, "musicnn", "small_1"])
def test_set_directories_round_trip(name):
    directory = feature_set_dir("results/features", name)
    assert feature_set_of_dir(directory) == name
    assert str(directory) == ("results/features" if name == DEFAULT_SET else f"{directory}")
    assert directory.parent.name == "results"


def test_files_written_before_the_scale_parameter_are_still_current(tmp_path):
    params = FeatureParams(segment_seconds=1.0)
    audio = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(audio, synthesize_clip("metal", 2.0, 22050, seed=1), 22050)
    out = tmp_path / "a.h5"
    extract_audio(audio, out, params, "metal", source_md5="0" * 32)
    with h5py.File(out, "a") as h5:
        assert h5.attrs["scale"] == "db"
        del h5.attrs["scale"]  # as an HDF5 of an earlier version
        assert params_from_attrs(h5.attrs) == params
    assert existing_features(out, params) is not None
    assert existing_features(out, FeatureParams(segment_seconds=1.0, scale="log1p")) is None


def test_musicnn_set_gives_the_weights_input():
    params = FeatureParams(**BUILTIN_SETS["musicnn"])
    assert (params.sample_rate, params.n_mels, params.frames_per_segment) == (
        musicnn.SR,
        musicnn.N_MELS,
        musicnn.PATCH_FRAMES,
    )
    audio = synthesize_clip("metal", 6.5, 16000, seed=3)
    ours = log_mel_segments(audio, params)  # (segments, mels, frames)
    reference = musicnn.musicnn_input(audio, pad_mode="constant")  # (patches, frames, mels)
    assert ours.shape == (2, 96, 187)
    np.testing.assert_allclose(ours, reference.transpose(0, 2, 1), rtol=1e-4, atol=1e-4)


def test_config_checks_name_the_model_and_the_set(config):
    config = copy.deepcopy(config)
    config["training"]["models"]["cnn"]["features"] = "smal"
    config["feature_sets"] = {"small": {"n_mels": 32}, "bad-name": {}}
    config["training"]["models"]["mnn"] = {"architecture": "musicnn"}
    config["training"]["models"]["mnn_db"] = {"architecture": "musicnn", "features": "small"}
    problems = cross_check(config)
    assert (
        "training.models.cnn uses feature set 'smal', which is not in feature_sets" in problems[0]
    )
    assert "(did you mean 'small'?)" in problems[0]
    assert problems[1].startswith(
        "training.models.mnn_db (musicnn) needs the feature set 'musicnn'"
    )
    assert "feature_sets name 'bad-name'" in problems[2]
    assert len(problems) == 3  # mnn: the built-in set by default
    assert models.feature_set_of(config["training"]["models"]["mnn"]) == "musicnn"


def test_split_rows_point_at_the_set_and_unusable_tracks_are_left_out(tmp_path, caplog):
    split = pd.DataFrame(
        {
            "genre": ["rock", "rock", "jazz"],
            "track": ["a", "b", "c"],
            "split": ["train", "val", "test"],
            "features": ["results/features/rock/a.h5", "results/features/rock/b.h5", "x"],
            "n_segments": [10, 10, 10],
            "source_md5": ["1", "2", "3"],
        }
    )
    rows = [
        {"genre": "rock", "track": "a", "status": "extracted", "features": "S/rock/a.h5",
         "n_segments": 9},
        {"genre": "rock", "track": "b", "status": "rejected", "reason": "too short"},
        {"genre": "jazz", "track": "c", "status": "kept", "features": "S/jazz/c.h5",
         "n_segments": 8},
    ]  # fmt: skip
    record = tmp_path / "00000.tsv"
    write_tsv(record, [{**dict.fromkeys(RECORD_COLUMNS, ""), **r} for r in rows], RECORD_COLUMNS)
    mapped = dataset.with_feature_set(split, [record])
    assert mapped["features"].tolist() == ["S/rock/a.h5", "S/jazz/c.h5"]
    assert mapped["n_segments"].tolist() == [9, 8]
    assert "rock/b" in caplog.text


@pytest.mark.slow
def test_sets_are_extracted_only_for_the_models_that_use_them(workflow_dir):
    small = {**TINY_MODEL, "features": "small", "epochs": 1}
    musicnn = {"architecture": "musicnn", "epochs": 1, "batch_size": 16, "seed": 1}
    workflow_dir.overlay(
        "sets.yaml",
        {
            "feature_sets": {"small": {"n_mels": 32}},
            "training": {
                "run": ["tiny"],
                "models": {"tiny": {**TINY_MODEL, "epochs": 1}, "small": small, "mnn": musicnn},
                "resources": {"gpu": 0},
            },
        },
    )
    dry = workflow_dir("--cores", "2", "--dry-run", "results/eval/tiny/metrics.json")
    assert planned_jobs(dry.stdout)["extract_features"] == 1  # the default set only
    targets = ["results/eval/small/metrics.json", "results/eval/mnn/metrics.json"]
    dry = workflow_dir("--cores", "2", "--dry-run", *targets)
    assert planned_jobs(dry.stdout)["extract_features"] == 3  # default (split), small, musicnn

    workflow_dir("--cores", "2", *targets)
    work = workflow_dir.workdir
    small_files = sorted((work / "results/features-small").glob("*/*.h5"))
    assert small_files and not list((work / "results/features").glob("*/*.h5"))[0].samefile(
        small_files[0]
    )
    with h5py.File(small_files[0]) as h5:
        assert h5["logmel"].shape[1] == 32 and h5.attrs["n_mels"] == 32
    with h5py.File(next((work / "results/features-musicnn").glob("*/*.h5"))) as h5:
        assert h5["logmel"].shape == (1, 96, 187)  # the set's own 3 s segments of a 3.5 s clip
        assert h5.attrs["scale"] == "log1p" and h5.attrs["sample_rate"] == 16000
    info = json.loads((work / "results/models/small/features.json").read_text())
    assert info["features"]["n_mels"] == 32
    info = json.loads((work / "results/models/mnn/features.json").read_text())
    assert info["features"]["scale"] == "log1p"

    import mlflow

    run_id = json.loads((work / "results/mlflow/runs/mnn.json").read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work}/results/mlflow/mlflow.db")
    tags = client.get_run(run_id).data.tags
    assert tags["pretrained.weights_file"] == "musicnn/MSD_musicnn/"
    assert len(tags["pretrained.weights_sha256"]) == 64
