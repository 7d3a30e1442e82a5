"""The registered model takes audio: its python_function flavor (genre_classification.audio_model)
gives the `predict` command's genres and probabilities, loaded in-process and served over HTTP
by a real `mlflow models serve` (tiny model trained by the real training code, test_predict)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, free_port
from genre_classification.evaluation import registry
from test_predict import read_rows, run_cli, trained  # noqa: F401 (trained: the fixture)

NAME = "genre-audio-test"
CHAMPION_URI = f"models:/{NAME}@{registry.CHAMPION}"
SERVE_TIMEOUT_S = 180


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


def post_json(url: str, body: dict, timeout: float = 30) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_mlflow_models_serve_answers_with_the_genre_of_an_audio_file(champion, tmp_path):
    clip = champion["audio"][0]
    expected = cli_rows(champion, [clip], tmp_path)[clip.name]

    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": champion["uri"]}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                CHAMPION_URI,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=True,  # its own process group: the server and its workers stop
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve did not start:\n{log.read_text()}")
            time.sleep(1)
        started = time.monotonic()
        body = {
            "dataframe_records": [
                {"audio": base64.b64encode(clip.read_bytes()).decode(), "name": clip.name}
            ],
            "params": {"top_k": 3},
        }
        try:
            answer = post_json(f"{url}/invocations", body)
        except urllib.error.HTTPError as error:
            pytest.fail(f"HTTP {error.code}: {error.read().decode()}\n{log.read_text()}")
        print(f"served answer in {time.monotonic() - started:.2f} s: {answer}")
        (row,) = answer["predictions"]
        assert row["error"] == ""
        assert row["genre"] == expected["genre"]
        assert f"{row['probability']:.6f}" == expected["probability"]
        assert row["top_k"] == expected["top_k"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
