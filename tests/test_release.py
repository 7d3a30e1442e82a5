"""Release hygiene: one version (genre_classification.__version__) that the package metadata,
the workflow, results, MLflow tags, the container label, the changelog and README all report;
dated changelog entries; no document names a release tag that `git tag` lacks; a LICENSE
matching pyproject; the catalog file in its format."""

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


def test_changelog_and_readme_name_this_version():
    changelog = (REPO / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\](.*)$", changelog, re.M)
    assert headings[0] == ("Unreleased", "")
    releases = headings[1:]
    for version, date in releases:  # every release is a version with a date
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
        assert re.fullmatch(r" - \d{4}-\d{2}-\d{2}", date), f"{version}: no date"
    assert releases[0][0] == VERSION, "CHANGELOG.md: newest release != __version__"
    numbers = [tuple(map(int, v.split("."))) for v, _ in releases]
    assert numbers == sorted(numbers, reverse=True), "CHANGELOG.md: releases out of order"
    assert [d for _, d in releases] == sorted((d for _, d in releases), reverse=True)
    readme = (REPO / "README.md").read_text()
    assert f"Version **{VERSION}**" in readme
    assert re.findall(r"Version \*\*([^*]+)\*\*", readme) == [VERSION]


# Where a release can be named: the documents and the files users copy commands from.
RELEASE_DOCUMENTS = [
    "README.md",
    "CHANGELOG.md",
    ".snakemake-workflow-catalog.yml",
    "config/README.md",
    *(f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md"))),
    "genre_classification/__init__.py",
    "pyproject.toml",
]


def named_tags(text: str) -> set[str]:
    """Release tags a text names: v<major>.<minor>.<patch> (not placeholders like v<version>)."""
    return set(re.findall(r"(?<![\w.])v\d+\.\d+\.\d+\b", text))


def test_no_document_names_a_tag_the_repository_lacks():
    git = subprocess.run(
        ["git", "tag", "--list"], cwd=REPO, capture_output=True, text=True, check=True
    )
    tags = set(git.stdout.split())
    for name in RELEASE_DOCUMENTS:
        missing = named_tags((REPO / name).read_text()) - tags
        assert not missing, f"{name} names {sorted(missing)}, which `git tag` lacks"
    # ...and the check finds them.
    assert named_tags('--tag v0.1.0, @v1.2.3, tag="v10.0.1", v<version>') == {
        "v0.1.0",
        "v1.2.3",
        "v10.0.1",
    }


def test_deploy_instructions_pin_no_other_version():
    """What the usage docs and the catalog tell users to install or deploy: a branch or a tag that
    exists (none named now), never another release's version."""
    for name in ("docs/usage.md", ".snakemake-workflow-catalog.yml"):
        text = (REPO / name).read_text()
        pinned = set(re.findall(r"(?:--tag |@|tag=\")v(\d+\.\d+\.\d+)", text))
        assert pinned <= {VERSION}, f"{name} pins {pinned}, the version is {VERSION}"
        assert "genre-classification@main" in text


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
