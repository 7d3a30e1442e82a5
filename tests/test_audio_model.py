"""The registered model takes audio: its python_function flavor (genre_classification.audio_model)
gives the `predict` command's genres and probabilities, loaded in-process and served over HTTP
by a real `mlflow models serve` (tiny model trained by the real training code, test_predict)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import yaml

from _serving import serve_clip, served
from genre_classification.evaluation import registry
from test_predict import read_rows, run_cli, trained  # noqa: F401 (trained: the fixture)

NAME = "genre-audio-test"
CHAMPION_URI = f"models:/{NAME}@{registry.CHAMPION}"


@pytest.fixture(scope="module")
def champion(trained):  # noqa: F811 (the imported fixture)
    """The tiny model registered as the champion of NAME in its local store."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", trained["uri"])
        decision = registry.register_and_promote(
            trained["run_info"], trained["metrics"], NAME, trained["uri"]
        )
    assert decision.moved
    return trained


def cli_rows(trained, files, tmp_path) -> dict[str, dict]:  # noqa: F811
    """`genre-classification predict` on ``files`` with the champion, rows by file name."""
    out = tmp_path / "cli.csv"
    env = {"MLFLOW_TRACKING_URI": trained["uri"]}
    result = run_cli("--model", CHAMPION_URI, "--output", out, *files, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return {Path(row["path"]).name: row for row in read_rows(out.read_text())}


def test_pyfunc_takes_paths_and_base64_audio(champion, tmp_path, monkeypatch):
    import mlflow
    import pandas as pd
    from mlflow.models import Model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion["uri"])
    mlflow.set_tracking_uri(champion["uri"])
    files = champion["audio"][:4]
    expected = cli_rows(champion, files, tmp_path)

    model = mlflow.pyfunc.load_model(CHAMPION_URI)
    meta = model.metadata
    assert set(meta.flavors) >= {"python_function", "tensorflow"}
    assert meta.flavors["python_function"]["loader_module"] == "genre_classification.audio_model"
    assert meta.metadata == json.loads(champion["model"].with_name("features.json").read_text())
    assert Model.load(mlflow.artifacts.download_artifacts(CHAMPION_URI)).signature.params

    by_path = model.predict(pd.DataFrame({"path": [str(f) for f in files]}), params={"top_k": 2})
    encoded = [base64.b64encode(f.read_bytes()).decode() for f in files]
    by_bytes = model.predict(pd.DataFrame({"audio": encoded, "name": [f.name for f in files]}))
    for out, k in ((by_path, 2), (by_bytes, 3)):
        assert list(out.columns) == ["path", "genre", "probability", "top_k", "n_segments", "error"]
        for row in out.itertuples():
            cli = expected[Path(row.path).name]
            assert row.error == ""
            assert row.genre == cli["genre"]
            assert f"{row.probability:.6f}" == cli["probability"]
            assert row.top_k == ";".join(cli["top_k"].split(";")[:k])
            assert row.n_segments == int(cli["n_segments"])

    # Unusable input: one row with the reason, the other rows still answered.
    mixed = model.predict(pd.DataFrame({"audio": ["not base64!", encoded[0]]}))
    assert "not base64" in mixed.error[0] and mixed.genre[1] == by_bytes.genre[0]
    # The Keras model is still there for tensors (the predict command loads it).
    keras_model = mlflow.tensorflow.load_model(CHAMPION_URI)
    assert keras_model.output_shape[-1] == len(meta.metadata["labels"])


def test_mlflow_models_serve_answers_with_the_genre_of_an_audio_file(champion, tmp_path):
    clip = champion["audio"][0]
    expected = cli_rows(champion, [clip], tmp_path)[clip.name]
    env = {**os.environ, "MLFLOW_TRACKING_URI": champion["uri"]}
    with served(CHAMPION_URI, env, tmp_path) as (url, log):
        row = serve_clip(url, log, clip)
    assert row["error"] == ""
    assert row["genre"] == expected["genre"]
    assert f"{row['probability']:.6f}" == expected["probability"]
    assert row["top_k"] == expected["top_k"]


def test_the_logged_model_carries_its_code_and_pinned_requirements(champion, tmp_path):
    import mlflow

    mlflow.set_tracking_uri(champion["uri"])
    local = Path(mlflow.artifacts.download_artifacts(CHAMPION_URI, dst_path=str(tmp_path)))
    code = local / "code" / "genre_classification"
    assert (code / "audio_model.py").is_file() and (code / "predict" / "predict.py").is_file()
    assert not list(code.rglob("__pycache__"))
    assert (
        yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]["code"]
        == "code"
    )
    requirements = (local / "requirements.txt").read_text().split()
    for name in ("tensorflow", "keras", "librosa", "mlflow", "h5py", "pandas", "soundfile"):
        assert any(line.startswith(f"{name}==") for line in requirements), name
