"""Throughput of per-file HDF5 extraction: `snakemake -c2` against a bare loop, in one run.

    .venv/bin/python benchmarks/bench_extraction.py [--files 100] [--seconds 30] [--cores 2]

Side by side on the same files and cores (audio already present, outputs removed before each):
  bare loop        `cores` Python processes, each importing librosa once and running
                   librosa.load -> melspectrogram -> power_to_db -> h5py write over its share
  snakemake        the workflow's own `snakemake --cores N` building every HDF5 (plus its
                   fetch/screen step), with the workflow profile (run: jobs as threads)
  snakemake spawn  the same with `--workflow-profile none`: one new interpreter per job, which is
                   what a per-file `script:` rule costs (skipped with --no-spawn)
Then one audio file is changed and the rerun is timed: it must extract exactly one file.
Prints wall time, files/s, ratio to the bare loop and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

BARE_LOOP = """
import sys, h5py, librosa, numpy as np
for path in sys.argv[2:]:
    y, sr = librosa.load(path, sr=22050, mono=True)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
    logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).astype(np.float32)
    with h5py.File(sys.argv[1] + "/" + path.replace("/", "_") + ".h5", "w") as h5:
        h5.create_dataset("logmel", data=logmel)
"""


def children_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_bare_loop(files: list[Path], out: Path, cores: int) -> float:
    out.mkdir(parents=True)
    shares = [files[i::cores] for i in range(cores)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", BARE_LOOP, str(out), *map(str, share)])
        for share in shares
    ]
    if any(p.wait() for p in procs):
        raise SystemExit("bare loop failed")
    return time.perf_counter() - start


def snakemake(workdir: Path, cores: int, *extra: str) -> tuple[float, str]:
    command = [
        str(BIN / "snakemake"), "--snakefile", str(REPO / "workflow/Snakefile"),
        "--configfile", "config/config.yaml", "config/bench.yaml", "--cores", str(cores),
        *extra, "--", "extract_all",
    ]  # fmt: skip
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"snakemake failed:\n{result.stdout}\n{result.stderr}")
    return elapsed, result.stdout + result.stderr


def prepare_workdir(root: Path, name: str, audio: Path) -> Path:
    workdir = root / name
    (workdir / "config").mkdir(parents=True)
    shutil.copy(REPO / "config/config.yaml", workdir / "config/config.yaml")
    overlay = {"data": {"source": "dir", "dir": str(audio)}}
    (workdir / "config/bench.yaml").write_text(yaml.safe_dump(overlay))
    return workdir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--no-spawn", action="store_true", help="skip the one-process-per-job run")
    args = parser.parse_args()

    import soundfile as sf

    from genre_classification.demo_data import GENRES, synthesize_clip

    root = Path(tempfile.mkdtemp(prefix="bench-extraction-"))
    audio = root / "audio"
    genres = sorted(GENRES)
    files = []
    for i in range(args.files):
        genre = genres[i % len(genres)]
        (audio / genre).mkdir(parents=True, exist_ok=True)
        path = audio / genre / f"{genre}.{i:05d}.wav"
        sf.write(path, synthesize_clip(genre, args.seconds, 22050, seed=i), 22050)
        files.append(path)
    print(f"{args.files} clips x {args.seconds:.0f} s, {args.cores} cores, in {root}\n")

    header = f"{'run':<46} {'wall s':>8} {'files/s':>8} {'vs bare':>8} {'peak RSS MB':>12}"
    print(header, flush=True)
    bare = run_bare_loop(files, root / "bare", args.cores)

    def row(name: str, seconds: float, rss: float | None) -> None:
        rss_text = f"{rss:12.0f}" if rss is not None else f"{'-':>12}"
        rate = args.files / seconds
        print(f"{name:<46} {seconds:8.2f} {rate:8.1f} {bare / seconds:8.2f} {rss_text}", flush=True)

    row("bare loop (librosa + h5py)", bare, children_peak_rss_mb())

    workdir = prepare_workdir(root, "snakemake", audio)
    elapsed, _ = snakemake(workdir, args.cores)
    row("snakemake (workflow profile: threads)", elapsed, children_peak_rss_mb())
    n_built = len(list((workdir / "results/features").glob("*/*.h5")))
    assert n_built == args.files, f"{n_built} HDF5 files, expected {args.files}"

    if not args.no_spawn:
        spawn_dir = prepare_workdir(root, "spawn", audio)
        elapsed, _ = snakemake(spawn_dir, args.cores, "--workflow-profile", "none")
        row("snakemake, one interpreter per job", elapsed, children_peak_rss_mb())

    changed = files[3]
    sf.write(changed, synthesize_clip(genres[3], args.seconds, 22050, seed=10_000), 22050)
    elapsed, log = snakemake(workdir, args.cores)
    rerun_jobs = log.count("rule extract_features:")
    row(f"rerun after changing 1 file ({rerun_jobs} extracted)", elapsed, None)

    print("\n'vs bare' = throughput relative to the bare loop (target for snakemake: >= 0.5).")
    print("peak RSS = largest single child process so far (cumulative maximum).")
    assert rerun_jobs == 1, f"changing one file re-extracted {rerun_jobs} files"
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
