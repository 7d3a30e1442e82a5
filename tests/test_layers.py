"""The package's stages import downward only (pyproject's [tool.importlinter] contract, also run
by `make lint`), and no module imports itself back through others."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


def test_the_layers_contract_holds():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "genre_classification", tmp_path / "genre_classification")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    split = tmp_path / "genre_classification" / "data" / "split.py"
    split.write_text(split.read_text() + "\nfrom genre_classification.training import models\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "genre_classification.data.split -> genre_classification.training.models" in (
        result.stdout
    )


def test_no_import_cycle():
    graph = grimp.build_graph("genre_classification")
    cycles = [
        (module, other)
        for module in graph.modules
        for other in graph.find_modules_directly_imported_by(module)
        if other != module and graph.chain_exists(importer=other, imported=module)
    ]
    assert not cycles, cycles
