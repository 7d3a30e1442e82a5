"""Wrong S3 credentials for the data repository's DVC remote (a real S3 server, `rclone serve
s3`): the workflow stops before anything runs with one message that names the remote and where
DVC reads the credentials, and shows no key."""

from __future__ import annotations

import shutil

import pytest

from genre_classification.data.dvc_remote import remote_help
from genre_classification.lab import S3_REMOTE, use_s3_remote

pytestmark = pytest.mark.slow


def test_wrong_s3_credentials_one_clear_message(workflow_dir, s3_server, monkeypatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    repo = workflow_dir.data["repo"]
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    use_s3_remote(repo, f"s3://{s3_server.bucket}/dvc", s3_server.endpoint)
    shutil.rmtree(workflow_dir.data["remote"])
    wrong_key, wrong_secret = "LABWRONGKEY0000001", "wrong-secret-value-4711"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", wrong_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)

    failed = workflow_dir("--dry-run", check=False)
    console = failed.stdout + failed.stderr
    assert failed.returncode != 0
    expected = (
        f"the DVC remote '{S3_REMOTE}' (s3://{s3_server.bucket}/dvc at {s3_server.endpoint}) "
        "refused the S3 credentials"
    )
    assert expected in console, console
    assert (
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; set: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"
        in (console)
    )
    assert ".dvc/config.local" in console and "/nonexistent" in console
    assert console.count("refused the S3 credentials") == 1, console
    for secret in (wrong_key, wrong_secret, s3_server.secret_key):
        assert secret not in console


def test_credentials_from_an_aws_profile(workflow_dir, s3_server, monkeypatch, tmp_path):
    """The keys in an AWS profile (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE), none in the
    environment or .dvc/config.local: the workflow lists the S3 remote at parse time and
    `dvc pull` (what fetch_audio runs) fetches from it."""
    import subprocess

    from genre_classification.data.dvc_repo import dvc_executable

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    repo = workflow_dir.data["repo"]
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    use_s3_remote(repo, f"s3://{s3_server.bucket}/dvc", s3_server.endpoint)
    shutil.rmtree(workflow_dir.data["remote"])
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[lab]\naws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "lab")

    dry = workflow_dir("--dry-run")
    assert "fetch_audio" in dry.stdout
    pulled = subprocess.run(
        [dvc_executable(), "pull", "genres/disco/disco.00000.wav"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert pulled.returncode == 0, pulled.stderr
    assert (repo / "genres/disco/disco.00000.wav").stat().st_size > 0
    assert s3_server.secret_key not in dry.stdout + dry.stderr + pulled.stdout + pulled.stderr


def test_remote_help_without_a_credential_error(tmp_path):
    assert remote_help(tmp_path, "boom") == "Check the DVC remote (`dvc remote list`, credentials)."
