"""What ran (provenance.code_provenance): in a checkout, inside the container image (its record
named by GENRE_CLASSIFICATION_IMAGE_INFO), from the copy of the package that container jobs
import (code_export), with and without a GPU; and where it is recorded (results, MLflow run
tags, registered model versions)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from genre_classification import code_export, code_version, provenance, tracking
from genre_classification.evaluation import registry

REPO = Path(__file__).resolve().parents[1]
LOCK_SHA = hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()


def head() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def no_gpu(monkeypatch, tmp_path):
    """A PATH without nvidia-smi (only the interpreter's directory and the basics)."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin")
    monkeypatch.delenv(provenance.IMAGE_INFO_ENV, raising=False)


@pytest.fixture
def image_info(tmp_path, monkeypatch):
    info = {
        "lock_sha256": "ab" * 32,
        "cuda_lock_sha256": "cd" * 32,
        "package_version": "0.0.1",
        "tensorflow": "2.21.0",
        "python": "3.11.2",
        "base": "debian:bookworm",
        "code": "none: jobs import the checkout package",
    }
    path = tmp_path / "image.json"
    path.write_text(json.dumps(info))
    monkeypatch.setenv(provenance.IMAGE_INFO_ENV, str(path))
    return info


def test_in_a_checkout(no_gpu):
    record = provenance.code_provenance()
    code = record["code"]
    assert code["fingerprint"] == code_version.package_fingerprint()
    assert code["package_version"] == provenance.workflow_version()
    assert code["git_commit"] == head()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert code["git_dirty"] is bool(dirty)
    assert code["lock_sha256"] == LOCK_SHA
    assert "image" not in record and "gpu" not in record  # not in a container, no GPU


def test_inside_the_image_the_lock_is_the_images(no_gpu, image_info):
    record = provenance.code_provenance()
    assert record["image"] == image_info
    assert record["code"]["lock_sha256"] == image_info["lock_sha256"]
    assert record["code"]["checkout_lock_sha256"] == LOCK_SHA
    assert record["code"]["fingerprint"] == code_version.package_fingerprint()


def test_gpu_name_and_driver_where_nvidia_smi_sees_one(no_gpu, tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'test "$1" = --query-gpu=name,driver_version || exit 2\n'
        'echo "NVIDIA A100-SXM4-40GB, 535.104.05"\necho "Tesla T4, 535.104.05"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    record = provenance.code_provenance()
    assert record["gpu"] == [
        {"name": "NVIDIA A100-SXM4-40GB", "driver_version": "535.104.05"},
        {"name": "Tesla T4", "driver_version": "535.104.05"},
    ]
    tags = provenance.provenance_tags(record)
    assert tags["gpu.0.name"] == "NVIDIA A100-SXM4-40GB"
    assert tags["gpu.1.driver_version"] == "535.104.05"


def test_tags_are_flat_strings(no_gpu, image_info):
    tags = provenance.provenance_tags(provenance.code_provenance())
    assert tags["code.fingerprint"] == code_version.package_fingerprint()
    assert tags["code.git_dirty"] in ("true", "false")
    assert tags["code.lock_sha256"] == image_info["lock_sha256"]
    assert tags["image.base"] == "debian:bookworm"
    assert all(isinstance(v, str) for v in tags.values())


def test_results_mlflow_tags_and_model_versions_carry_it(no_gpu, image_info, tmp_path):
    version_file = tmp_path / "data_version.json"
    version_file.write_text('{"md5": "abc", "source": "dir", "n_files": 1}')
    result = provenance.result_provenance(version_file)
    assert result["code"] == provenance.code_provenance()["code"]
    assert result["image"] == image_info
    json.dumps(result)  # a result file's content

    tags = tracking.provenance_tags(version_file)
    assert tags["code.fingerprint"] == code_version.package_fingerprint()
    assert tags["code.lock_sha256"] == image_info["lock_sha256"]
    assert tags["code.git_commit"] == head()

    run = SimpleNamespace(data=SimpleNamespace(tags={}))
    version = registry.version_tags({"macro_f1": 0.5, **result}, run, "1")
    assert version["code.fingerprint"] == code_version.package_fingerprint()
    assert version["code.git_dirty"] == tags["code.git_dirty"]
    assert version["image.lock_sha256"] == image_info["lock_sha256"]
    note = registry.provenance_note(version)
    assert code_version.package_fingerprint() in note and head() in note
    assert image_info["lock_sha256"][:12] in note and "container image" in note
    # An evaluation without provenance: the training run's tags.
    run = SimpleNamespace(data=SimpleNamespace(tags=dict(tags)))
    assert (
        registry.version_tags({"macro_f1": 0.5}, run, "1")["code.fingerprint"]
        == (tags["code.fingerprint"])
    )


def test_exported_copy_is_the_checkouts_code_and_knows_its_checkout(tmp_path, image_info):
    code_dir = code_export.export_package(tmp_path / "export")
    assert code_export.export_package(tmp_path / "export") == code_dir  # once per content
    copy = code_dir / "genre_classification"
    assert (copy / "features" / "pack_read.cc").is_file()
    source = json.loads((code_dir / provenance.SOURCE_INFO).read_text())
    assert source["git_commit"] == head() and source["lock_sha256"] == LOCK_SHA
    # A job in the container: imports the copy (PYTHONPATH), outside any checkout.
    job = subprocess.run(
        [sys.executable, "-c",
         "import json, genre_classification as g; from genre_classification import provenance;"
         "print(json.dumps([g.__file__, provenance.code_provenance(), provenance.code_commit()]))"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(code_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    where, record, commit = json.loads(job.stdout)
    assert Path(where).parent == copy
    assert record["code"]["fingerprint"] == code_version.package_fingerprint()
    assert record["code"]["git_commit"] == head()
    assert record["code"]["git_dirty"] == source["git_dirty"]
    assert record["code"]["lock_sha256"] == image_info["lock_sha256"]
    assert record["code"]["checkout_lock_sha256"] == LOCK_SHA
    assert commit.removesuffix("-dirty") == head()


def test_export_changes_with_the_code(tmp_path, monkeypatch):
    src = tmp_path / "checkout" / "genre_classification"
    for path in code_version.package_files():
        dest = src / path.relative_to(code_version.PACKAGE_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
    run = [sys.executable, "-c",
           "import sys; from genre_classification import code_export;"
           "print(code_export.export_package(sys.argv[1]))", str(tmp_path / "export")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(src.parent)}
    first = subprocess.run(
        run, env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    with open(src / "evaluation" / "evaluate.py", "a") as fh:
        fh.write("\nCHANGED = True\n")
    second = subprocess.run(
        run, env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert first != second
    assert (
        "CHANGED = True"
        in (Path(second.strip()) / "genre_classification/evaluation/evaluate.py").read_text()
    )
    assert not list((tmp_path / "export").glob(".export-*"))


def test_an_installed_package_names_no_commit_or_lock(tmp_path):
    """A package outside a checkout (site-packages): no git commit, no lock, only its version
    and fingerprint — even when the working directory is a git checkout."""
    site = tmp_path / "site-packages"
    for path in code_version.package_files():
        dest = site / "genre_classification" / path.relative_to(code_version.PACKAGE_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
    script = (
        "import json; from genre_classification import provenance as p;"
        "print(json.dumps(p.code_provenance()))"
    )
    out = subprocess.run(  # in a directory of the git checkout (not on sys.path: no package)
        [sys.executable, "-c", script], cwd=REPO / "docs",
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    code = json.loads(out)["code"]
    assert code["git_commit"] is None and code["git_dirty"] is None
    assert code["lock_sha256"] is None
    assert code["fingerprint"] == code_version.package_fingerprint()


def test_unused_code_copies_are_pruned_after_a_week(tmp_path):
    root = tmp_path / "export"
    stale, recent = root / "0000000000000000", root / "1111111111111111"
    for copy in (stale, recent):
        (copy / "genre_classification").mkdir(parents=True)
    week_ago = time.time() - code_export.KEEP_UNUSED_SECONDS - 60
    os.utime(stale, (week_ago, week_ago))
    code_dir = code_export.export_package(root)
    assert sorted(p.name for p in root.iterdir()) == sorted([code_dir.name, recent.name])
    os.utime(code_dir, (week_ago, week_ago))  # reused: marked as used, kept
    assert code_export.export_package(root) == code_dir
    assert time.time() - code_dir.stat().st_mtime < 60
