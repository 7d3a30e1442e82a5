"""Apptainer wiring, as far as it goes without Apptainer.

* The definition file parses (header + %sections), bootstraps Debian bookworm (Python 3.11, the
  lock's) from a mirror given as a build argument, copies the lock in and installs exactly it,
  the CUDA wheels hash-pinned, holds NO package code (jobs import the checkout's), records
  itself (image.json, labels), and `make container` depends on every file that goes into it.
  benchmarks/container_check.py (`make container-check`) executes the recipe.
* With Snakemake's apptainer deployment and the apptainer-args of profiles/slurm, the command a
  containerized job runs contains the configured image, the binds and --nv. This uses
  tests/fake_apptainer/apptainer, a shim that records its argv and runs the command on the host:
  an honest WIRING test. It does not build the image, run anything inside it, or see a GPU.
* Where a real `apptainer` is on PATH, the image is built and run for real instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEF_FILE = REPO / "containers" / "genre-classification.def"
LOCK = REPO / "requirements.lock"
FAKE_APPTAINER_DIR = Path(__file__).resolve().parent / "fake_apptainer"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
SECTIONS = {
    "setup", "files", "post", "environment", "runscript", "test", "labels", "help",
    "startscript", "app", "arguments",
}  # fmt: skip


def parse_definition(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Apptainer definition file -> (header {key: value}, {section: [body lines]})."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("%"):
            name = line[1:].split()[0]
            if name not in SECTIONS:
                raise ValueError(f"line {lineno}: unknown section %{name}")
            if name in sections:
                raise ValueError(f"line {lineno}: duplicate section %{name}")
            current = name
            sections[name] = []
        elif current is None:
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition(":")
            if not sep or not value.strip():
                raise ValueError(f"line {lineno}: header lines must be 'Key: value': {raw!r}")
            header[key.strip()] = value.strip()
        elif line and not line.startswith("#"):
            sections[current].append(line)
    return header, sections


@pytest.fixture(scope="module")
def definition():
    return parse_definition(DEF_FILE.read_text())


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_parser_rejects_garbage():
    with pytest.raises(ValueError):
        parse_definition("Bootstrap docker\n")
    with pytest.raises(ValueError):
        parse_definition("Bootstrap: docker\nFrom: x\n%post\n%post\n")
    with pytest.raises(ValueError):
        parse_definition("Bootstrap: docker\nFrom: x\n%nosuchsection\n")


def test_definition_bootstraps_debian_python_of_the_lock(definition):
    header, sections = definition
    assert header["Bootstrap"] == "debootstrap"
    assert header["OSVersion"] == "bookworm"  # python3 is 3.11 there
    assert "--python-version 3.11" in LOCK.read_text().splitlines()[1]
    # The mirror is a build argument (make container passes this machine's apt mirror).
    assert re.fullmatch(r"\{\{\s*DEBIAN_MIRROR\s*\}\}", header["MirrorURL"])
    for name in ("files", "post", "labels", "environment", "runscript", "test", "arguments"):
        assert sections.get(name), f"%{name} missing or empty"


def test_definition_copies_and_installs_the_locks(definition):
    _, sections = definition
    copies = dict(line.split() for line in sections["files"])
    post = "\n".join(sections["post"])
    for lock, flags in (
        ("requirements.lock", ""),
        ("requirements-cuda.lock", "--no-deps --require-hashes"),
        ("requirements-weights.txt", "--no-deps --require-hashes"),
    ):
        dest = copies[lock]
        assert re.search(rf"uv\" pip install[^\n]*{flags}[^\n]*\\?\s*-r {dest}", post), lock
    assert "sha256sum" in post and "APPTAINER_LABELS" in post
    pins = lock_pins()
    assert {"tensorflow", "keras", "librosa", "h5py", "snakemake"} <= set(pins)
    # The CUDA wheels: only nvidia-* pins, each with hashes, none also in the main lock.
    cuda = (REPO / "requirements-cuda.lock").read_text()
    names = re.findall(r"^([A-Za-z0-9_.\-]+)==", cuda, re.M)
    assert names and all(n.startswith("nvidia-") for n in names)
    assert not set(names) & set(pins)
    assert cuda.count("--hash=sha256:") >= len(names)


def test_definition_holds_no_package_code(definition):
    _, sections = definition
    sources = [line.split()[0] for line in sections["files"]]
    assert not [s for s in sources if "genre_classification" in s or s == "pyproject.toml"]
    post = "\n".join(sections["post"])
    assert "/src" not in post and "genre_classification.features.pack_op" not in post
    # %test fails if the image could import a package of its own.
    assert any("import genre_classification" in line for line in sections["test"])
    # g++ for the native pack reader, built on first use into the job's cache (writable).
    assert re.search(r"apt-get install[^\n]*\\?\n?[^\n]* g\+\+", post)
    assert not any("GENRE_CLASSIFICATION_OPS_DIR" in line for line in sections["environment"])


def test_definition_records_itself(definition):
    _, sections = definition
    labels = dict(line.split(None, 1) for line in sections["labels"])
    for key in ("org.opencontainers.image.source", "org.genre-classification.lock"):
        assert labels.get(key), f"label {key} missing"
    assert "org.opencontainers.image.version" not in labels
    post = "\n".join(sections["post"])
    assert re.search(r"image\.version \{\{ PACKAGE_VERSION \}\}.*APPTAINER_LABELS", post)
    info = re.search(r"open\(\"(/[^\"]+image\.json)\", \"w\"\)", post)
    assert info, "%post must write the image's record"
    for key in ("lock_sha256", "package_version", "tensorflow", "python", "base"):
        assert f'"{key}"' in post
    assert f"export GENRE_CLASSIFICATION_IMAGE_INFO={info.group(1)}" in sections["environment"]


def test_make_container_depends_on_every_file_in_the_image(definition):
    _, sections = definition
    sources = {line.split()[0] for line in sections["files"]}
    db = subprocess.run(
        ["make", "-pn", "containers/genre-classification.sif"], cwd=REPO,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    rule = re.search(r"^containers/genre-classification\.sif: (?!\.)(.*)$", db, re.M)
    assert rule, db[-2000:]
    prerequisites = set(rule.group(1).split())
    assert sources | {"containers/genre-classification.def"} <= prerequisites
    assert "genre_classification/__init__.py" in prerequisites  # the version build argument
    build = subprocess.run(
        ["make", "-n", "-B", "container", "DEBIAN_MIRROR=http://mirror.invalid/debian"],
        cwd=REPO, capture_output=True, text=True,
    ).stdout  # fmt: skip
    from genre_classification import __version__

    assert "--build-arg DEBIAN_MIRROR=http://mirror.invalid/debian" in build
    assert f"--build-arg PACKAGE_VERSION={__version__}" in build


def test_workflow_container_directives_read_config():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert config["container"]["image"] == "containers/genre-classification.sif"
    # Every rule that runs code (script:) runs in the image, extraction included.
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    bodies = dict(re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", rules, re.M | re.S))
    scripted = sorted(rule for rule, body in bodies.items() if "script:" in body)
    assert {"extract_features", "fetch_audio", "train_model", "evaluate_model"} <= set(scripted)
    for rule in scripted:
        pattern = r'container:\s*\n\s*config\["container"\]\["image"\]'
        assert re.search(pattern, bodies[rule]), rule


def profile_apptainer_args() -> str:
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["software-deployment-method"] == "apptainer"
    return profile["apptainer-args"]


WIRING_SNAKEFILE = """
configfile: "config.yaml"

