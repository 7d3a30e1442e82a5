"""The package's code for the container jobs: a copy of the package Snakemake imported, in the
working directory, put on the jobs' ``PYTHONPATH`` (``workflow/rules/container.smk``).

The container image holds only the environment (containers/genre-classification.def); a job in
it imports this copy, so it runs exactly the code of the checkout the workflow runs, never an
older one baked into the image, and a code change needs no image rebuild. The copy sits in
``.snakemake/genre-classification-code/<key>/`` (the working directory is bound into every
container job, also on Slurm nodes), keyed by the package files' contents and the checkout's git
state; beside the package, ``genre-classification-source.json`` records the checkout it came
from (code fingerprint, version, git commit, dirty flag, lock sha256) for the jobs' provenance
(``provenance.code_provenance``), since the checkout itself is not visible inside the container.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from genre_classification import code_version, provenance

EXPORT_DIR = Path(".snakemake") / "genre-classification-code"
# Older copies are removed once unused this long: a job of an earlier run may still be importing
# one (Slurm jobs outlive an interrupted controller), so copies are not removed at once.
KEEP_UNUSED_SECONDS = 7 * 24 * 3600


def source_record() -> dict:
    """The checkout this package is imported from: what a copy of it records."""
    return {
        **provenance.package_code(),
        "package_dir": str(provenance.package_dir()),
        "checkout": str(provenance.package_dir().parent),
    }


def export_package(root: str | Path = EXPORT_DIR) -> Path:
    """Copy the package (every source file, ``code_version.package_files``) into
    ``root/<key>/genre_classification`` unless that copy exists; return ``root/<key>``, the
    directory to put on ``PYTHONPATH``. Atomic: a directory renamed into place, so parallel
    workflow processes (Slurm jobs parse the workflow too) never see a partial copy."""
    source = provenance.source_info()
    if source is not None:  # already running from a copy: it is the code
        return provenance.package_dir().parent
    files = code_version.package_files()
    base = provenance.package_dir()
    record = source_record()
    key = hashlib.sha256()
    for path in files:
        key.update(path.relative_to(base).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    key.update(json.dumps(record, sort_keys=True).encode())
    root = Path(root).resolve()
    target = root / key.hexdigest()[:16]
    if target.is_dir():
        os.utime(target)  # in use: not pruned
        prune_copies(root, keep=target)
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".export-"))
    try:
        code_version.copy_package(tmp)
        (tmp / provenance.SOURCE_INFO).write_text(json.dumps(record, indent=1) + "\n")
        os.chmod(tmp, 0o755)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    prune_copies(root, keep=target)
    return target


def prune_copies(root: Path, keep: Path, max_age: float = KEEP_UNUSED_SECONDS) -> list[Path]:
    """Remove the copies under ``root`` other than ``keep`` that no run has used for
    ``max_age`` seconds (a copy's mtime is set each time a run uses it); return them."""
    now = time.time()
    removed = []
    for copy in root.iterdir():
        if copy == keep or not copy.is_dir():
            continue
        try:
            if now - copy.stat().st_mtime > max_age:
                shutil.rmtree(copy)
                removed.append(copy)
        except FileNotFoundError:  # removed by a parallel process
            continue
    return removed


def container_environment(code_dir: str | Path) -> dict[str, str]:
    """Variables that make Apptainer (and Singularity) set ``PYTHONPATH`` inside the jobs'
    containers to ``code_dir`` (overriding the host's, which Apptainer would pass in)."""
    return {
        "APPTAINERENV_PYTHONPATH": str(code_dir),
        "SINGULARITYENV_PYTHONPATH": str(code_dir),
    }
