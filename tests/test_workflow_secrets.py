"""The real workflow against a real `mlflow server` with a credential in MLFLOW_TRACKING_URI:
the run is logged (a plain server ignores basic auth, so the URI works), and the secret is in no
file under results/, logs/, .snakemake/, nor in the Snakemake report or the MLflow run. Then the
server goes away: a forced rerun of the training job fails at its start, fast, with a message on
the console that names the (redacted) server and what to do."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from conftest import TINY_CLIPS, TINY_GENRES, TINY_MODEL, files_containing

pytestmark = pytest.mark.slow

SECRET = "s3cret-token-4711"


def test_secret_found_nowhere_and_outage_reported(workflow_dir, mlflow_server_process, monkeypatch):
    import mlflow

    url = mlflow_server_process.url
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url.replace("http://", f"http://alice:{SECRET}@"))
    workflow_dir.overlay(
        "training.yaml",
        {"training": {"run": ["tiny"], "models": {"tiny": TINY_MODEL}, "resources": {"gpu": 0}}},
    )
    target = "results/reports/tiny/classification.json"
    result = workflow_dir("--cores", "2", target)
    workflow_dir("--report", "report.html", target)
    work = workflow_dir.workdir

    info = json.loads((work / "results/mlflow/runs/tiny.json").read_text())
    assert info["tracking_uri"] == url.replace("http://", "http://***@")
    client = mlflow.MlflowClient(tracking_uri=url)
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["test_macro_f1"] >= 0
    artifacts = {a.path for a in client.list_artifacts(info["run_id"])}
    assert {"evaluation", "evidently"} <= artifacts  # evaluation and report logged over HTTP
    assert SECRET not in json.dumps([run.data.params, run.data.tags])

    leaks = [
        *files_containing(work / "results", SECRET),
        *files_containing(work / "logs", SECRET),
        *files_containing(work / ".snakemake", SECRET),
        *files_containing(work, SECRET),  # report.html and anything else in the working dir
    ]
    assert leaks == [], leaks
    assert SECRET not in result.stdout + result.stderr
    assert "***@127.0.0.1" in (work / "logs/train_model/tiny.log").read_text()

    mlflow_server_process.stop()
    workflow_dir.overlay("no-retry.yaml", {"training": {"retries": 0}})
    began = time.monotonic()
    failed = workflow_dir(
        "--cores", "2", "--forcerun", "train_model", "results/models/tiny/model.keras", check=False
    )
    elapsed = time.monotonic() - began
    console = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert f"MLflow tracking server {info['tracking_uri']} is unreachable" in console, console
    assert "Start the server" in console
    assert elapsed <= 60, f"snakemake took {elapsed:.0f} s to report the outage"
    print(f"workflow: outage at start reported after {elapsed:.1f} s (whole snakemake call)")
    assert SECRET not in console
    assert files_containing(work, SECRET) == []


def test_s3_remote_pulled_and_its_credentials_found_nowhere(workflow_dir, s3_server, monkeypatch):
    """The tiny data set's DVC remote on a real S3 server (`rclone serve s3`): fetch_audio pulls
    every shard from it as from a local remote, with the key pair in the data repository's
    .dvc/config.local, and no key or secret reaches a result, log, benchmark or the console.
    An endpoint with user:password first: DVC's S3 client (aiohttp) refuses credentials in the
    URL, and the failure shows no password either."""
    from genre_classification.data.dvc_repo import dvc_executable
    from genre_classification.lab import S3_REMOTE, use_s3_remote

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")  # no host profile
    repo = workflow_dir.data["repo"]
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    use_s3_remote(repo, f"s3://{s3_server.bucket}/dvc", s3_server.endpoint)
    assert any(key.startswith("dvc/files/md5/") for key in s3_server.keys("dvc/"))
    shutil.rmtree(workflow_dir.data["remote"])  # only S3 has the audio now
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    def dvc_local(option: str, value: str) -> None:
        command = [dvc_executable(), "remote", "modify", "--local", S3_REMOTE, option, value]
        subprocess.run(command, cwd=repo, check=True)

    dvc_local("access_key_id", s3_server.access_key)
    dvc_local("secret_access_key", s3_server.secret_key)
    endpoint_password = "ep-pass-0815x"
    dvc_local(
        "endpointurl", s3_server.endpoint.replace("http://", f"http://lab:{endpoint_password}@")
    )
    secrets = [s3_server.access_key, s3_server.secret_key, endpoint_password]
    work = workflow_dir.workdir
    target = "results/data/manifest.tsv"

    def leaks(secret: str) -> list[str]:
        return [
            *files_containing(work / "results", secret),
            *files_containing(work / "logs", secret),
            *files_containing(work / ".snakemake", secret),
        ]

    failed = workflow_dir("--cores", "2", target, check=False)
    assert failed.returncode != 0
    for secret in secrets:
        assert leaks(secret) == [], secret[:3]
        assert secret not in failed.stdout + failed.stderr, secret[:3]

    dvc_local("endpointurl", s3_server.endpoint)
    result = workflow_dir("--cores", "2", target)
    manifest = (work / target).read_text().splitlines()
    assert len(manifest) - 1 == len(TINY_GENRES) * TINY_CLIPS, manifest
    assert sorted((work / "results/data/fetched").glob("*.json"))
    for secret in secrets:
        assert leaks(secret) == [], secret[:3]
        assert secret not in result.stdout + result.stderr, secret[:3]
