"""Feature extraction at scale: the workflow against a bare loop on the same clips, in one run.

    .venv/bin/python benchmarks/bench_scale.py                       # 100x30, 10000x3.5, 50000x3.5
    .venv/bin/python benchmarks/bench_scale.py --sizes 100x30 2000x3.5 --plot docs/scale.svg

For each size N x seconds (plain-directory source, audio present, 2 cores by default):
  bare loop     `cores` Python processes, each importing librosa once and running
                librosa.load -> melspectrogram -> power_to_db -> h5py write over its share,
                twice: with BLAS threads as the library sets them (the issue's loop, `bare_s`)
                and with one BLAS thread per process (a tuned loop, `tuned_s`, as the
                workflow's workers run); --baselines picks one or both
  workflow      `snakemake --cores N extract_all` in a fresh working directory: listing, fetch,
                every shard job, the collected manifest (i.e. fetch to the last HDF5)
  no-op rerun   the same command again ("Nothing to be done")
  dry run       `snakemake -n extract_all`
  1 changed     every file's mtime touched (as a `dvc pull` does) and one file rewritten; the
                rerun must rewrite exactly one HDF5 (counted by mtimes)
Prints each row as it is measured; `ratio` = bare seconds / workflow seconds (target >= 0.7),
`tuned_ratio` = tuned seconds / workflow seconds.
With --plot, draws time against N (log-log) for both, and --json keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RATE = 22050
BASE_CLIPS = 16  # distinct synthetic clips per genre; each file adds its own noise to one

BARE_LOOP = """
import sys, h5py, librosa, numpy as np
out = sys.argv[1]
for path in sys.stdin.read().split("\\n"):
    if not path:
        continue
    y, sr = librosa.load(path, sr=22050, mono=True)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
    logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).astype(np.float32)
    with h5py.File(out + "/" + path.replace("/", "_") + ".h5", "w") as h5:
        h5.create_dataset("logmel", data=logmel)
