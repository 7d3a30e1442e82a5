"""A real `mlflow models serve` of a registered model, for the tests that call it over HTTP."""

from __future__ import annotations

import base64
import contextlib
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

SERVE_TIMEOUT_S = 180
SHADOWED = "the installed package was imported"


def post_json(url: str, body: dict, timeout: float = 30) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def served(model_uri: str, env: dict, workdir: Path):
    """``mlflow models serve`` of ``model_uri`` on a free port of 127.0.0.1: yields its URL and
    log. The served model is self-contained: it carries the package code (MLflow's code_paths,
    first on sys.path when it loads) and its pinned requirements. A package of the same name
    that refuses to import shadows the installed one in the server's process."""
    port = free_port()
    log = workdir / "serve.log"
    shadow = workdir / "shadow" / "genre_classification"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f"raise ImportError({SHADOWED!r})")
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(shadow.parent)}
    command = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    with open(log, "w") as out:
        # its own process group: the server and its workers stop together
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
            start_new_session=True,
        )  # fmt: skip
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
        yield url, log
        assert SHADOWED not in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def serve_clip(url: str, log: Path, clip: Path) -> dict:
    """The served model's row for one clip, sent as base64 bytes."""
    body = {
        "dataframe_records": [
            {"audio": base64.b64encode(clip.read_bytes()).decode(), "name": clip.name}
        ],
        "params": {"top_k": 3},
    }
    started = time.monotonic()
    try:
        answer = post_json(f"{url}/invocations", body)
    except urllib.error.HTTPError as error:
        pytest.fail(f"HTTP {error.code}: {error.read().decode()}\n{log.read_text()}")
    print(f"served answer in {time.monotonic() - started:.2f} s: {answer}")
    (row,) = answer["predictions"]
    return row
