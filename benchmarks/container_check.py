"""Execute the image recipe without Apptainer: `make container-check`.

Apptainer cannot run on the development machines (no package, no Docker engine), but the steps of
containers/genre-classification.def can. This script builds the image's root filesystem from the
recipe the way `apptainer build` would, then uses it as the jobs' image:

1. bootstrap: `debootstrap --variant=minbase <OSVersion> <rootfs> <MirrorURL>` (the header of a
   `Bootstrap: debootstrap` recipe; Apptainer runs the same program);
2. %files: copied from the repository root into the root filesystem;
3. %post: run as root in the root filesystem (bubblewrap with a writable root, the host's DNS
   configuration), with $APPTAINER_LABELS; %environment, %test, %runscript and the labels are
   written where Apptainer keeps them (/.singularity.d);
4. %test: `apptainer test` through benchmarks/bwrap_apptainer/apptainer, bubblewrap standing in
   for Apptainer (the root filesystem read-only);
5. a demo job: the workflow on the tiny data set with `--sdm apptainer` and that stand-in on PATH,
   the image = the root filesystem: extraction, training and evaluation of a small model inside
   it, with the workflow's own container wiring (the checkout's package exported to the jobs).

Build arguments ({{ NAME }}): DEBIAN_MIRROR (default: the first Debian mirror of this machine's
apt sources), PACKAGE_VERSION (the package's __version__). Not verified here: Apptainer itself
(SIF packing, its mount and environment handling), `--nv` and a GPU.

    python benchmarks/container_check.py [--workdir /tmp/genre-container-check] [--reuse-rootfs]

Writes <workdir>/container_check.json (step times, root filesystem size, results) and prints it.
It downloads about 4 GB (Debian packages, the lock's wheels, the CUDA wheels).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEF_FILE = REPO / "containers" / "genre-classification.def"
SHIM_DIR = Path(__file__).resolve().parent / "bwrap_apptainer"
BIN = Path(sys.executable).parent
SECTIONS = {
    "setup", "files", "post", "environment", "runscript", "test", "labels", "help",
    "startscript", "app", "arguments",
}  # fmt: skip
TINY_MODEL = {
    "architecture": "cnn", "optimizer": "adam", "learning_rate": 0.005, "epochs": 3,
    "batch_size": 16, "early_stopping": {"patience": 10}, "seed": 1,
    "mixed_precision": False, "options": {"filters": [4, 8]},
}  # fmt: skip


def parse_recipe(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """-> (header {key: value}, {section: body text, lines as written})."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("%") and line[1:].split()[0] in SECTIONS:
            current = line[1:].split()[0]
            sections[current] = []
        elif current is None:
            if line and not line.startswith("#"):
                key, _, value = line.partition(":")
                header[key.strip()] = value.strip()
        else:
            sections[current].append(raw)
    return header, {name: "\n".join(lines) + "\n" for name, lines in sections.items()}


def substitute(text: str, args: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in args:
            raise SystemExit(f"build argument {name} has no value (--build-arg {name}=...)")
        return args[name]

    return re.sub(r"\{\{\s*(\w+)\s*\}\}", value, text)


def host_debian_mirror() -> str | None:
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and line.split()[1].rstrip("/").endswith("/debian"):
                return line.split()[1]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and parts[1].rstrip("/").endswith("/debian"):
                return parts[1]
    return None


def run(cmd: list[str], log, **kwargs) -> None:
    print("+", " ".join(cmd[:12]), "..." if len(cmd) > 12 else "", file=log, flush=True)
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, **kwargs)


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", "-x", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def write_scripts(rootfs: Path, sections: dict, args: dict) -> None:
    """%environment, %test and %runscript where Apptainer keeps them (not build steps: a reused
    root filesystem gets the recipe's current ones)."""
    meta = rootfs / ".singularity.d"
    (meta / "env" / "90-environment.sh").write_text(
        "#!/bin/sh\n" + substitute(sections.get("environment", ""), args)
    )
    (meta / "test").write_text("#!/bin/sh\n" + substitute(sections.get("test", ""), args))
    (meta / "runscript").write_text("#!/bin/sh\n" + substitute(sections.get("runscript", ""), args))


