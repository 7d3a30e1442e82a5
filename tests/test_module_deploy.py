"""The workflow used as a Snakemake module, the way the workflow catalog deploys it: a directory
of one's own with its own config/config.yaml and a Snakefile whose `module` statement pins a
release tag of the repository. Every file the workflow reads (rules, scripts, schema, report
captions) must then come through Snakemake's source handling, not from the working directory.

With snakedeploy installed (requirements.lock pins it), `snakedeploy deploy-workflow` writes the
deployment; without network its github(..., tag=...) source is pointed at a clone of the same tag
outside the deployment. (Snakemake's own git+file:...@tag source would be closer, but 9.27.1
fails on it for rules with a script: LocalGitFile.join gets a SourceFile.) Without snakedeploy,
the Snakefile the README shows is written by hand. Either way the tiny test configuration then
runs through the module: -n, a real run and the report."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import BIN, REPO, TEST_CONFIG, TINY_MODEL
from genre_classification import __version__

pytestmark = pytest.mark.slow

TAG = f"v{__version__}"
MODULE_NAME = "genre"


def merged(base: dict, overlay: dict) -> dict:
    """``overlay`` on ``base`` as Snakemake merges config files (nested dicts key by key)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def git(*args, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env
    ).stdout


def tagged_release(root: Path) -> Path:
    """The repository's tracked files as they are now, committed and tagged TAG in a fresh git
    repository (a stand-in for the GitHub repository at a release)."""
    files = git("ls-files", "-z", cwd=REPO).split("\0")
    src = root / "github.com" / "genre-classification" / "genre-classification"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    git("init", "-q", "-b", "main", cwd=src)
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", "release", cwd=src)
    git("tag", TAG, cwd=src)
    return src


def snakedeploy_command() -> list[str] | None:
    """snakedeploy of this environment (SNAKEDEPLOY: another one's executable), else None."""
    if os.environ.get("SNAKEDEPLOY"):
        return [os.environ["SNAKEDEPLOY"]]
    exe = BIN / "snakedeploy"
    return [str(exe)] if exe.is_file() else None


def snakedeploy_is_locked() -> bool:
    lock = (REPO / "requirements.lock").read_text()
    return re.search(r"^snakedeploy==", lock, re.MULTILINE) is not None


def hand_written_snakefile(source: str) -> str:
    """The module Snakefile of docs/usage.md "Deploy into your own directory"."""
    return f"""configfile: "config/config.yaml"


module {MODULE_NAME}:
    snakefile:
        {source}
    config:
        config


use rule * from {MODULE_NAME} as {MODULE_NAME}_*
"""


def deploy(src: Path, dest: Path) -> tuple[str, str]:
    """dest/workflow/Snakefile and dest/config; returns (how, rule prefix)."""
    checkout = src.parent / f"checkout-{TAG}"
    git("clone", "-q", "--branch", TAG, str(src), str(checkout), cwd=src.parent)
    local_source = f'"{checkout}/workflow/Snakefile"'
    command = snakedeploy_command()
    if command is None:
        if snakedeploy_is_locked():
            pytest.fail("requirements.lock pins snakedeploy but it is not installed here")
        (dest / "workflow").mkdir(parents=True)
        (dest / "workflow" / "Snakefile").write_text(hand_written_snakefile(local_source))
        shutil.copytree(src / "config", dest / "config")
        return "hand-written module Snakefile (snakedeploy not installed)", f"{MODULE_NAME}_"
    result = subprocess.run(
        [*command, "deploy-workflow", str(src), str(dest), "--tag", TAG, "--name", MODULE_NAME],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    snakefile = dest / "workflow" / "Snakefile"
    text = snakefile.read_text()
    # snakedeploy pins the release on GitHub; the same tag of the local repository instead.
    repo = "genre-classification/genre-classification"
    pinned = f'github("{repo}", path="workflow/Snakefile", tag="{TAG}")'
    assert pinned in text, text
    snakefile.write_text(text.replace(pinned, local_source))
    assert (dest / "LICENSE").read_text() == (REPO / "LICENSE").read_text()
    return "snakedeploy deploy-workflow", ""


def test_deployed_module_runs_the_test_configuration(tmp_path):
    dest = tmp_path / "work"
    src = tagged_release(tmp_path / "release")
    how, prefix = deploy(src, dest)
    print(f"deployed with: {how}")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    # The tiny data set where TEST_CONFIG expects it (as tests/conftest.py tiny_data_repo), made
    # by the installed package's command: a deployment has no checkout's scripts/.
    dvc = yaml.safe_load(TEST_CONFIG.read_text())["data"]["dvc"]
    repo = Path(dvc["repo"])
    subprocess.run(
        [
            str(BIN / "genre-classification"),
            "demo-data",
            "--tiny",
            "--repo",
            str(repo),
            "--remote",
            str(repo.parent / "dvc-remote"),
            "--target",
            dvc["target"],
        ],
        cwd=dest,
        env=env,
        check=True,
        capture_output=True,
    )

    # The deployment's own config/config.yaml: the workflow's template with the test settings.
    own = merged(
        merged(
            yaml.safe_load((dest / "config" / "config.yaml").read_text()),
            yaml.safe_load(TEST_CONFIG.read_text()),
        ),
        {"training": {"run": ["tiny"], "models": {"tiny": TINY_MODEL}, "resources": {"gpu": 0}}},
    )
    (dest / "config" / "config.yaml").write_text(yaml.safe_dump(own, sort_keys=False))
    # Nothing of the checkout in the deployment: the module's files come from the tag.
    assert not (dest / "scripts").exists() and not (dest / "workflow" / "rules").exists()

    def snakemake(*args):
        result = subprocess.run(
            [str(BIN / "snakemake"), "--cores", "2", *args],
            cwd=dest,
            capture_output=True,
            text=True,
            env=env,
        )
        assert result.returncode == 0, f"{how}:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    dry = snakemake("-n")
    for rule in ("extract_features", "train_model", "evaluate_model", "data_drift_report"):
        assert f"{prefix}{rule}" in dry, dry
    snakemake()
    assert (dest / "results/models/tiny/model.keras").is_file()
    assert (dest / "results/eval/tiny/metrics.json").is_file()
    assert (dest / "results/reports/data_quality.html").is_file()
    assert "Nothing to be done" in snakemake("-n")
    snakemake("--report", "report.html")
    html = (dest / "report.html").read_text(errors="replace")
    assert "confusion_matrix.png" in html
