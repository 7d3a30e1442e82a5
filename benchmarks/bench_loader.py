"""Is the input pipeline the bottleneck? Loader throughput vs training throughput (segments/s).

Measures, on this machine and the same data:

* HDF5 read: reading every training segment from the per-file HDF5 into memory (once per job),
* in-memory tf.data loader (the default): iterating shuffled, batched, prefetched batches,
* streaming tf.data loader (``streaming: true``): reading the HDF5 files while iterating,
* training: ``model.fit`` of the configured model on the in-memory loader (first epoch excluded:
  it includes graph tracing).

The loader is not the bottleneck when its throughput is well above the training throughput.

    python benchmarks/bench_loader.py                      # results/split/split.tsv if present
    python benchmarks/bench_loader.py --split other/split.tsv --model efficientnet
    python benchmarks/bench_loader.py --synthetic 300      # 300 synthetic tracks in a temp dir
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from genre_classification import dataset, models  # noqa: E402


def synthetic_split(root: Path, n_tracks: int, n_mels: int = 128, frames: int = 129) -> Path:
    """``n_tracks`` tracks of 2 segments each in 6 genres, in the contract's HDF5 format."""
    rng = np.random.default_rng(0)
    genres = [f"genre{g}" for g in range(6)]
    lines = ["genre\ttrack\tsplit\tfeatures\tn_segments\tsource_md5"]
    for i in range(n_tracks):
        genre = genres[i % 6]
        path = root / genre / f"t{i:05d}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        x = rng.normal(-40, 10, (2, n_mels, frames)).astype(np.float32)
        with h5py.File(path, "w") as h5:
            h5.create_dataset("logmel", data=x)
            h5.attrs["label"] = genre
        split = "val" if i % 10 == 0 else "train"
        lines.append(f"{genre}\tt{i:05d}\t{split}\t{path}\t2\tmd5")
    split_path = root / "split.tsv"
    split_path.write_text("\n".join(lines) + "\n")
    return split_path


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:10.0f} segments/s  ({n} segments in {seconds:.2f} s)"


def iterate(ds, steps: int) -> float:
    start = time.perf_counter()
    for _ in ds.take(steps):
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="results/split/split.tsv")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--model", default="cnn", help="entry of training.models")
    parser.add_argument("--synthetic", type=int, default=0, help="use N synthetic tracks")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    cfg = {"architecture": "cnn", "batch_size": 32, "optimizer": "adam", "learning_rate": 1e-3}
    if Path(args.config).is_file():
        cfg.update(yaml.safe_load(Path(args.config).read_text())["training"]["models"][args.model])
    bs = cfg["batch_size"]

    tmp = None
    split_path = Path(args.split)
    if args.synthetic or not split_path.is_file():
        tmp = tempfile.TemporaryDirectory()
        split_path = synthetic_split(Path(tmp.name), args.synthetic or 240)
        print(f"data: {args.synthetic or 240} synthetic tracks (128 mels x 129 frames)")
    else:
        print(f"data: {split_path}")
    split = dataset.read_split(split_path)
    labels = dataset.genre_labels(split)
    rows = split[split.split == "train"]

    start = time.perf_counter()
    data = dataset.load_segments(rows, labels)
    read_s = time.perf_counter() - start
    n, steps = len(data), dataset.steps_per_epoch(len(data), bs)
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"{n} training segments of {data.x.shape[1:]}, batch size {bs}, {args.threads} threads,")
    print(f"model {args.model} ({cfg['architecture']}), device {device}\n")

    ds = dataset.train_dataset(data, bs, seed=0, initial_epoch=0, epochs=args.epochs + 1)
    iterate(ds, steps)  # warm-up epoch
    mem_s = iterate(ds.skip(steps), steps * args.epochs)
    stream, _ = dataset.streaming_train_dataset(rows, labels, bs, 0, 0, args.epochs)
    stream_s = iterate(stream, steps * args.epochs)

    models.set_precision(bool(cfg.get("mixed_precision")))
    model = models.build_model(
        cfg["architecture"],
        data.input_shape,
        len(labels),
        *dataset.band_stats(data.x),
        **(cfg.get("options") or {}),
    )
    models.compile_model(model, cfg["optimizer"], cfg["learning_rate"])
    times = []

    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    fit_ds = dataset.train_dataset(data, bs, seed=0, initial_epoch=0, epochs=args.epochs + 1)
    model.fit(
        fit_ds,
        epochs=args.epochs + 1,
        steps_per_epoch=steps,
        verbose=0,
        shuffle=False,
        callbacks=[EpochTimer()],
    )
    train_s = sum(times[1:])

    print(f"HDF5 read into memory (once per job)  {rate(n, read_s)}")
    print(f"tf.data in-memory loader (default)    {rate(n * args.epochs, mem_s)}")
    print(f"tf.data streaming loader              {rate(n * args.epochs, stream_s)}")
    print(f"training, model.fit                   {rate(n * args.epochs, train_s)}")
    ratio = (n * args.epochs / mem_s) / (n * args.epochs / train_s)
    verdict = "not the bottleneck" if ratio > 2 else "a possible bottleneck"
    print(f"\nin-memory loader / training throughput = {ratio:.0f}x: the loader is {verdict}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