def build_rootfs(rootfs: Path, header: dict, sections: dict, args: dict, log, times: dict) -> dict:
    if header.get("Bootstrap") != "debootstrap":
        raise SystemExit(f"only 'Bootstrap: debootstrap' recipes run here, not {header}")
    if rootfs.exists():
        shutil.rmtree(rootfs)
    base = rootfs.with_name("base")  # the bootstrapped base, kept for reruns of %post
    t0 = time.time()
    if not (base / "etc" / "debian_version").exists():
        if base.exists():
            shutil.rmtree(base)
        cmd = ["debootstrap", "--variant=minbase"]
        if header.get("Include"):
            cmd.append("--include=" + ",".join(header["Include"].split()))
        cmd += [header["OSVersion"], str(base), substitute(header["MirrorURL"], args)]
        run(cmd, log)
        times["bootstrap_s"] = round(time.time() - t0, 1)
    else:
        times["bootstrap_s"] = "reused"
    run(["cp", "-a", str(base), str(rootfs)], log)
    size_base = du_bytes(rootfs)

    t0 = time.time()
    for line in sections.get("files", "").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        src, dst = REPO / words[0], rootfs / words[-1].lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    shutil.copy2("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
    # This machine's network intercepts TLS: its extra CA certificates go where Debian's
    # ca-certificates (installed by %post) adds them to the system bundle, which pip/uv use.
    extra_cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    for cert in extra_cas:
        dest = rootfs / "usr/local/share/ca-certificates" / cert.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cert, dest)
    meta = rootfs / ".singularity.d"
    (meta / "env").mkdir(parents=True, exist_ok=True)
    (meta / "libs").mkdir(exist_ok=True)
    post = substitute(sections.get("post", ""), args)
    (rootfs / ".post.sh").write_text(post)
    (rootfs / ".build.labels").write_text("")
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root", "LANG": "C.UTF-8", "APPTAINER_LABELS": "/.build.labels",
        "APPTAINER_ROOTFS": "/", "APPTAINER_ENVIRONMENT": "/.singularity.d/env/91-environment.sh",
    }  # fmt: skip
    if extra_cas:
        bundle = "/etc/ssl/certs/ca-certificates.crt"
        env.update(SSL_CERT_FILE=bundle, PIP_CERT=bundle, REQUESTS_CA_BUNDLE=bundle)
    bwrap = [
        "bwrap", "--bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev",
        "--tmpfs", "/tmp", "--cap-add", "ALL", "--unshare-pid", "--die-with-parent",
        "/bin/sh", "-e", "-x", "/.post.sh",
    ]  # fmt: skip
    run(bwrap, log, env=env)
    times["post_s"] = round(time.time() - t0, 1)

    write_scripts(rootfs, sections, args)
    labels = {}
    for line in (
        sections.get("labels", "").splitlines()
        + (rootfs / ".build.labels").read_text().splitlines()
    ):
        if line.strip():
            key, _, value = line.strip().partition(" ")
            labels[key] = value.strip()
    (meta / "labels.json").write_text(json.dumps(labels, indent=1))
    for leftover in (".post.sh", ".build.labels"):
        (rootfs / leftover).unlink()
    (rootfs / "etc" / "resolv.conf").write_text("")  # Apptainer binds the host's at run time
    return {
        "labels": labels,
        "size_base_bytes": size_base,
        "extra_ca_certificates": [c.name for c in extra_cas],
    }


