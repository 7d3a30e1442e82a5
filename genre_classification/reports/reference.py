"""Track table of a reference data version, for drift of the current data against it.

``reports.reference`` names the version:

* ``{source: dvc, rev: <git rev>}``: the audio directory ``data.dvc.target`` of the DVC project
  ``data.dvc.repo`` as it was at ``rev``, fetched with ``dvc get <repo> <target> --rev <rev>``
  (the repo may also be given as ``reports.reference.repo``/``target``);
* ``{source: dir, dir: <path>}``: a plain ``<genre>/<file>`` audio directory.

The audio goes through the same extraction (``features.shards.extract_shard``) and
track-table code as the current data, in one loop: it is a one-off job, not one job per file.
Undecodable or too-short files are skipped with a warning, as the fetch step quarantines them.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from genre_classification.data.audio_source import list_directory
from genre_classification.data.dvc_repo import dvc_executable
from genre_classification.features.features import FeatureParams, shard_record_path
from genre_classification.features.shards import extract_shard
from genre_classification.fileio import write_json
from genre_classification.reports.track_table import build_track_table, tracks_in_dir, write_table

log = logging.getLogger(__name__)

REFERENCE_SPLIT = "reference"


class ReferenceError(RuntimeError):
    """The configured reference data version cannot be read."""


def dvc_get(repo: str, target: str, rev: str, out_dir: str | Path) -> Path:
    """``dvc get <repo> <target> --rev <rev> -o <out_dir>`` (replacing ``out_dir``)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # a local repo path must be absolute: dvc clones it from a temporary directory
    repo_url = str(Path(repo).resolve()) if Path(repo).exists() else repo
    command = [dvc_executable(), "get", repo_url, target, "--rev", rev, "-o", str(out_dir)]
    log.info("running %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    log.info("%s%s", result.stdout, result.stderr)
    if result.returncode != 0:
        raise ReferenceError(
            f"`{' '.join(command)}` failed (exit {result.returncode}):\n{result.stderr.strip()}\n"
            "Check reports.reference.rev (a git revision of the data repo) and the DVC remote."
        )
    return out_dir


def reference_audio(reference: dict, data: dict, work_dir: str | Path) -> tuple[Path, dict]:
    """The reference audio directory (fetched if needed) and a description of the version."""
    source = reference.get("source")
    if source == "dvc":
        dvc = data.get("dvc") or {}
        repo = reference.get("repo") or dvc.get("repo")
        target = reference.get("target") or dvc.get("target")
        rev = reference.get("rev")
        if not (repo and target and rev):
            raise ReferenceError(
                "reports.reference with source: dvc needs rev, and a repo/target (from "
                f"data.dvc or reports.reference); got repo={repo!r} target={target!r} rev={rev!r}"
            )
        root = dvc_get(repo, target, rev, Path(work_dir) / "audio")
        return root, {"source": "dvc", "repo": str(repo), "target": target, "rev": rev}
    if source == "dir":
        root = Path(reference.get("dir") or "")
        if not root.is_dir():
            raise ReferenceError(f"reports.reference.dir {root} is not a directory")
        return root, {"source": "dir", "dir": str(root)}
    raise ReferenceError(f"reports.reference.source must be dvc or dir, got {source!r}")


def extract_directory(
    root: Path,
    features_dir: str | Path,
    params: FeatureParams,
    extensions: list[str],
    threads: int = 1,
) -> tuple[int, list[dict]]:
    """Extract every ``<root>/<genre>/<file>`` into ``<features_dir>/<genre>/<track>.h5`` (as one
    shard of the workflow's extraction)."""
    features_dir = Path(features_dir)
    if features_dir.exists():
        shutil.rmtree(features_dir)
    rows = extract_shard(
        list_directory(root, extensions),
        root,
        features_dir,
        params,
        shard_record_path(features_dir, "reference"),
        threads=threads,
    )
    rejected = [{"path": r["path"], "reason": r["reason"]} for r in rows if r["reason"]]
    n_ok = len(rows) - len(rejected)
    if n_ok == 0:
        raise ReferenceError(f"no usable audio in the reference data {root}")
    return n_ok, rejected


def build_reference_table(
    reference: dict,
    data: dict,
    features: dict,
    table_path: str | Path,
    info_path: str | Path,
    work_dir: str | Path,
    n_bands: int = 8,
    n_mfcc: int = 13,
    threads: int = 1,
) -> dict:
    """Fetch, extract and summarise the reference data version; write its table and a JSON."""
    work_dir = Path(work_dir)
    root, info = reference_audio(reference, data, work_dir)
    params = FeatureParams.from_config(features)
    n_ok, rejected = extract_directory(
        root, work_dir / "features", params, data["extensions"], threads=threads
    )
    table = build_track_table(
        tracks_in_dir(work_dir / "features", split=REFERENCE_SPLIT), n_bands=n_bands, n_mfcc=n_mfcc
    )
    write_table(table, table_path)
    info = {**info, "n_tracks": int(len(table)), "n_rejected": len(rejected), "rejected": rejected}
    write_json(info_path, info)
    log.info("reference table %s: %d tracks (%d skipped)", table_path, n_ok, len(rejected))
    return info
