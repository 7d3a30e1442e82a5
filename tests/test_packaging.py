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


def direct_dependencies() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [re.split(r"[<>=\[ ;]", dep)[0].lower() for dep in project["dependencies"]]


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
