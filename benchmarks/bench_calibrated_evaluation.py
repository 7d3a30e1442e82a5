"""Evaluating a temperature-scaled model: one pass for the answers with and without T against
two passes (the baseline: the scaled model, then the same layers without T), in one run.

Both give the track answers with T (``ece``) and without (``ece_uncalibrated``); the figures are
the seconds of each, their ratio (≥ 1: one pass is faster) and the largest difference between
their answers. The model is the default CNN with untrained weights (inference costs the same),
scaled by ``calibration.with_temperature``; the segments are random log-mel arrays, ``--per-track``
per track, predicted in ``PREDICT_BATCH`` batches as evaluation does.

    python benchmarks/bench_calibrated_evaluation.py --tracks 400 [--per-track 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from genre_classification.aggregation import aggregate_tracks  # noqa: E402
from genre_classification.features.features import FeatureParams  # noqa: E402
from genre_classification.training import calibration, models  # noqa: E402
from genre_classification.training.calibration import PREDICT_BATCH  # noqa: E402


def unscaled_model(scaled):
    """The baseline's second model: the scaled model's layers up to the logits, then softmax."""
    import keras

    outputs = keras.layers.Activation("softmax")(scaled.get_layer("logits").output)
    return keras.Model(scaled.inputs, outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=400)
    parser.add_argument("--per-track", type=int, default=10)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    params = FeatureParams()
    shape = (params.n_mels, params.frames_per_segment, 1)
    model = models.build_model(
        "cnn", shape, args.classes, np.zeros(params.n_mels), np.ones(params.n_mels)
    )
    scaled = calibration.with_temperature(model, 1.7)
    one_pass, first, second = calibration.with_uncalibrated(scaled), scaled, unscaled_model(scaled)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.tracks * args.per_track, *shape)).astype("float32")
    owners = np.repeat(np.arange(args.tracks), args.per_track)

    def tracks(m):
        return aggregate_tracks(m.predict(x, batch_size=PREDICT_BATCH, verbose=0), owners)[1]

    for m in (one_pass, first, second):  # compile the predict functions outside the timing
        m.predict(x[:PREDICT_BATCH], batch_size=PREDICT_BATCH, verbose=0)
    seconds = {"one pass": [], "two passes": []}
    for _ in range(args.repeats):  # interleaved, so drift on a noisy machine hits both
        start = time.perf_counter()
        both = tracks(one_pass)
        seconds["one pass"].append(time.perf_counter() - start)
        start = time.perf_counter()
        baseline = np.hstack([tracks(first), tracks(second)])
        seconds["two passes"].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in seconds.items()}
    print(f"{args.tracks} tracks x {args.per_track} segments, {args.classes} classes, CNN")
    for k, v in best.items():
        print(f"  {k:10s}: {v:6.2f} s (best of {args.repeats})")
    print(f"  ratio two passes / one pass: {best['two passes'] / best['one pass']:.2f}")
    print(f"  largest difference of the answers: {np.abs(both - baseline).max():.1e}")


if __name__ == "__main__":
    main()
