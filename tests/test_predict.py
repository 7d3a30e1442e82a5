"""The predict command: a tiny model trained by the real training code on generated audio, then
the CLI on files and folders (bad files included), checked against the evaluation step."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from _training_data import TINY_CONFIG, train_tiny
from genre_classification.columns import SPLIT_COLUMNS
from genre_classification.data.demo_data import make_demo_dataset
from genre_classification.evaluation import evaluate
from genre_classification.features.features import FeatureParams, extract_audio
from genre_classification.predict import predict
from genre_classification.training import model_info

REPO = Path(__file__).resolve().parents[1]
GENRES = ["classical", "disco", "metal"]
# Not the config defaults: predictions must use the parameters the model was trained with.
PARAMS = FeatureParams(
    sample_rate=16000, n_fft=1024, hop_length=256, n_mels=24, segment_seconds=1.0
)
SPLITS = ["train", "train", "train", "val", "test", "test"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Audio → features (PARAMS) → split → train.train → evaluate.evaluate, in a temp dir."""
    root = tmp_path_factory.mktemp("predict")
    audio = make_demo_dataset(root / "audio", len(SPLITS), seconds=3.2, genres=GENRES)
    rows = []
    for path in audio:
        genre, track = path.parent.name, path.stem
        h5 = root / "features" / genre / f"{track}.h5"
        shape, _ = extract_audio(path, h5, PARAMS, genre, f"md5-{track}")
        split = SPLITS[int(track.split(".")[1])]
        rows.append((genre, track, split, str(h5), shape[0], f"md5-{track}"))
    split_path = root / "split.tsv"
    pd.DataFrame(rows, columns=SPLIT_COLUMNS).to_csv(split_path, sep="\t", index=False)

    info, uri = train_tiny(TINY_CONFIG, split_path, root, "tiny", "predict-test")
    model_dir = root / "models" / "tiny"
    eval_dir = root / "eval"
    metrics = evaluate.evaluate(
        model_dir / "model.keras",
        split_path,
        eval_dir / "metrics.json",
        eval_dir / "predictions.csv",
        eval_dir / "confusion.png",
    )
    yield {
        "root": root,
        "audio": audio,
        "split": split_path,
        "model": model_dir / "model.keras",
        "run_info": root / "run.json",
        "run": info,
        "uri": uri,
        "metrics": metrics,
        "predictions": pd.read_csv(eval_dir / "predictions.csv"),
    }


def run_cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "genre_classification", "predict", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def read_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def top_probs(row: dict) -> dict[str, float]:
    pairs = (item.rsplit(":", 1) for item in row["top_k"].split(";"))
    return {genre: float(p) for genre, p in pairs}


def test_training_records_its_feature_parameters(trained, monkeypatch):
    recorded = json.loads(trained["model"].with_name("features.json").read_text())
    assert recorded == {"features": asdict(PARAMS), "labels": GENRES}

    import mlflow
    from mlflow.models import get_model_info

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["uri"])
    mlflow.set_tracking_uri(trained["uri"])
    logged = get_model_info(f"runs:/{trained['run']['run_id']}/model")
    assert logged.metadata == recorded
    artifacts = mlflow.MlflowClient().list_artifacts(trained["run"]["run_id"])
    assert "features.json" in {a.path for a in artifacts}


def test_training_features_must_agree(tmp_path, trained):
    split = pd.read_csv(trained["split"], sep="\t")
    other = tmp_path / "other.h5"
    extract_audio(
        trained["audio"][0], other, FeatureParams(**{**asdict(PARAMS), "n_mels": 16}), "x", "m"
    )
    with pytest.raises(ValueError, match="different parameters"):
        model_info.training_features([*split["features"][:2], other])


def test_cli_equals_evaluation_predictions(trained, tmp_path):
    expected = trained["predictions"]
    test_audio = [p for p in trained["audio"] if f"{p.parent.name}/{p.stem}" in set(expected.track)]
    out = tmp_path / "out.csv"
    result = run_cli("--model", trained["model"], "--top-k", 3, "--output", out, *test_audio)
    assert result.returncode == 0, result.stderr
    rows = {
        Path(r["path"]).parent.name + "/" + Path(r["path"]).stem: r
        for r in read_rows(out.read_text())
    }
    assert set(rows) == set(expected.track)
    for track in expected.itertuples():
        row = rows[track.track]
        assert row["genre"] == track.predicted
        assert row["error"] == ""
        probs = top_probs(row)
        assert list(probs) == sorted(probs, key=probs.get, reverse=True)
        for genre in GENRES:
            assert probs[genre] == pytest.approx(getattr(track, f"prob_{genre}"), abs=2e-6)
        assert float(row["probability"]) == probs[track.predicted]
        assert int(row["n_segments"]) == 3  # 3.2 s clip, 1 s segments


