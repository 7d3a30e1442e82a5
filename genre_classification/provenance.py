"""What produced a result: data version, package versions, and the code and environment that ran
(``code_provenance``: code fingerprint, git commit and dirty flag, lock sha256, package version;
inside the container image the image's own record; the GPU where one is visible)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from genre_classification import __version__, code_version

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


# Set by the image's %environment (containers/genre-classification.def): its record of itself.
IMAGE_INFO_ENV = "GENRE_CLASSIFICATION_IMAGE_INFO"
# Written beside an exported copy of the package (``code_export``): the checkout it came from.
SOURCE_INFO = "genre-classification-source.json"
LOCK_FILE = "requirements.lock"


def git_state(path: str | Path = ".") -> dict | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``path`` (dirty: tracked
    files changed), or None outside a checkout."""
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
    return {"commit": commit, "dirty": bool(status)}


def git_commit(path: str | Path = ".") -> str | None:
    """Commit of the git checkout holding ``path``, with ``-dirty`` if it has local changes."""
    state = git_state(path)
    if state is None:
        return None
    return f"{state['commit']}-dirty" if state["dirty"] else state["commit"]


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
    source = source_info()
    if source is not None and source.get("git_commit"):  # an exported copy (container jobs)
        return source["git_commit"] + ("-dirty" if source.get("git_dirty") else "")
    return git_commit(repo) or git_commit(Path(__file__).resolve().parent)


def workflow_version() -> str:
    """The release of the workflow and package (``genre_classification.__version__``)."""

    return __version__


def file_sha256(path: str | Path) -> str | None:
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def package_dir() -> Path:
    return Path(__file__).resolve().parent


def source_info() -> dict | None:
    """The record beside an exported copy of the package (what the container jobs import):
    the checkout it was copied from (``code_export.export_package``); None for a checkout."""
    path = package_dir().parent / SOURCE_INFO
    return json.loads(path.read_text()) if path.is_file() else None


def image_info() -> dict | None:
    """The container image's record of itself (lock sha256, package version, ...), written at
    build time and named by ``$GENRE_CLASSIFICATION_IMAGE_INFO``; None outside the image."""
    path = os.environ.get(IMAGE_INFO_ENV)
    if not path or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def gpu_info() -> list[dict[str, str]]:
    """Name and driver of every visible GPU (``nvidia-smi``; without it, TensorFlow's device
    details if TensorFlow is already imported); [] where there is none."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        gpus = []
        for line in out.splitlines():
            name, _, driver = line.rpartition(",")
            if name.strip():
                gpus.append({"name": name.strip(), "driver_version": driver.strip()})
        if gpus:
            return gpus
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            devices = tf.config.list_physical_devices("GPU")
            return [
                {"name": tf.config.experimental.get_device_details(d).get("device_name", d.name)}
                for d in devices
            ]
        except Exception:  # noqa: BLE001 - provenance never fails a job
            return []
    return []


def package_code() -> dict:
    """The package's fingerprint and version, the git commit and dirty flag of its checkout and
    that checkout's lock sha256 (an exported copy: those of the checkout it came from)."""

    source = source_info()
    if source is not None:  # an exported copy: the checkout it came from
        git = {"commit": source.get("git_commit"), "dirty": source.get("git_dirty")}
        checkout_lock = source.get("lock_sha256")
    else:
        checkout = package_dir().parent
        # Only a checkout's own git: an installed package (site-packages) has none.
        git = (git_state(checkout) if (checkout / ".git").exists() else None) or {
            "commit": None,
            "dirty": None,
        }
        checkout_lock = file_sha256(checkout / LOCK_FILE)
    return {
        "fingerprint": code_version.package_fingerprint(),
        "package_version": workflow_version(),
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "lock_sha256": checkout_lock,
    }


def code_provenance() -> dict:
    """What ran: ``code`` (``package_code``; inside the image the lock is the image's, the
    checkout's as ``checkout_lock_sha256``), ``image`` (the image's own record, inside the
    container only) and ``gpu`` (where one is visible). The one record of results
    (``result_provenance``), MLflow runs (``tracking.provenance_tags``) and registered model
    versions (``registry.version_tags``)."""
    code = package_code()
    checkout_lock = code["lock_sha256"]
    record: dict = {"code": code}
    image = image_info()
    if image is not None:
        record["image"] = image
        code["lock_sha256"] = image.get("lock_sha256")
        code["checkout_lock_sha256"] = checkout_lock
    gpus = gpu_info()
    if gpus:
        record["gpu"] = gpus
    return record


def result_provenance(data_version_path: str | Path) -> dict:
    """What every result file records about where it came from."""
    return {
        "data_version": read_data_version(data_version_path),
        "workflow_version": workflow_version(),
        "git_commit": code_commit("."),
        "packages": package_versions(),
        **code_provenance(),
    }


def provenance_tags(record: dict) -> dict[str, str]:
    """``code_provenance()`` (or a result holding it) as flat string tags for MLflow runs and
    model versions: ``code.fingerprint``, ``code.git_commit``, ``code.git_dirty``,
    ``code.lock_sha256``, ``image.<key>``, ``gpu.<i>.name``/``driver_version``."""
    tags = {}
    for key, value in (record.get("code") or {}).items():
        if value is not None:
            tags[f"code.{key}"] = str(value).lower() if isinstance(value, bool) else str(value)
    for key, value in (record.get("image") or {}).items():
        tags[f"image.{key}"] = str(value)
    for i, gpu in enumerate(record.get("gpu") or []):
        for key, value in gpu.items():
            tags[f"gpu.{i}.{key}"] = str(value)
    return tags
