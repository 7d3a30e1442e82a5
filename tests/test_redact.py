"""One redaction helper: URI userinfo, secret query values and secret environment values."""

from __future__ import annotations

import io
import json

import pytest

from genre_classification import tracking
from genre_classification.redact import RedactingStream, has_credentials, redact


def test_userinfo_and_query_secrets_redacted():
    env = {}
    assert (
        redact("http://alice:s3cret-token@127.0.0.1:5000/x", env) == "http://***@127.0.0.1:5000/x"
    )
    assert redact("see https://tok@host/api and more", env) == "see https://***@host/api and more"
    assert (
        redact("https://h/p?run=1&access_token=abc123&x=2", env)
        == "https://h/p?run=1&access_token=***&x=2"
    )
    assert redact("API request to 'http://a:b@h:1/api' failed", env) == (
        "API request to 'http://***@h:1/api' failed"
    )
    # nothing to redact: unchanged
    for text in ("sqlite:///results/mlflow/mlflow.db", "http://127.0.0.1:5000", "a@b.org", ""):
        assert redact(text, env) == text
    assert has_credentials("http://u:p@h") and not has_credentials("http://h")


def test_secret_environment_values_redacted():
    env = {
        "MLFLOW_TRACKING_TOKEN": "tok-0123456789",
        "AWS_SECRET_ACCESS_KEY": "AKIAsecretvalue",
        "MLFLOW_TRACKING_URI": "http://alice:p%40ss-word@h:5000",
        "HOME": "/home/alice",
        "SHORT_TOKEN": "1",  # too short to mask
    }
    text = "tok-0123456789 AKIAsecretvalue p@ss-word /home/alice token 1"
    assert redact(text, env) == "*** *** *** /home/alice token 1"


def test_redacting_stream():
    buffer = io.StringIO()
    stream = RedactingStream(buffer)
    assert stream.write("View run at: http://bob:hunter22@h/#/runs/1\n") > 0
    stream.flush()
    assert buffer.getvalue() == "View run at: http://***@h/#/runs/1\n"


def test_run_info_redacted_and_real_uri_recovered(tmp_path, monkeypatch):
    secret_uri = "http://alice:s3cret-token@127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret_uri)
    path = tmp_path / "run.json"
    info = tracking.write_run_info(path, "r1", "0", secret_uri)
    assert "s3cret" not in path.read_text()
    assert json.loads(path.read_text())["tracking_uri"] == "http://***@127.0.0.1:5000"
    assert tracking.run_tracking_uri(info) == secret_uri  # from the environment
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(tracking.TrackingServerError, match="set MLFLOW_TRACKING_URI") as error:
        tracking.run_tracking_uri(info)
    assert "s3cret" not in str(error.value)
    plain = {"run_id": "r2", "tracking_uri": "sqlite:////tmp/x.db"}
    assert tracking.run_tracking_uri(plain) == "sqlite:////tmp/x.db"


def test_redacted_logger_masks_credentials_for_every_handler(caplog):
    import logging

    from genre_classification.redact import redact_logger

    name = "mlflow.system_metrics.system_metrics_monitor"
    redact_logger(name)
    redact_logger(name)  # once is enough
    assert len(logging.getLogger(name).filters) == 1
    with caplog.at_level(logging.WARNING):
        logging.getLogger(name).warning("Failed to get mlflow run: %s", "http://al:pw-42@h/api")
    assert "pw-42" not in caplog.text and "http://***@h/api" in caplog.text


def test_s3_credentials_redacted():
    env = {
        "AWS_ACCESS_KEY_ID": "LABKEYID0123456789",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY",
        "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEJr-session",
    }
    text = (
        "key LABKEYID0123456789 secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY "
        "token FwoGZXIvYXdzEJr-session"
    )
    assert redact(text, env) == "key *** secret *** token ***"
    # a file's path is not the secret in it
    assert redact(
        "/home/a/.aws/credentials", {"AWS_SHARED_CREDENTIALS_FILE": "/home/a/.aws/credentials"}
    ) == ("/home/a/.aws/credentials")
    # DVC's remote options (.dvc/config.local), an AWS credentials file, boto keyword arguments
    none = {}
    assert (
        redact("    secret_access_key = abcDEF123/xyz\n", none) == "    secret_access_key = ***\n"
    )
    assert redact("access_key_id = LABKEYID0123456789", none) == "access_key_id = ***"
    assert redact("aws_secret_access_key=abc123def", none) == "aws_secret_access_key=***"
    assert redact("{'aws_access_key_id': 'LABKEY99'}", none) == "{'aws_access_key_id': '***'}"
    assert redact("session_token: tok123456", none) == "session_token: ***"
    assert redact("id AKIAIOSFODNN7EXAMPLE in", none) == "id *** in"
    # an S3 endpoint with user:password, a presigned URL
    assert (
        redact("endpointurl = http://minio:s3cret-pw@127.0.0.1:9000", none)
        == "endpointurl = http://***@127.0.0.1:9000"
    )
    url = "http://h:9000/b/k?X-Amz-Credential=LABKEY%2F2026&X-Amz-Signature=abcdef0123&x=1"
    assert redact(url, none) == "http://h:9000/b/k?X-Amz-Credential=***&X-Amz-Signature=***&x=1"
    # what must stay: the remote, the endpoint, the option names
    for text in (
        "url = s3://genre-lab/dvc",
        "endpointurl = http://127.0.0.1:9000",
        "access_key_id",
    ):
        assert redact(text, none) == text