def test_cli_folder_with_bad_files(trained, tmp_path):
    folder = tmp_path / "new music"
    (folder / "sub").mkdir(parents=True)
    good = trained["audio"][:2]
    (folder / "a.wav").write_bytes(good[0].read_bytes())
    (folder / "sub" / "B.WAV").write_bytes(good[1].read_bytes())  # extension case-insensitive
    (folder / "sub" / "notes.mp3").write_text("this is not audio\n" * 20)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "readme.txt").write_text("not an audio extension: skipped")

    result = run_cli("--model", trained["model"], "--top-k", 2, folder)
    assert result.returncode == 1, result.stderr
    rows = {Path(r["path"]).name: r for r in read_rows(result.stdout)}
    assert set(rows) == {"a.wav", "B.WAV", "notes.mp3", "empty.wav"}
    for name in ("a.wav", "B.WAV"):
        assert rows[name]["error"] == ""
        assert rows[name]["genre"] in GENRES
        assert len(top_probs(rows[name])) == 2
    assert rows["notes.mp3"]["error"].startswith("cannot decode")
    assert rows["empty.wav"]["error"] != "" and rows["empty.wav"]["genre"] == ""
    assert "4 files, 2 failed" in result.stderr


def test_cli_all_good_exit_zero_and_usage_errors(trained, tmp_path):
    result = run_cli("--model", trained["model"], "--jobs", 0, trained["audio"][0])
    assert result.returncode == 0, result.stderr
    assert len(read_rows(result.stdout)) == 1
    missing = run_cli("--model", trained["model"], tmp_path / "nothing-here")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    no_info = tmp_path / "bare" / "model.keras"
    no_info.parent.mkdir()
    no_info.write_bytes(trained["model"].read_bytes())
    bare = run_cli("--model", no_info, trained["audio"][0])
    assert bare.returncode == 2 and "features.json" in bare.stderr


def test_streaming_batches_give_the_same_rows(trained):
    """Batches smaller and larger than a file, failed files in between: same rows, same order."""
    loaded = predict.load_model(str(trained["model"]))
    paths = list(trained["audio"][:5])
    paths.insert(2, trained["root"] / "missing.wav")
    results = []
    for batch in (1, 2, 7, 1000):
        rows = list(predict.predict_rows(loaded, paths, jobs=0, batch_segments=batch))
        assert [r.path for r in rows] == [str(p) for p in paths]
        assert rows[2].error and rows[2].probs is None
        results.append(np.stack([r.probs for i, r in enumerate(rows) if i != 2]))
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=1e-6)


def test_overlapping_windows_agree_with_evaluation(trained, tmp_path):
    """predict_segments (predict command, predict sets) and evaluation cut the same windows."""
    from genre_classification.features.features import read_features
    from genre_classification.training import dataset

    out = tmp_path / "eval"
    evaluate.evaluate(
        trained["model"],
        trained["split"],
        out / "metrics.json",
        out / "predictions.csv",
        out / "confusion.png",
        overlap=0.5,
    )
    expected = pd.read_csv(out / "predictions.csv")
    split = dataset.read_split(trained["split"])
    test = split[split.split == "test"]
    items = [
        (dataset.track_id(r.genre, r.track), read_features(r.features)[0], "")
        for r in test.itertuples()
    ]
    loaded = predict.load_model(str(trained["model"]))
    for batch in (1, 1000):
        rows = list(predict.predict_segments(loaded, items, batch, overlap=0.5))
        assert [r.path for r in rows] == expected["track"].tolist()
        assert [r.n_segments for r in rows] == test["n_segments"].tolist()
        assert all(r.n_windows == 2 * r.n_segments - 1 for r in rows)  # 1 s segments: 62 frames
        probs = np.stack([r.probs for r in rows])
        np.testing.assert_allclose(probs, expected.filter(like="prob_").to_numpy(), atol=2e-6)
    plain = list(predict.predict_segments(loaded, items, 1000))
    assert not np.allclose(np.stack([r.probs for r in plain]), probs)


