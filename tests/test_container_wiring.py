"""Apptainer wiring, as far as it goes without Apptainer.

* The definition file parses (header + %sections), builds on a CUDA-capable TensorFlow base whose
  version is the one pinned in requirements.lock, copies the lock in and pip-installs exactly it,
  and carries labels, %environment, %runscript and %test.
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
    "startscript", "app",
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


def test_definition_header_is_cuda_tensorflow_matching_the_lock(definition):
    header, sections = definition
    assert header["Bootstrap"] == "docker"
    base = header["From"]
    assert "tensorflow/tensorflow:" in base and base.endswith("-gpu"), base
    tf_tag = base.split(":", 1)[1].removesuffix("-gpu")
    assert lock_pins()["tensorflow"] == tf_tag, "base image TF must equal the locked TF"
    for name in ("files", "post", "labels", "environment", "runscript", "test"):
        assert sections.get(name), f"%{name} missing or empty"


def test_definition_copies_and_installs_the_lock(definition):
    _, sections = definition
    copies = [line.split() for line in sections["files"]]
    lock_dest = [dst for src, dst in copies if src == "requirements.lock"]
    assert lock_dest, "%files must copy requirements.lock into the image"
    post = "\n".join(sections["post"])
    installs = re.findall(r"(?:pip|uv pip) install\b[^\n]*-r\s+(\S+)", post)
    assert lock_dest[0] in installs, f"%post must install -r {lock_dest[0]}: {installs}"
    # The package itself without resolving anything else.
    assert re.search(r"pip install[^\n]*--no-deps[^\n]*/opt/genre-classification/src", post)
    # Lock hash recorded as a label at build time.
    assert "sha256sum" in post and "APPTAINER_LABELS" in post
    # Every line of the lock is a pin (no ranges): "pinned versions".
    pins = lock_pins()
    assert {"tensorflow", "keras", "librosa", "h5py", "snakemake"} <= set(pins)


def test_definition_labels(definition):
    _, sections = definition
    labels = dict(line.split(None, 1) for line in sections["labels"])
    for key in ("org.opencontainers.image.source", "org.genre-classification.lock"):
        assert labels.get(key), f"label {key} missing"
    # The version label is written at build time from the installed package's __version__
    # (the one version, tests/test_release.py), not by hand.
    assert "org.opencontainers.image.version" not in labels
    post = "\n".join(sections["post"])
    assert re.search(r"image\.version .*genre_classification\.__version__.*APPTAINER_LABELS", post)


def test_definition_builds_the_native_pack_reader_where_jobs_find_it(definition):
    _, sections = definition
    post = "\n".join(sections["post"])
    assert re.search(r"apt-get install[^\n]* g\+\+", post), "%post must install g++"
    built = re.search(
        r"GENRE_CLASSIFICATION_OPS_DIR=(\S+) python3 -m genre_classification.features.pack_op", post
    )
    assert built, "%post must build the pack reader (the image is read-only when jobs run)"
    assert f"export GENRE_CLASSIFICATION_OPS_DIR={built.group(1)}" in sections["environment"]
    assert any("pack_op.load()" in line for line in sections["test"])
    assert built.start() > post.index("--no-deps /opt/genre-classification/src")


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
         "import genre_classification, tensorflow as tf; print(tf.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert lock_pins()["tensorflow"] in out
