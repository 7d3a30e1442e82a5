"""Fingerprints of the package code a job runs: what makes a code change rerun the jobs it
affects (``workflow/rules/common.smk``) and what every result records as the code that made it.

A job's code is the transitive closure of the ``genre_classification`` modules its script
imports (every ``import``, also inside functions), plus the non-Python files beside them (the
native pack reader's ``pack_read.cc``). A Python file is hashed as its tokens without comments
and blank lines: a comment-only edit changes no fingerprint, a docstring edit does (a docstring
is a string the code can read).
"""

from __future__ import annotations

import ast
import copy
import hashlib
import io
import json
import shutil
import tokenize
from functools import cache
from pathlib import Path

from genre_classification.fileio import write_text_if_changed

PACKAGE = "genre_classification"
PACKAGE_DIR = Path(__file__).resolve().parent
_SKIP_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING}


@cache
def source_digest(path: Path) -> str:
    """sha256 of a source file; of its tokens without comments and blank lines for Python."""
    data = path.read_bytes()
    if path.suffix == ".py":
        tokens = tokenize.tokenize(io.BytesIO(data).readline)
        data = "\x00".join(
            f"{tok.type}:{tok.string}" for tok in tokens if tok.type not in _SKIP_TOKENS
        ).encode()
    return hashlib.sha256(data).hexdigest()


def module_file(name: str) -> Path | None:
    """The file of package module ``name`` (``genre_classification.training.models``)."""
    if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
        return None
    base = PACKAGE_DIR.joinpath(*name.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path) -> set[str]:
    """The package modules a file imports (``from x import y`` may name module ``x.y``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if module_file(name) is not None}


def _with_parents(name: str) -> list[str]:
    """A module and the packages above it (importing a.b.c runs a/__init__ and a/b/__init__)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def code_files(script: Path) -> tuple[Path, ...]:
    """Every package file a script may run: the modules it imports, transitively, and the
    non-Python files in their directories; sorted, relative paths from the package's parent."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        for name in _imported_names(path):
            for module in _with_parents(name):
                found = module_file(module)
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    data_files = {
        other
        for module in seen
        for other in module.parent.iterdir()
        if other.is_file() and other.suffix not in (".py", ".pyc", ".so")
    }
    return tuple(sorted(seen | data_files))


def fingerprint(files: tuple[Path, ...]) -> str:
    """One sha256 (16 hex digits) of ``files``' names and digests."""
    digest = hashlib.sha256()
    for path in files:
        name = path.relative_to(PACKAGE_DIR.parent).as_posix()
        digest.update(f"{name}\t{source_digest(path)}\n".encode())
    return digest.hexdigest()[:16]


def script_code(script: str | Path) -> dict[str, str]:
    """The package files a script runs -> their digests (12 hex digits each)."""
    return {
        path.relative_to(PACKAGE_DIR.parent).as_posix(): source_digest(path)[:12]
        for path in code_files(Path(script).resolve())
    }


def package_files() -> tuple[Path, ...]:
    """Every source file of the package (no caches or built libraries)."""
    return tuple(
        sorted(
            path
            for path in PACKAGE_DIR.rglob("*")
            if path.is_file()
            and "__pycache__" not in path.parts
            and path.suffix not in (".pyc", ".so")
        )
    )


def copy_package(root: Path) -> Path:
    """The package's source files (``package_files``) copied to ``root/genre_classification``;
    returns that directory."""
    target = root / PACKAGE_DIR.name
    for source in package_files():
        dest = target / source.relative_to(PACKAGE_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
    return target


def package_fingerprint() -> str:
    """The fingerprint of the whole package: what a result records as the code that made it."""
    return fingerprint(package_files())


def _without_docstrings(node: ast.AST) -> ast.AST:
    """``node`` (a copy) without the docstrings of the functions and classes in it."""
    node = copy.deepcopy(node)
    for child in ast.walk(node):
        body = getattr(child, "body", None)
        if (
            isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            child.body = body[1:] or [ast.Pass()]
    return node


def definitions_fingerprint(path: Path, roots: tuple[str, ...]) -> str:
    """One sha256 (16 hex digits) of the top-level definitions (functions, classes,
    assignments) of module ``path`` that ``roots`` use, transitively by name within the module:
    the code of a computation without the rest of its module. Compared as syntax trees, so
    comments, blank lines, formatting and docstrings change nothing."""
    tree = ast.parse(path.read_bytes(), str(path))
    defined: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        defined[name.id] = node
    seen: list[str] = []
    todo = [name for name in roots if name in defined]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        todo.extend(
            ref.id
            for ref in ast.walk(defined[name])
            if isinstance(ref, ast.Name) and ref.id in defined and ref.id not in seen
        )
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(f"{name}\t{ast.dump(_without_docstrings(defined[name]))}\n".encode())
    return digest.hexdigest()[:16]


def code_record(script: str | Path | None) -> dict:
    """What a rule's code record holds: the fingerprint of the package code its script runs
    (``code_files``), the digest of each of those files and of the script itself. ``None``
    (a script that is not a local file: a workflow used as a module from a remote source):
    the whole package."""
    if script is None or not Path(script).is_file():
        files, own = package_files(), {}
    else:
        script = Path(script).resolve()
        files, own = code_files(script), {script.name: source_digest(script)[:12]}
    return {
        "fingerprint": fingerprint(files),
        "script": own,
        "files": {
            path.relative_to(PACKAGE_DIR.parent).as_posix(): source_digest(path)[:12]
            for path in files
        },
    }


def write_code_record(path: str | Path, script: str | Path | None) -> list[str]:
    """Write ``script``'s ``code_record`` to ``path`` (JSON), only when it changed: an input of
    the rule's jobs, whose mtime moves only when that code does. Returns the files (package
    files, or the script's name) whose digest differs from the record found there (none when
    there was none)."""

    record = code_record(script)
    path = Path(path)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    changed = []
    if isinstance(old, dict):
        before = {**old.get("script", {}), **old.get("files", {})}
        now = {**record["script"], **record["files"]}
        changed = sorted(
            name for name in before.keys() | now.keys() if before.get(name) != now.get(name)
        )
    write_text_if_changed(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return changed
