"""Training input paths side by side, same files, same run: segments/s and peak RSS.

* ``packed``: the workflow's path (``streaming: true``, the default): batches read from the
  shards' packs (``genre_classification.features.packs``) by the native pack reader (``pack_op``) in
  parallel ``tf.data`` map calls;
* ``packed-python``: the same batches read by the Python reader (``packs.PackReader`` in a
  ``tf.numpy_function``), the fallback where no C++ compiler is installed;
* ``in-memory``: the path before packs (every training segment in one array, batches gathered
  by ``tf.gather`` from a ``tf.constant`` of it), kept here as the baseline;
* ``h5py``: a bare read of every per-file HDF5 in random file order (the ceiling of reading the
  features at all, no batching).

Each path runs in a fresh process (its peak RSS is its own), over ``--segments`` shuffled
segments in batches of ``--batch-size``, at each ``--tracks`` count; tracks are synthetic
30 s clips (10 segments of 128 x 129, as the default features), in ``--shards`` packs.

    python benchmarks/bench_loader.py --tracks 1000 20000
    python benchmarks/bench_loader.py --tracks 1000 --paths packed packed-python h5py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

SEGMENTS_PER_TRACK, N_MELS, FRAMES = 10, 128, 129
PATHS = ("packed", "packed-python", "in-memory", "h5py")


def make_data(root: Path, n_tracks: int, n_shards: int) -> Path:
    """Synthetic HDF5s, packs of ``n_shards`` shards and a split table (80 % train)."""
    import h5py
    import pandas as pd

    from genre_classification.features.packs import pack_path, write_pack

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_tracks):
        genre = f"genre{i % 6}"
        path = root / "features" / genre / f"t{i:06d}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        x = rng.normal(-40, 10, (SEGMENTS_PER_TRACK, N_MELS, FRAMES)).astype(np.float32)
        with h5py.File(path, "w") as h5:
            h5.create_dataset("logmel", data=x)
            h5.attrs["label"] = genre
        split = "train" if i % 5 else "val"
        rows.append((genre, f"t{i:06d}", split, str(path), SEGMENTS_PER_TRACK, "md5", i % n_shards))
    table = pd.DataFrame(
        rows, columns=["genre", "track", "split", "features", "n_segments", "source_md5", "shard"]
    )
    for shard, files in table.groupby("shard"):
        write_pack(files, pack_path(root / "features", f"{shard:05d}"))
    table.drop(columns="shard").to_csv(root / "split.tsv", sep="\t", index=False)
    return root / "split.tsv"


def packs_of(root: Path) -> list[str]:
    # each pack has an index <shard>.tsv beside it (and band sums <shard>.sums.npy)
    return sorted(str(p.with_suffix(".npy")) for p in (root / "features" / ".packs").glob("*.tsv"))


def measure(path: str, root: Path, n_segments: int, batch_size: int) -> dict:
    """One path in this process: ``{"segments": n, "seconds": s}`` of the timed part."""
    from genre_classification.training import dataset

    split = dataset.read_split(root / "split.tsv")
    rows = split[split.split == "train"]
    labels = dataset.genre_labels(split)
    steps = n_segments // batch_size
    if path == "h5py":
        from genre_classification.features.features import read_features

        order = np.random.default_rng(0).permutation(len(rows))
        files = rows["features"].to_numpy()
        start, count, i = time.perf_counter(), 0, 0
        while count < n_segments:
            count += len(read_features(files[order[i % len(order)]])[0])
            i += 1
        return {"segments": count, "seconds": time.perf_counter() - start}
    from genre_classification.features import pack_op

    if path == "packed-python":
        os.environ[pack_op.READER_ENV] = "python"
    elif path == "packed" and pack_op.load() is None:
        raise SystemExit("the native pack reader is not available (see the warning above)")
    packed = dataset.PackedSegments(rows, labels, packs_of(root))
    if path.startswith("packed"):
        ds = dataset.train_dataset(packed, batch_size, seed=0, initial_epoch=0, epochs=10**6)
    else:
        ds = in_memory_baseline(packed.load(), batch_size)
    consume(ds, 5)  # tracing and the first fill of the buffers
    start = time.perf_counter()
    consume(ds, steps)
    return {"segments": steps * batch_size, "seconds": time.perf_counter() - start}


def consume(ds, steps: int):
    """Iterate ``steps`` batches in graph mode, as ``model.fit`` does (no Python per batch)."""
    import tensorflow as tf

    return ds.take(steps).reduce(
        tf.constant(0.0), lambda total, batch: total + batch[0][0, 0, 0, 0]
    )


def in_memory_baseline(data, batch_size: int, epochs: int = 50):
    """The in-memory ``tf.data`` pipeline before packs (``dataset.train_dataset`` up to
    2026-12): permutations of every epoch, ``tf.gather`` from a ``tf.constant`` of the data."""
    import tensorflow as tf

    from genre_classification.training.dataset import epoch_permutation

    perms = np.stack([epoch_permutation(len(data), 0, e) for e in range(epochs)])
    x, y = tf.constant(data.x), tf.constant(data.y)

    def gather(idx):
        return tf.expand_dims(tf.gather(x, idx), -1), tf.gather(y, idx)

    ds = tf.data.Dataset.from_tensor_slices(perms).flat_map(
        lambda p: tf.data.Dataset.from_tensor_slices(p).batch(batch_size)
    )
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def child(args) -> None:
    result = measure(args.child, Path(args.root), args.segments, args.batch_size)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT", json.dumps(result), flush=True)
    os._exit(0)  # an unfinished tf.data generator would hold the interpreter at exit


def run_path(path: str, root: Path, args) -> dict:
    command = [sys.executable, __file__, "--child", path, "--root", str(root)]
    command += ["--segments", str(args.segments), "--batch-size", str(args.batch_size)]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    reason = "killed (out of memory?)" if done.returncode < 0 else done.stderr.strip()[-300:]
    return {"error": reason}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--segments", type=int, default=60000, help="timed segments per path")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tracks-per-shard", type=int, default=2500)
    parser.add_argument(
        "--max-in-memory-gb", type=float, default=8.0, help="larger: no in-memory run (needs 2x)"
    )
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    results = {}
    for n_tracks in args.tracks:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
            root = Path(tmp)
            start = time.perf_counter()
            shards = max(1, round(n_tracks / args.tracks_per_shard))
            make_data(root, n_tracks, shards)
            train_gb = n_tracks * 0.8 * SEGMENTS_PER_TRACK * N_MELS * FRAMES * 4 / 1e9
            print(f"{n_tracks} tracks, {shards} packs, {train_gb:.1f} GB of training segments "
                  f"(made in {time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
            for path in args.paths:
                if path == "in-memory" and train_gb > args.max_in_memory_gb:
                    results[n_tracks, path] = {"error": f"not run: needs ~{2 * train_gb:.0f} GB"}
                else:
                    results[n_tracks, path] = run_path(path, root, args)
                print(f"  {path:10s} {fmt(results[n_tracks, path])}", flush=True)
    print()
    print("| tracks | path | segments/s | peak RSS MB | vs in-memory | vs h5py |")
    print("|---|---|---|---|---|---|")
    for (n_tracks, path), r in results.items():
        base = {p: results.get((n_tracks, p), {}).get("segments") and rate(results[n_tracks, p])
                for p in ("in-memory", "h5py")}  # fmt: skip
        if "error" in r:
            print(f"| {n_tracks:,} | {path} | {r['error']} | | | |")
            continue
        ratios = [f"{rate(r) / base[p]:.2f}" if base[p] else "-" for p in ("in-memory", "h5py")]
        print(f"| {n_tracks:,} | {path} | {rate(r):,.0f} | {r['peak_rss_mb']:,.0f} | "
              f"{ratios[0]} | {ratios[1]} |")  # fmt: skip


def rate(result: dict) -> float:
    return result["segments"] / result["seconds"]


def fmt(result: dict) -> str:
    if "error" in result:
        return result["error"]
    return f"{rate(result):9,.0f} segments/s, peak RSS {result['peak_rss_mb']:,.0f} MB"


if __name__ == "__main__":
    main()