"""


def _write_share(args: tuple) -> None:
    import soundfile as sf

    from genre_classification.data.demo_data import synthesize_clip

    audio, genres, seconds, indices = args
    bases = {
        (g, b): synthesize_clip(g, seconds, RATE, seed=b) for g in genres for b in range(BASE_CLIPS)
    }
    for i in indices:
        genre = genres[i % len(genres)]
        rng = np.random.default_rng(i)
        clip = bases[genre, i % BASE_CLIPS] + 0.01 * rng.standard_normal(int(seconds * RATE))
        sf.write(audio / genre / f"{genre}.{i:06d}.wav", clip.astype(np.float32), RATE)


def make_clips(audio: Path, n: int, seconds: float, cores: int) -> list[Path]:
    from genre_classification.data.demo_data import GENRES

    genres = sorted(GENRES)
    for genre in genres:
        (audio / genre).mkdir(parents=True, exist_ok=True)
    shares = [(audio, genres, seconds, range(k, n, cores)) for k in range(cores)]
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_write_share, shares))
    return sorted(audio.glob("*/*.wav"))


def bare_loop(files: list[Path], out: Path, cores: int, blas_threads: int | None = None) -> float:
    """``blas_threads``: OPENBLAS/OMP_NUM_THREADS of each bare process (None: the library's
    default, one thread per core, as a plain script gets)."""
    out.mkdir(parents=True)
    env = dict(os.environ)
    if blas_threads:
        env.update(OPENBLAS_NUM_THREADS=str(blas_threads), OMP_NUM_THREADS=str(blas_threads))
    start = time.perf_counter()
    procs = []
    for k in range(cores):
        command = [sys.executable, "-c", BARE_LOOP, str(out)]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
        proc.stdin.write("\n".join(map(str, files[k::cores])).encode())
        proc.stdin.close()
        procs.append(proc)
    if any(p.wait() for p in procs):
        raise SystemExit("bare loop failed")
    return time.perf_counter() - start


def snakemake(workdir: Path, *args: str) -> tuple[float, str]:
    command = [
        str(BIN / "snakemake"), "--snakefile", str(REPO / "workflow/Snakefile"),
        "--configfile", "config/config.yaml", "config/bench.yaml", *args, "--", "extract_all",
    ]  # fmt: skip
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed, result.stdout + result.stderr


def feature_mtimes(workdir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (workdir / "results/features").glob("*/*.h5")}


def measure(root: Path, n: int, seconds: float, cores: int, baselines: list[str]) -> dict:
    import soundfile as sf

    from genre_classification.data.demo_data import synthesize_clip

    audio = root / "audio"
    start = time.perf_counter()
    files = make_clips(audio, n, seconds, cores)
    print(f"  ({n} clips written in {time.perf_counter() - start:.0f} s)", flush=True)
    result = {"files": n, "seconds": seconds, "cores": cores}
    for name, blas_threads in BASELINES.items():
        if name in baselines:
            result[f"{name}_s"] = bare_loop(files, root / "bare", cores, blas_threads)
            shutil.rmtree(root / "bare")

    workdir = root / "work"
    (workdir / "config").mkdir(parents=True)
    shutil.copy(REPO / "config/config.yaml", workdir / "config/config.yaml")
    overlay = {"data": {"source": "dir", "dir": str(audio)}}
    (workdir / "config/bench.yaml").write_text(yaml.safe_dump(overlay))
    cores_arg = ("--cores", str(cores))
    result["workflow_s"], _ = snakemake(workdir, *cores_arg)
    for name in baselines:
        result[RATIO[name]] = result[f"{name}_s"] / result["workflow_s"]
    built = feature_mtimes(workdir)
    assert len(built) == n, f"{len(built)} HDF5 files, expected {n}"
    result["shards"] = len(list((workdir / "results/features/.shards").glob("*.tsv")))
    result["noop_s"], log = snakemake(workdir, *cores_arg)
    assert "Nothing to be done" in log, log[-2000:]
    result["dry_run_s"], _ = snakemake(workdir, "--dry-run")

    for path in files:
        os.utime(path)
    genre = files[n // 2].parent.name
    sf.write(files[n // 2], synthesize_clip(genre, seconds, RATE, seed=10**6), RATE)
    result["one_changed_s"], _ = snakemake(workdir, *cores_arg)
    after = feature_mtimes(workdir)
    result["rewritten"] = sum(after[p] != built[p] for p in built)
    return result


# Baseline name -> BLAS threads of each bare process (None: the library's default).
BASELINES = {"bare": None, "tuned": 1}
RATIO = {"bare": "ratio", "tuned": "tuned_ratio"}
# (name, format): each column is as wide as its name.
COLUMNS = [
    ("files", "d"), ("seconds", ".1f"), ("shards", "d"), ("bare_s", ".1f"), ("tuned_s", ".1f"),
    ("workflow_s", ".1f"), ("ratio", ".2f"), ("tuned_ratio", ".2f"), ("noop_s", ".1f"),
    ("dry_run_s", ".1f"), ("one_changed_s", ".1f"), ("rewritten", "d"),
]  # fmt: skip


def table_row(values: dict | None = None) -> str:
    if values is None:
        return "  ".join(f"{name:>{max(len(name), 7)}}" for name, _ in COLUMNS)
    return "  ".join(
        f"{values[name]:>{max(len(name), 7)}{fmt}}"
        if name in values
        else f"{'-':>{max(len(name), 7)}}"
        for name, fmt in COLUMNS
    )


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    n = [r["files"] for r in results]
    for name, label in (
        ("bare", "issue's bare loop (2 processes)"),
        ("tuned", "tuned bare loop (1 BLAS thread)"),
    ):
        if all(f"{name}_s" in r for r in results):
            ax.loglog(n, [r[f"{name}_s"] for r in results], "o-", label=label)
    ax.loglog(n, [r["workflow_s"] for r in results], "s-", label="snakemake -c2 extract_all")
    ax.loglog(n, [r["noop_s"] for r in results], "^--", label="no-op rerun")
    for r in results:
        ax.annotate(f"{r['seconds']:g} s clips", (r["files"], r["workflow_s"]), fontsize=7)
    ax.set_xlabel("audio files")
    ax.set_ylabel("wall time (s)")
    ax.set_title("Feature extraction: time against collection size (2 cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["100x30", "10000x3.5", "50000x3.5"])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--plot", type=Path, help="write time against N to this SVG/PNG")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument(
        "--baselines",
        nargs="+",
        choices=sorted(BASELINES),
        default=sorted(BASELINES),
        help="bare: BLAS threads as the library sets them; tuned: one BLAS thread per process",
    )
    args = parser.parse_args()

    print(table_row(), flush=True)
    results = []
    for size in args.sizes:
        n, seconds = size.split("x")
        root = Path(tempfile.mkdtemp(prefix=f"bench-scale-{n}-"))
        try:
            result = measure(root, int(n), float(seconds), args.cores, args.baselines)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        results.append(result)
        print(table_row(result), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        if args.plot:
            plot(results, args.plot)
    print("\nratio = bare s / workflow s (target >= 0.7); no-op and dry run target <= 10 s at 10k;")
    print("rewritten = HDF5 files whose mtime changed after touching all and changing one (1).")


if __name__ == "__main__":
    main()
