"""Credentials never reach a file the workflow writes: one redaction helper for URIs and text.

Redacted: the userinfo of any URI (``http://alice:s3cret@host`` -> ``http://***@host``, also an
S3 endpoint's), secret query parameters (``?token=...``, ``X-Amz-Signature=...``), S3 credentials
written as settings (``secret_access_key = ...`` of ``.dvc/config.local``, ``aws_access_key_id=...``
of an AWS credentials file), AWS access key ids (``AKIA...``), and the values of secret-looking
environment variables (``MLFLOW_TRACKING_TOKEN``, ``AWS_ACCESS_KEY_ID``, ``*_PASSWORD``,
``*_SECRET*``, ``*_KEY``...) and the passwords inside URIs held in the environment, wherever they
appear in the text.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s?#'\"]+@")
_SECRET_QUERY = re.compile(
    r"(?i)(?P<key>[?&][a-z0-9_.-]*(?:token|password|passwd|secret|signature|credential|api_?key)"
    r"[a-z0-9_.-]*=)[^&#\s'\"]+"
)
# S3 credentials as settings: DVC's remote options (access_key_id, secret_access_key,
# session_token), an AWS credentials file's (aws_access_key_id, ...), boto's keyword arguments.
_SECRET_SETTING = re.compile(
    r"(?i)(?P<key>\b(?:aws_)?(?:secret_access_key|access_key_id|session_token|security_token)"
    r"['\"]?\s*[=:]\s*['\"]?)[^\s'\",}]+"
)
# AWS access key ids (long-term AKIA..., temporary ASIA...)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_SECRET_NAME = re.compile(r"(?i)(TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|_KEY$|APIKEY|ACCESS_KEY)")
# Shorter values (e.g. "1", "true") would mask unrelated text.
MIN_SECRET_LENGTH = 6


def secret_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of secret-looking variables, and passwords of URIs in ``environ``."""
    environ = os.environ if environ is None else environ
    secrets = set()
    for name, value in environ.items():
        # AWS_SHARED_CREDENTIALS_FILE & co. name where a secret is, not the secret
        if _SECRET_NAME.search(name) and not name.upper().endswith("_FILE"):
            secrets.add(value)
        if "://" in value and "@" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                continue
            if password:
                secrets.update({password, unquote(password)})
    return {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with URI credentials, secret query values and secret env values masked."""
    if not text:
        return text
    text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    text = _SECRET_QUERY.sub(rf"\g<key>{MASK}", text)
    text = _SECRET_SETTING.sub(rf"\g<key>{MASK}", text)
    text = _AWS_KEY_ID.sub(MASK, text)
    for secret in sorted(secret_values(environ), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def has_credentials(uri: str) -> bool:
    return redact(uri, environ={}) != uri


class RedactingFilter(logging.Filter):
    """Redacts the message of every record of the logger it is on, whatever handler gets it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


def redact_logger(name: str) -> None:
    """Redact what logger ``name`` says (a library's thread that names URIs in its warnings)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())


class RedactingStream:
    """A text stream that redacts everything written to it before passing it on."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def __getattr__(self, name):
        return getattr(self._stream, name)
