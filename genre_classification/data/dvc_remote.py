"""What to tell a user whose DVC remote refused a listing or a pull: which remote (name, URL,
endpoint; redacted), and, when S3 refused the credentials, where DVC and boto read them.

One message instead of DVC's ``failed to load directory`` or a botocore traceback."""

from __future__ import annotations

import os
import re
from pathlib import Path

from genre_classification.redact import redact

# What S3 servers and botocore say when the keys are wrong, missing or not allowed.
_CREDENTIAL_ERROR = re.compile(
    r"InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|InvalidClientTokenId|"
    r"Unable to locate credentials|NoCredentialsError|ExpiredToken|\b403\b|Forbidden",
    re.IGNORECASE,
)


def error_text(error: BaseException | str) -> str:
    """``error`` and every exception it was raised from, as one text."""
    if isinstance(error, str):
        return error
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return "\n".join(parts)


def default_remote(repo: str | Path) -> tuple[str, dict]:
    """Name and settings (``.dvc/config`` merged with ``.dvc/config.local``) of the default
    remote of ``repo``; ``("", {})`` if there is none or the config cannot be read."""
    try:
        from dvc.config import Config

        config = Config(dvc_dir=str(Path(repo) / ".dvc"), validate=False)
        name = config["core"].get("remote", "")
        return name, dict(config["remote"].get(name, {}))
    except Exception:
        return "", {}


def credential_sources(name: str, remote: dict) -> str:
    """Where DVC reads S3 credentials for remote ``name``, in DVC's order, with what is set."""
    local = [key for key in ("access_key_id", "secret_access_key") if remote.get(key)]
    env = [key for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if os.environ.get(key)]
    profile = remote.get("profile") or os.environ.get("AWS_PROFILE") or "default"
    credentials_file = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    return (
        f"DVC reads them from (first found wins): the remote's access_key_id/secret_access_key "
        f"(.dvc/config.local: `dvc remote modify --local {name} access_key_id ...`; "
        f"set: {', '.join(local) or 'none'}); the environment (AWS_ACCESS_KEY_ID/"
        f"AWS_SECRET_ACCESS_KEY; set: {', '.join(env) or 'none'}); the AWS profile "
        f"'{profile}' in {credentials_file}"
    )


def remote_help(repo: str | Path, error: BaseException | str) -> str:
    """One paragraph naming ``repo``'s default remote, and for refused S3 credentials the
    server's reason and where credentials are read; a generic hint otherwise."""
    name, remote = default_remote(repo)
    if not name:
        return "Check the DVC remote (`dvc remote list`, credentials)."
    url = remote.get("url", "?")
    where = f"the DVC remote '{name}' ({url}"
    if remote.get("endpointurl"):
        where += f" at {remote['endpointurl']}"
    where += ")"
    text = error_text(error)
    if str(url).startswith("s3://") and (match := _CREDENTIAL_ERROR.search(text)):
        return redact(
            f"{where} refused the S3 credentials ({match.group(0)}). "
            f"{credential_sources(name, remote)}."
        )
    return redact(f"Check {where}: `dvc remote list`, its credentials.")
