"""The segment probe's choice of C at collection sizes: grouped cross-validation over train and
val (``track_head.choose_segment_probe``) against the baseline, one fit per C on the train
tracks scored on the val tracks (how the probe chose C before), in one run; and the kNN probe's
choice of k over the same folds (``knn_head.choose_knn_probe``, its reference set capped at
``--knn-max-reference`` segments) against that cross-validated logistic probe.

Synthetic embeddings (``--width`` values per segment, ``--segments`` per track, ``--classes``
genres whose tracks scatter around a centre, segments around their track), 80 % of the tracks
"train" and 20 % "val" for the baseline; each path runs in its own process, so its peak RSS is
its own. Figures: seconds, peak RSS, ratio of seconds (≥ 1: cross-validation is slower; kNN:
≥ 1 is slower than the cross-validated logistic probe).

    python benchmarks/bench_probe.py --tracks 2000 8000 [--segments 10] [--width 200]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import numpy as np

from genre_classification.training.model_kinds import musicnn_options

KNN = {"architecture": "musicnn", "options": {"mode": "probe", "classifier": "knn"}}


def embeddings(n_tracks: int, segments: int, width: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n_tracks) % classes
    centres = rng.normal(0, 1, (classes, width))
    tracks = centres[y] + rng.normal(0, 6.0, (n_tracks, width))
    owners = np.repeat(np.arange(n_tracks), segments)
    x = (tracks[owners] + rng.normal(0, 6.0, (len(owners), width))).astype(np.float32)
    return x, owners, y


def cross_validated(args, queue) -> None:
    from genre_classification.training import track_head

    x, owners, y = embeddings(args.n, args.segments, args.width, args.classes)
    start = time.perf_counter()
    choice = track_head.choose_segment_probe(x, owners, y, np.arange(len(y)), args.classes, 0)
    seconds = time.perf_counter() - start
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, choice.c))


def knn_cross_validated(args, queue) -> None:
    from genre_classification.training import knn_head

    x, owners, y = embeddings(args.n, args.segments, args.width, args.classes)
    start = time.perf_counter()
    choice = knn_head.choose_knn_probe(
        x, owners, y, np.arange(len(y)), args.classes, 0, args.knn_max_reference
    )
    seconds = time.perf_counter() - start
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, choice.k))


def validation_grid(args, queue) -> None:
    from genre_classification.training import track_head

    x, owners, y = embeddings(args.n, args.segments, args.width, args.classes)
    start = time.perf_counter()
    train = owners % 5 != 0  # 80 % of the tracks
    mean, variance = track_head.standardisation(x[train])
    scale = np.sqrt(variance)
    xt, xv = (x[train] - mean) / scale, (x[~train] - mean) / scale
    best = None
    for c in track_head.PROBE_C:
        kernel, bias = track_head.fit_probe(xt, y[owners[train]], args.classes, c, 0)
        loss = track_head.log_loss(xv @ kernel + bias, y[owners[~train]])
        best = min(best or (loss, c), (loss, c))
    seconds = time.perf_counter() - start
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, best[1]))


def measure(target, args) -> tuple[float, float, float]:
    queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=target, args=(args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument(
        "--knn-max-reference", type=int, default=musicnn_options(KNN)["knn_max_reference"]
    )
    args = parser.parse_args()
    print(
        "tracks  segments | baseline: s, peak MB, C | cross-validated: s, peak MB, C | ratio "
        "| kNN: s, peak MB, k | ratio to cross-validated"
    )
    for n in args.tracks:
        args.n = n
        base = measure(validation_grid, args)
        cv = measure(cross_validated, args)
        knn = measure(knn_cross_validated, args)
        print(
            f"{n:6d}  {n * args.segments:8d} | {base[0]:7.1f} {base[1]:7.0f} {base[2]:8.2g} | "
            f"{cv[0]:7.1f} {cv[1]:7.0f} {cv[2]:8.2g} | {cv[0] / base[0]:5.2f} | "
            f"{knn[0]:7.1f} {knn[1]:7.0f} {knn[2]:4d} | {knn[0] / cv[0]:5.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