rule all:
    input: "out/train.txt", "out/extract.txt"

rule train_model:
    output: "out/train.txt"
    container: config["container"]["image"]
    resources: gres="gpu:1", slurm_partition="gpu"
    shell: "echo trained > {output}"

rule extract_features:
    output: "out/extract.txt"
    container: config["container"]["image"]
    shell: "echo extracted > {output}"
"""


def test_apptainer_command_has_image_binds_and_nv(tmp_path, monkeypatch):
    """WIRING ONLY (fake apptainer): the `apptainer exec` command Snakemake runs per job."""
    image = "containers/genre-classification.sif"
    (tmp_path / "Snakefile").write_text(WIRING_SNAKEFILE)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"container": {"image": image}}))
    log = tmp_path / "apptainer.jsonl"
    monkeypatch.setenv("PATH", f"{FAKE_APPTAINER_DIR}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APPTAINER_LOG", str(log))
    args = profile_apptainer_args()
    proc = subprocess.run(
        [SNAKEMAKE, "--cores", "1", "--sdm", "apptainer", "--apptainer-args", args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    execs = [c["argv"] for c in calls if c["argv"][:1] == ["exec"]]
    assert len(execs) == 2, calls
    for argv in execs:
        assert image in argv
        assert "--nv" in argv  # one global --apptainer-args: GPU and CPU jobs alike
        binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
        assert "/tmp" in binds, argv
        assert "--home" in argv and argv[argv.index("--home") + 1] == str(tmp_path)
        # the image comes before the command it runs
        assert argv.index(image) < len(argv) - 2
    assert (tmp_path / "out/train.txt").read_text().strip() == "trained"


@pytest.mark.slow
def test_real_apptainer_build_and_run(tmp_path):
    apptainer = shutil.which("apptainer")
    if not apptainer or Path(apptainer).parent == FAKE_APPTAINER_DIR:
        pytest.skip(
            "apptainer is not on PATH (no Debian package, not on PyPI): the image cannot be "
            "built or run on this machine; see test_apptainer_command_has_image_binds_and_nv"
        )
    sif = tmp_path / "genre-classification.sif"
    subprocess.run(
        ["make", "container", f"CONTAINER_SIF={sif}"], cwd=REPO, check=True, timeout=7200
    )
    inspect = subprocess.run(
        [apptainer, "inspect", "--labels", str(sif)], capture_output=True, text=True, check=True
    ).stdout
    assert "org.genre-classification.lock.sha256" in inspect
    import hashlib

    assert hashlib.sha256(LOCK.read_bytes()).hexdigest() in inspect
    out = subprocess.run(
        [apptainer, "exec", "--nv", str(sif), "python3", "-c",
         "import json, os, tensorflow as tf; print(tf.__version__);"
         "print(json.load(open(os.environ['GENRE_CLASSIFICATION_IMAGE_INFO']))['lock_sha256'])"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert lock_pins()["tensorflow"] in out
    assert hashlib.sha256(LOCK.read_bytes()).hexdigest() in out
    # The image holds no package code (the jobs import the checkout's).
    isolated = subprocess.run(
        [apptainer, "exec", str(sif), "python3", "-I", "-c", "import genre_classification"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert isolated.returncode != 0
