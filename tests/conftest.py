"""Shared fixtures: a tiny versioned data set (real git + DVC with a local remote), a runner
for the real workflow in a temporary working directory, and a real local `mlflow server`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from genre_classification.data.demo_data import (  # noqa: F401 (BAD_FILES: tests import it)
    BAD_FILES,
    TINY_DATA,
    make_demo_repo,
)
from genre_classification.features.features import FeatureParams

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
BIN = Path(sys.executable).parent
TINY_GENRES = TINY_DATA["genres"]
TINY_CLIPS = TINY_DATA["clips_per_genre"]
# The small test configuration (snakemake-workflows' .test/): an overlay on config/config.yaml
# whose paths are relative to the working directory; its data set is made by tiny_data_repo.
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"
# A model small enough to train in seconds on the tiny data set.
TINY_MODEL = {
    "architecture": "cnn",
    "optimizer": "adam",
    "learning_rate": 0.005,
    "epochs": 3,
    "batch_size": 16,
    "early_stopping": {"patience": 10},
    "seed": 1,
    "mixed_precision": False,
    "options": {"filters": [4, 8]},
}
# Feature parameters small enough for unit tests on short clips.
SMALL_FEATURES = FeatureParams(
    sample_rate=22050, n_fft=1024, hop_length=512, n_mels=64, segment_seconds=1.0
)


@pytest.fixture
def tiny_data_repo(tmp_path: Path) -> dict:
    """The tiny data set (with 3 bad files) where TEST_CONFIG expects it in the working directory
    ``tmp_path / "work"`` (as `make test-data` puts it in .test/): a git + DVC data repo pushed to
    a local remote beside it; the workspace copy and cache are dropped so the workflow's
    `dvc pull` really fetches."""
    dvc = yaml.safe_load(TEST_CONFIG.read_text())["data"]["dvc"]
    repo = tmp_path / "work" / dvc["repo"]
    remote = repo.parent / "dvc-remote"
    make_demo_repo(repo, remote, dvc["target"], **TINY_DATA)
    return {"repo": repo, "remote": remote, "target": dvc["target"]}


@pytest.fixture
def workflow_dir(tmp_path: Path, tiny_data_repo: dict):
    """A working directory with the tiny data set and the small test configuration: the config
    files config/config.yaml (the repository's) and config/test.yaml (TEST_CONFIG); returns a
    runner."""
    workdir = tmp_path / "work"
    (workdir / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", workdir / "config" / "config.yaml")
    shutil.copy(TEST_CONFIG, workdir / "config" / "test.yaml")
    return SnakemakeRunner(workdir, tiny_data_repo)


class SnakemakeRunner:
    def __init__(self, workdir: Path, data: dict | None = None):
        self.workdir = workdir
        self.data = data
        self.configfiles = ["config/config.yaml", "config/test.yaml"]

    def overlay(self, name: str, values: dict) -> None:
        (self.workdir / "config" / name).write_text(yaml.safe_dump(values))
        self.configfiles.append(f"config/{name}")

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [
            str(BIN / "snakemake"),
            "--snakefile",
            str(SNAKEFILE),
            "--configfile",
            *self.configfiles,
            *args,
        ]
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        result = subprocess.run(command, cwd=self.workdir, capture_output=True, text=True, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
        return result


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """Job counts per rule from the 'Job stats' table of a dry run."""
    counts, in_table = {}, False
    for line in dry_run_output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
        elif in_table and len(parts) == 2 and parts[1].isdigit():
            if parts[0] != "total":
                counts[parts[0]] = int(parts[1])
        elif in_table and counts and not parts:
            break
    return counts


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_stays_per_test():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a workflow started by a later test
    would inherit it and log to that test's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


REQUIRE_SYSTEM_DEPS = "GENRE_REQUIRE_SYSTEM_DEPS"


def skip_unless_required(reason: str) -> None:
    """Skip for a missing Debian package; fail instead where CI requires it (it sets the variable:
    `make system-deps` installs graphviz and chromium there)."""
    if os.environ.get(REQUIRE_SYSTEM_DEPS) == "1":
        pytest.fail(f"{reason} ({REQUIRE_SYSTEM_DEPS}=1 makes this a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture
def config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 that a test can stop (an outage) and start again on
    the same port and store."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 120) -> str:
        log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'server.db'}",
                "--artifacts-destination",
                str(self.root / "server-artifacts"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the server and its workers stop together
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.url
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not start:\n{self.log()}")
            time.sleep(0.5)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        return (self.root / "server.log").read_text()


@pytest.fixture
def mlflow_server_process(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_server(mlflow_server_process) -> str:
    return mlflow_server_process.url
