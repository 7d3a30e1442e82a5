"""A data repository's DVC remote moved to S3: what `scripts/lab_stack.sh push-demo` does to the
demo data (and the lab-stack test to the tiny data set).

The remote's URL and endpoint go into ``.dvc/config`` (committed); the credentials do not: DVC
and boto read them from where they always look (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``.dvc/config.local``, an AWS profile).

    python -m genre_classification.lab push-demo --repo results/demo-data/repo \\
        --url s3://genre-lab/dvc --endpoint http://127.0.0.1:9000 [--tiny]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from genre_classification.data.demo_data import TINY_DATA, make_demo_repo
from genre_classification.data.dvc_repo import dvc_executable
from genre_classification.redact import redact

S3_REMOTE = "lab"


def _run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            redact(
                f"`{' '.join(command)}` failed in {cwd} (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        )
    return result.stdout


def use_s3_remote(
    repo: str | Path, url: str, endpoint: str | None = None, name: str = S3_REMOTE
) -> None:
    """Push what ``repo`` tracks to the S3 remote ``url`` (``endpoint``: a server other than
    AWS's) and make it the default remote in place of the old one; the local cache is dropped
    again, so the workflow's pull really fetches from S3."""
    repo = Path(repo)
    dvc = dvc_executable()
    old = _run([dvc, "remote", "default"], repo).strip()
    _run([dvc, "fetch", "-q", *(["-r", old] if old else [])], repo)
    remotes = _run([dvc, "remote", "list"], repo).split()
    if name in remotes:
        _run([dvc, "remote", "remove", name], repo)
    _run([dvc, "remote", "add", "-d", name, url], repo)
    if endpoint:
        _run([dvc, "remote", "modify", name, "endpointurl", endpoint], repo)
    _run([dvc, "push", "-q", "-r", name], repo)
    if old and old != name:
        _run([dvc, "remote", "remove", old], repo)
    _run(["git", "add", ".dvc/config"], repo)
    _run(["git", "commit", "-q", "-m", f"DVC remote {name}: {url}"], repo)
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)


def push_demo(repo: Path, url: str, endpoint: str | None, tiny: bool, force: bool) -> str:

    local_remote = repo.parent / "dvc-remote"
    kwargs = dict(TINY_DATA) if tiny else {}
    make_demo_repo(repo, local_remote, force=force, **kwargs)
    use_s3_remote(repo, url, endpoint)
    shutil.rmtree(local_remote, ignore_errors=True)
    return f"demo data in {repo} pushed to the DVC remote {S3_REMOTE} = {url} ({endpoint or 'AWS'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genre_classification.lab")
    sub = parser.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push-demo", help="demo data versioned with DVC on an S3 remote")
    push.add_argument("--repo", type=Path, required=True)
    push.add_argument("--url", required=True, help="s3://bucket/path")
    push.add_argument("--endpoint", help="http://host:port of an S3 server other than AWS")
    push.add_argument("--tiny", action="store_true", help="the tiny test data set")
    push.add_argument("--force", action="store_true", help="recreate an existing repository")
    args = parser.parse_args(argv)
    print(push_demo(args.repo, args.url, args.endpoint, args.tiny, args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
