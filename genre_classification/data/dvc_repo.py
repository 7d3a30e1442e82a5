"""A git + DVC data repository with a local DVC remote: how the demo data and the tests version
audio.

Real projects do the same with their own remote (S3, SSH, ...): ``dvc add`` the audio directory,
commit the ``.dvc`` file, ``dvc push``.
"""

from __future__ import annotations

import os
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


# --- fetching files of a tracked directory, shard by shard ------------------------------------


def cache_and_remote(repo: str | Path, site_cache_dir: str | Path) -> tuple[Path, str, str]:
    """The object directory of ``repo``'s local DVC cache (``<cache>/files/md5``; ``cache.dir``
    may move it) and the default remote's name and URL (``-`` when there is none)."""
    from dvc.repo import Repo

    config = {"core": {"site_cache_dir": str(site_cache_dir)}}
    with Repo(str(repo), config=config) as project:
        objects = Path(project.cache.local.path)
        name = project.config["core"].get("remote") or "-"
        url = project.config["remote"].get(name, {}).get("url", "-")
    return objects, name, url


def object_path(objects: Path, md5: str) -> Path:
    """Where DVC keeps the object of content ``md5`` below the cache's object directory."""
    return objects / md5[:2] / md5[2:]


def dvc_fetch(repo: Path, targets: list[str], site_cache_dir: Path) -> subprocess.CompletedProcess:
    """``dvc fetch`` of ``targets`` into the cache (one call, DVC's parallel transfer; it waits
    for the repository lock that other fetches hold). It never touches the workspace. DVC keeps
    its per-repository state (data index, remote listings) in ``site_cache_dir``."""
    command = [dvc_executable(), "--wait-for-lock", "fetch", *targets]
    env = {**os.environ, "DVC_SITE_CACHE_DIR": str(Path(site_cache_dir).resolve())}
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, env=env)


def place_file(source: Path, dest: Path) -> bool:
    """Copy the cache object ``source`` to the workspace file ``dest``: to a temporary file
    beside it, then renamed, so that ``dest`` is never partly written; writable, with the
    object's mtime. A ``dest`` of the object's size and mtime is left alone (returns False)."""
    stat = source.stat()
    try:
        present = dest.stat()
        if (present.st_size, present.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            return False
    except FileNotFoundError:
        pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
        os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return True
