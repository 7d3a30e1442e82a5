"""What produced a result: git commit, data version and package versions."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = (
    "genre-classification",
    "snakemake",
    "tensorflow",
    "keras",
    "librosa",
    "h5py",
    "mlflow",
    "dvc",
    "evidently",
    "numpy",
    "pandas",
)


def git_commit(path: str | Path = ".") -> str | None:
    """Commit of the git checkout holding ``path``, with ``-dirty`` if it has local changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if status else commit


def read_data_version(path: str | Path) -> dict:
    """The data version written by the ``collect_features`` rule (docs/CONTRACTS.md)."""
    return json.loads(Path(path).read_text())


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def code_commit(repo: str | Path = ".") -> str | None:
    """Git commit of the working directory's checkout, else of the checkout holding this package."""
    return git_commit(repo) or git_commit(Path(__file__).resolve().parent)


def workflow_version() -> str:
    """The release of the workflow and package (``genre_classification.__version__``)."""
    from genre_classification import __version__

    return __version__


def result_provenance(data_version_path: str | Path) -> dict:
    """What every result file records about where it came from."""
    return {
        "data_version": read_data_version(data_version_path),
        "workflow_version": workflow_version(),
        "git_commit": code_commit("."),
        "packages": package_versions(),
    }
