"""Symbolic links out of the audio root through the real workflow: a plain directory source
with a file link and a folder link pointing elsewhere; their reasons reach
results/qc/rejected.tsv and nothing behind them is extracted, until data.follow_links: true."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from conftest import REPO, TEST_CONFIG, SnakemakeRunner
from genre_classification.data.demo_data import make_demo_dataset

pytestmark = pytest.mark.slow


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_links_out_of_the_root_are_rejected_with_reasons_unless_followed(tmp_path):
    work, root, outside = tmp_path / "work", tmp_path / "audio", tmp_path / "elsewhere"
    make_demo_dataset(root, 2, seconds=3.5, genres=["classical", "metal"])
    make_demo_dataset(outside, 2, seconds=3.5, genres=["disco"])
    (root / "metal" / "stray.wav").symlink_to(outside / "disco" / "disco.00000.wav")
    (root / "disco").symlink_to(outside / "disco", target_is_directory=True)
    (work / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", work / "config" / "config.yaml")
    shutil.copy(TEST_CONFIG, work / "config" / "test.yaml")
    runner = SnakemakeRunner(work)
    runner.overlay("dir.yaml", {"data": {"source": "dir", "dir": str(root)}})

    runner("--cores", "2", "extract_all")
    rejected = {r["path"]: r["reason"] for r in read_rows(work / "results/qc/rejected.tsv")}
    advice = f"leaves the audio root {root}: copy it below the root or set data.follow_links: true"
    assert rejected == {
        f"{root}/metal/stray.wav": f"symbolic link to a file at {outside}/disco/disco.00000.wav "
        + advice,
        f"{root}/disco": f"symbolic link to a folder at {outside}/disco {advice}",
    }
    manifest = read_rows(work / "results/data/manifest.tsv")
    assert sorted(r["track"] for r in manifest) == [
        "classical.00000", "classical.00001", "metal.00000", "metal.00001"]  # fmt: skip
    assert not (work / "results/features/disco").exists()

    runner.overlay("links.yaml", {"data": {"follow_links": True}})
    runner("--cores", "2", "extract_all")
    assert read_rows(work / "results/qc/rejected.tsv") == []
    manifest = read_rows(work / "results/data/manifest.tsv")
    assert sorted((r["genre"], r["track"]) for r in manifest) == [
        ("classical", "classical.00000"), ("classical", "classical.00001"),
        ("disco", "disco.00000"), ("disco", "disco.00001"),
        ("metal", "metal.00000"), ("metal", "metal.00001"), ("metal", "stray")]  # fmt: skip
