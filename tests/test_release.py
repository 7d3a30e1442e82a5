"""Release hygiene: one version (genre_classification.__version__) that the package metadata,
the workflow, results, MLflow tags, the container label, the changelog, README and the workflow
catalog's usage all report; a LICENSE matching pyproject; the catalog file in its format."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import genre_classification
from genre_classification import provenance, tracking

REPO = Path(__file__).resolve().parents[1]
VERSION = genre_classification.__version__
TAG = f"v{VERSION}"


def test_version_is_a_release_number():
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)


def test_pyproject_reads_the_version_from_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "genre_classification.__version__"}
    # What a build resolves it to (setuptools' own reading of pyproject.toml).
    code = (
        "from setuptools.config.pyprojecttoml import read_configuration as r; "
        "print(r('pyproject.toml')['project']['version'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == VERSION


def test_results_and_mlflow_tags_carry_the_version(tmp_path):
    version_file = tmp_path / "data_version.json"
    version_file.write_text('{"md5": "abc", "source": "dir", "n_files": 1}')
    assert provenance.result_provenance(version_file)["workflow_version"] == VERSION
    assert tracking.provenance_tags(version_file)[tracking.VERSION_TAG] == VERSION


def test_workflow_logs_the_package_version():
    snakefile = (REPO / "workflow" / "Snakefile").read_text()
    assert "from genre_classification import __version__" in snakefile
    assert 'logger.info(f"genre-classification workflow {__version__}")' in snakefile


def test_container_label_comes_from_the_package():
    definition = (REPO / "containers" / "genre-classification.def").read_text()
    labels = definition.split("%labels", 1)[1].split("%", 1)[0]
    assert "image.version" not in labels  # not written by hand
    # The image holds no package: `make container` passes the checkout's __version__.
    assert (
        'echo "org.opencontainers.image.version {{ PACKAGE_VERSION }}" >> "$APPTAINER_LABELS"'
        in (definition)
    )
    makefile = (REPO / "Makefile").read_text()
    assert "PACKAGE_VERSION := $(shell sed -n 's/^__version__ = " in makefile
    assert "--build-arg PACKAGE_VERSION=$(PACKAGE_VERSION)" in makefile


def test_changelog_readme_and_catalog_name_this_version():
    changelog = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)
    assert releases and releases[0] == VERSION, "CHANGELOG.md: newest release != __version__"
    assert "## [Unreleased]" in changelog
    readme = (REPO / "README.md").read_text()
    catalog = (REPO / ".snakemake-workflow-catalog.yml").read_text()
    assert f"Version **{VERSION}**" in readme
    for name, text in (("README.md", readme), (".snakemake-workflow-catalog.yml", catalog)):
        pinned = set(re.findall(r"(?:--tag |@|tag=\")v(\d+\.\d+\.\d+)", text))
        assert pinned == {VERSION}, f"{name} pins {pinned}, the version is {VERSION}"


def test_license_is_the_one_pyproject_declares():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Permission is hereby granted" in text


def test_catalog_file_has_the_documented_keys():
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = catalog["usage"]
    assert set(usage) <= {"mandatory-flags", "software-stack-deployment"}
    assert set(usage["mandatory-flags"]) == {"desc", "flags"}
    stack = usage["software-stack-deployment"]
    assert set(stack) <= {"conda", "apptainer", "apptainer+conda", "report"}
    assert all(isinstance(value, bool) for value in stack.values())
    # What it claims: the rules run in the container (no conda: directives), and a report.
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    assert stack["apptainer"] == ("container:" in rules)
    assert stack["conda"] == ("conda:" in rules)
    assert stack["report"] and "report:" in (REPO / "workflow" / "Snakefile").read_text()
    # The catalog's standardized usage also needs these.
    assert (REPO / "workflow" / "Snakefile").is_file() and (REPO / "config" / "README.md").is_file()
