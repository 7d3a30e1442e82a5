"""What a code change reruns, and that a copied results tree reruns nothing, through the real
workflow: one finished tiny run (module scope), copied for each case; package code is changed in
a copy of the package put first on PYTHONPATH (never in the repository)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import h5py
import pytest
import yaml

import genre_classification
from conftest import (
    BIN,
    REPO,
    SNAKEFILE,
    TEST_CONFIG,
    TINY_DATA,
    TINY_MODEL,
    make_demo_repo,
    planned_jobs,
)
from genre_classification.features.features import feature_code

pytestmark = pytest.mark.slow
PACKAGE = Path(genre_classification.__file__).resolve().parent
CONFIGFILES = ["config/config.yaml", "config/test.yaml", "config/training.yaml"]
# What reads the training jobs' outputs (the tiny run has one model, one shard, no predict set).
TRAINING_AND_AFTER = {
    "train_model",
    "evaluate_model",
    "aggregate_folds",
    "cv_summary",
    "classification_report",
    "resource_usage",
    "all",
}
REPORTS = {
    "classification_report",
    "data_drift_report",
    "data_quality_report",
    "resource_usage",
    "all",
}


def snakemake(workdir: Path, *args: str, package: Path | None = None):
    """Snakemake in ``workdir``; ``package``: a directory holding a copy of
    genre_classification, first on PYTHONPATH (the parse and the jobs import it)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    if package is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(package), env.get("PYTHONPATH", "")])
    command = [str(BIN / "snakemake"), "--snakefile", str(SNAKEFILE), "--configfile"]
    result = subprocess.run(
        [*command, *CONFIGFILES, *args], cwd=workdir, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


def dry_run(workdir: Path, package: Path | None = None) -> tuple[dict[str, int], str]:
    result = snakemake(workdir, "-n", "--cores", "2", package=package)
    output = result.stdout + result.stderr
    return planned_jobs(output), output


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run of the whole workflow (tiny data, tiny CNN): its working directory."""
    root = tmp_path_factory.mktemp("finished")
    work = root / "work"
    dvc = yaml.safe_load(TEST_CONFIG.read_text())["data"]["dvc"]
    repo = work / dvc["repo"]
    make_demo_repo(repo, repo.parent / "dvc-remote", dvc["target"], **TINY_DATA)
    (work / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", work / "config" / "config.yaml")
    shutil.copy(TEST_CONFIG, work / "config" / "test.yaml")
    training = {"run": ["tiny"], "models": {"tiny": TINY_MODEL}, "resources": {"gpu": 0}}
    (work / "config" / "training.yaml").write_text(yaml.safe_dump({"training": training}))
    snakemake(work, "--cores", "2")
    return work


def copied(finished: Path, dest: Path, how: str) -> Path:
    """The finished working directory copied as users move results trees: ``copytree``
    (mtimes kept, as cp -a), ``tar`` (whole-second mtimes), ``cp -r`` (new mtimes)."""
    dest.mkdir(parents=True, exist_ok=True)
    work = dest / "work"
    if how == "copytree":
        shutil.copytree(finished, work, symlinks=True)
    elif how == "tar":
        archive = dest / "work.tar"
        subprocess.run(
            ["tar", "-cf", archive, "--format=gnu", "work"], cwd=finished.parent, check=True
        )
        subprocess.run(["tar", "-xf", archive], cwd=dest, check=True)
    else:
        subprocess.run(["cp", "-r", str(finished), str(work)], check=True)
    return work


def changed_package(tmp_path: Path, module: str, old: str, new: str) -> Path:
    """A copy of the package with ``old`` replaced by ``new`` in ``module`` (a path inside it);
    returns the directory to put on PYTHONPATH."""
    root = tmp_path / "pythonpath"
    shutil.copytree(
        PACKAGE, root / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    path = root / PACKAGE.name / module
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {module}"
    path.write_text(text.replace(old, new))
    return root


def test_no_change_and_copied_trees_plan_nothing(finished, tmp_path):
    """The finished run, and copies of it made with shutil.copytree, tar and cp -r."""
    for how in ("copytree", "tar", "cp -r"):
        work = copied(finished, tmp_path / how.replace(" ", ""), how)
        planned, output = dry_run(work)
        assert planned == {}, f"{how}: {output}"
        assert "Nothing to be done" in output
    assert not list((work / "results/features/.shards").glob("*.repairs"))


def test_a_truncated_feature_file_in_a_copy_reruns_its_shard(finished, tmp_path):
    work = copied(finished, tmp_path, "tar")
    h5 = next((work / "results/features").glob("metal/*.h5"))
    h5.write_bytes(h5.read_bytes()[:500])
    planned, output = dry_run(work)
    assert planned["extract_features"] == 1
    assert "fetch_audio" not in planned
    assert f"will re-extract {h5.relative_to(work)}" in output


def test_a_change_in_training_reruns_training_and_what_follows(finished, tmp_path):
    work = copied(finished, tmp_path, "copytree")
    package = changed_package(
        tmp_path,
        "training/models.py",
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nDEFAULT_CHANGED = True\n",
    )
    planned, output = dry_run(work, package)
    assert {"train_model", "evaluate_model"} <= set(planned) <= TRAINING_AND_AFTER | REPORTS
    assert "Updated input files: results/code/train_model.json" in output
    assert "code of train_model changed: genre_classification/training/models.py" in output
    # the record is written when the workflow is parsed, even by a dry run: the same again
    assert dry_run(work, package)[0] == planned


def test_a_change_in_reports_reruns_only_the_report_jobs(finished, tmp_path):
    work = copied(finished, tmp_path, "copytree")
    package = changed_package(
        tmp_path,
        "reports/reports.py",
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nREPORTS_CHANGED = True\n",
    )
    planned, output = dry_run(work, package)
    assert set(planned) == REPORTS, output
    assert "Updated input files: results/code/data_drift_report.json" in output


def test_comments_change_nothing_feature_code_re_extracts(finished, tmp_path):
    """A comment in features/: nothing. Other code of the module (a log message): the
    extraction jobs and what follows rerun, and the shard keeps its files. The code that
    computes features: the files are re-extracted."""
    work = copied(finished, tmp_path / "copy", "copytree")
    comment = changed_package(
        tmp_path / "comment", "features/features.py", "AMIN = 1e-10\n", "AMIN = 1e-10  # floor\n"
    )
    assert dry_run(work, comment)[0] == {}

    logging = changed_package(
        tmp_path / "logging", "features/features.py", "(not recorded: nothing runs)", "(dry run)"
    )
    planned, output = dry_run(work, logging)
    assert planned["extract_features"] == 1
    assert "code of extract_features changed: genre_classification/features/features.py" in output
    # the first job of the chain; fetch_audio imports no feature code (data.members)
    assert "Updated input files: results/code/extract_features.json" in output
    assert "fetch_audio" not in planned
    h5s = sorted((work / "results/features").glob("*/*.h5"))
    before = {path: path.stat().st_mtime_ns for path in h5s}
    record = "results/features/.shards/00000.tsv"
    snakemake(work, "--cores", "2", record, package=logging)
    assert {path: path.stat().st_mtime_ns for path in h5s} == before  # kept

    computing = changed_package(
        tmp_path / "computing", "features/features.py", "AMIN = 1e-10\n", "AMIN = 1e-9\n"
    )
    snakemake(work, "--cores", "2", record, package=computing)
    assert all(path.stat().st_mtime_ns != before[path] for path in h5s)  # re-extracted
    with h5py.File(h5s[0]) as h5:
        assert h5.attrs["feature_code"] != feature_code()  # the changed package's
