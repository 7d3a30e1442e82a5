"""The install is reproducible: the lock pins every direct dependency, the conda env file and
the container use the same pins, and the installed versions are the locked ones."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line):
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def names(requirements: list[str]) -> list[str]:
    return [re.split(r"[<>=\[ ;]", dep)[0].lower() for dep in requirements]


def direct_dependencies() -> list[str]:
    """The core dependencies and the jobs' extra: what the workflow and its jobs import."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return names(project["dependencies"] + project["optional-dependencies"]["jobs"])


# What only the jobs import: never needed by the host that parses the workflow and submits jobs.
JOB_ONLY = {"tensorflow", "keras", "librosa", "soundfile", "mlflow", "evidently", "matplotlib",
            "scikit-learn", "boto3", "psycopg2-binary"}  # fmt: skip


def test_lock_pins_every_direct_dependency_and_installed_versions_match():
    pins = locked()
    for name in direct_dependencies():
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        assert metadata.version(name) == pins[name], f"{name}: installed != locked"


def test_conda_env_matches_the_lock():
    env = yaml.safe_load((REPO / "envs" / "genre-classification.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    pins = locked()
    assert "python=3.11" in env["dependencies"]
    assert {p.split("==")[0] for p in pip} == set(direct_dependencies())
    for requirement in pip:
        name, version = requirement.split("==")
        assert pins[name] == version, f"envs/: {name}=={version}, lock has {pins[name]}"


def test_ci_runs_make_test():
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def test_the_core_dependencies_are_light_and_unpinned():
    """Deploying the workflow as a module installs the core set into a user's Snakemake
    environment: no job dependency, and ranges, not exact pins."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = project["dependencies"]
    assert not JOB_ONLY & set(names(core)), "a job dependency is in the core set"
    assert not [dep for dep in core if "==" in dep], "the core set pins exact versions"
    assert JOB_ONLY <= set(names(project["optional-dependencies"]["jobs"]))
