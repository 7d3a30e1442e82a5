"""A git + DVC data repository with a local DVC remote: how the demo data and the tests version
audio.

Real projects do the same with their own remote (S3, SSH, ...): ``dvc add`` the audio directory,
commit the ``.dvc`` file, ``dvc push``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REMOTE_NAME = "storage"


def dvc_executable() -> str:
    """``dvc`` of this Python environment (it need not be activated), else the one on PATH."""
    beside = Path(sys.executable).with_name("dvc")
    return str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")


def _run(command: list[str], cwd: Path) -> str:
    if command[0] == "dvc":
        command = [dvc_executable(), *command[1:]]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(command)}` failed in {cwd} (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def init_data_repo(repo: str | Path, remote: str | Path) -> Path:
    """``git init`` + ``dvc init`` at ``repo``, with ``remote`` (a directory) as default remote."""
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    _run(["git", "init", "-q", "-b", "main"], repo)
    _run(["git", "config", "user.email", "workflow@genre-classification.invalid"], repo)
    _run(["git", "config", "user.name", "genre-classification demo"], repo)
    _run(["dvc", "init", "-q"], repo)
    _run(["dvc", "config", "core.analytics", "false"], repo)
    _run(["dvc", "remote", "add", "-d", REMOTE_NAME, str(Path(remote).resolve())], repo)
    _run(["git", "add", ".dvc", ".dvcignore"], repo)
    _run(["git", "commit", "-q", "-m", "Initialise DVC"], repo)
    return repo


def add_and_push(repo: str | Path, target: str, message: str) -> str:
    """``dvc add`` + git commit + ``dvc push`` of ``repo/target``; returns the git commit."""
    repo = Path(repo)
    _run(["dvc", "add", "-q", target], repo)
    _run(["git", "add", f"{target}.dvc", ".gitignore"], repo)
    _run(["git", "commit", "-q", "-m", message], repo)
    _run(["dvc", "push", "-q"], repo)
    return _run(["git", "rev-parse", "HEAD"], repo).strip()


def drop_local_copy(repo: str | Path, target: str) -> None:
    """Remove the workspace copy and the local cache, so only the remote holds the data."""
    repo = Path(repo)
    shutil.rmtree(repo / target, ignore_errors=True)
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