def test_audio_extensions_are_the_workflow_defaults():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert list(predict.AUDIO_EXTENSIONS) == config["data"]["extensions"]


def test_default_model_is_the_newest_file_without_a_tracking_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(predict.PredictError, match="no model"):
        predict.default_model()
    for name in ("old", "new"):
        path = tmp_path / "results" / "models" / name / "model.keras"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
    os.utime(tmp_path / "results/models/old/model.keras", (1, 1))
    assert predict.default_model() == str(Path("results/models/new/model.keras"))
    fold = tmp_path / "results" / "models" / "cv" / "fold-2" / "model.keras"  # k-fold layout
    fold.parent.mkdir(parents=True)
    fold.write_bytes(b"x")
    assert predict.default_model() == str(Path("results/models/cv/fold-2/model.keras"))


def test_registered_champion_is_the_default_model(trained, tmp_path, monkeypatch):
    from genre_classification.evaluation import registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["uri"])
    decision = registry.register_and_promote(trained["run_info"], trained["metrics"], "tiny-genres")
    assert decision.moved and decision.champion == decision.version
    loaded = predict.load_model("models:/tiny-genres@champion")
    assert (loaded.params, loaded.labels) == (PARAMS, GENRES)

    # In a workflow checkout: the config names the registered model, the champion is the default.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(
        yaml.safe_dump({"training": {"registry": {"name": "tiny-genres"}}})
    )
    files = trained["audio"][:4]
    by_default = run_cli(*files, cwd=tmp_path)
    assert by_default.returncode == 0, by_default.stderr
    assert "model: models:/tiny-genres@champion" in by_default.stderr
    by_path = run_cli("--model", trained["model"], *files)
    assert read_rows(by_default.stdout) == read_rows(by_path.stdout)


def test_progress_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    shown, piped = Terminal(), io.StringIO()
    for stream in (shown, piped):
        progress = predict.Progress(10, stream, interval=0.0)
        progress.update(4, 1)
        progress.close(10, 1)
    assert "predict: 4/10 files, 1 failed" in shown.getvalue()
    assert "\rpredict: 10/10 files, 1 failed" in shown.getvalue()
    assert shown.getvalue().endswith("eta 0 s   \n")
    assert piped.getvalue() == ""


def test_rows_stream_out_before_later_files_are_decoded(trained, monkeypatch):
    """Bounded memory: a row is written once its segments are through the model, not at the end."""
    loaded = predict.load_model(str(trained["model"]))
    calls = []
    real_decode = predict.decode
    monkeypatch.setattr(
        predict, "decode", lambda p, params: calls.append(p) or real_decode(p, params)
    )
    rows = predict.predict_rows(loaded, list(trained["audio"]) * 20, jobs=0, batch_segments=3)
    first = next(rows)
    assert first.probs is not None and len(calls) == 1
    assert sum(1 for _ in rows) == len(trained["audio"]) * 20 - 1


def test_console_script_is_the_cli():
    import importlib
    import tomllib

    from genre_classification import cli

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["genre-classification"].split(":")
    assert getattr(importlib.import_module(module), function) is cli.main
    with pytest.raises(SystemExit) as usage:
        cli.main(["predict"])  # PATH is required
    assert usage.value.code == 2


def test_tracking_store_env_then_workflow_config_then_local_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert predict.local_tracking_uri() is None  # no store here: the newest model file is used
    (tmp_path / "results/mlflow").mkdir(parents=True)
    (tmp_path / "results/mlflow/mlflow.db").write_bytes(b"")
    assert predict.local_tracking_uri() == "sqlite:///results/mlflow/mlflow.db"
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(
        yaml.safe_dump({"training": {"tracking_uri": "http://mlflow.example:5000"}})
    )
    assert predict.local_tracking_uri() == "http://mlflow.example:5000"
    assert predict.workflow_registry_name() == "genre-classifier"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://other:5000")
    assert predict.local_tracking_uri() == "http://other:5000"