def demo_job(rootfs: Path, workdir: Path, log) -> dict:
    """The workflow on the tiny data set, its jobs in the root filesystem."""
    sys.path.insert(0, str(REPO))
    import yaml

    from genre_classification.data.demo_data import TINY_DATA, make_demo_repo

    work = workdir / "demo"
    if work.exists():
        shutil.rmtree(work)
    test_config = yaml.safe_load((REPO / ".test/config/config.yaml").read_text())
    dvc = test_config["data"]["dvc"]
    repo = work / dvc["repo"]
    make_demo_repo(repo, repo.parent / "dvc-remote", dvc["target"], **TINY_DATA)
    (work / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config/config.yaml", work / "config/config.yaml")
    shutil.copy(REPO / ".test/config/config.yaml", work / "config/test.yaml")
    overlay = {
        "container": {"image": str(rootfs)},
        "training": {"run": ["tiny"], "models": {"tiny": TINY_MODEL}},
        "extraction": {"threads": 2},
    }
    (work / "config/check.yaml").write_text(yaml.safe_dump(overlay))
    calls = workdir / "apptainer_calls.jsonl"
    calls.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PATH": f"{SHIM_DIR}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
        "BWRAP_APPTAINER_LOG": str(calls),
    }
    target = "results/eval/tiny/metrics.json"
    t0 = time.time()
    run(
        [
            str(BIN / "snakemake"), "--snakefile", str(REPO / "workflow/Snakefile"),
            "--configfile", "config/config.yaml", "config/test.yaml", "config/check.yaml",
            "--cores", "2", "--sdm", "apptainer", "--apptainer-args", "--nv --bind /tmp",
            target,
        ],
        log, cwd=work, env=env,
    )  # fmt: skip
    elapsed = round(time.time() - t0, 1)
    metrics = json.loads((work / target).read_text())
    execs = [json.loads(line) for line in calls.read_text().splitlines()]
    return {
        "demo_s": elapsed,
        "apptainer_exec_calls": len(execs),
        "metrics": {k: metrics.get(k) for k in ("accuracy", "macro_f1")},
        "code": metrics.get("code"),
        "image": metrics.get("image"),
        "gpu": metrics.get("gpu"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/genre-container-check"))
    parser.add_argument("--reuse-rootfs", action="store_true", help="skip the build if it exists")
    parser.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    opts = parser.parse_args()
    for tool in ("debootstrap", "bwrap"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install debootstrap bubblewrap")
    sys.path.insert(0, str(REPO))
    from genre_classification import __version__

    header, sections = parse_recipe(DEF_FILE.read_text())
    args = {
        k.strip(): v.strip()
        for k, _, v in (line.partition("=") for line in sections.get("arguments", "").splitlines())
        if k.strip()
    }
    args["PACKAGE_VERSION"] = __version__
    mirror = os.environ.get("DEBIAN_MIRROR") or host_debian_mirror()
    if mirror:
        args["DEBIAN_MIRROR"] = mirror
    args.update(dict(a.split("=", 1) for a in opts.build_arg))
    opts.workdir.mkdir(parents=True, exist_ok=True)
    rootfs = opts.workdir / "rootfs"
    logfile = opts.workdir / "container_check.log"
    report: dict = {"recipe": str(DEF_FILE.relative_to(REPO)), "header": header, "steps": {}}
    t_start = time.time()
    with open(logfile, "a") as log:
        built = rootfs / ".singularity.d" / "labels.json"
        build_record = opts.workdir / "build.json"
        if opts.reuse_rootfs and built.exists():
            report["labels"] = json.loads(built.read_text())
            report["steps"]["build"] = "reused"
            write_scripts(rootfs, sections, args)
            if build_record.exists():
                report["build"] = json.loads(build_record.read_text())
        else:
            build = build_rootfs(rootfs, header, sections, args, log, report["steps"])
            build["steps"] = dict(report["steps"])
            build_record.write_text(json.dumps(build, indent=1))
            report.update(build)
        report["rootfs_bytes"] = du_bytes(rootfs)
        t0 = time.time()
        run([str(SHIM_DIR / "apptainer"), "test", str(rootfs)], log)
        report["steps"]["test_s"] = round(time.time() - t0, 1)
        report.update(demo_job(rootfs, opts.workdir, log))
    report["wall_s"] = round(time.time() - t_start, 1)
    report["not_verified"] = [
        "Apptainer itself (SIF packing, its binds and environment handling): bubblewrap stands in",
        "--nv and a GPU: no GPU here; TensorFlow's CUDA build and the CUDA wheels are only "
        "imported",
    ]
    (opts.workdir / "container_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
