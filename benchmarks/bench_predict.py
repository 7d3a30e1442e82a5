"""``predict`` on N × 30 s clips against a bare loop doing the same work, in one run.

Bare loop: load the model once, then per file ``load_audio → log_mel_segments → model.predict``
and the mean over segments. ``predict``: ``genre_classification.predict.predict.predict`` (what the
command runs: model loading, file walk, decoding pool, batched model calls, CSV rows). Both load
the model inside the timed section. Ratio = bare seconds / predict seconds (≥ 1: predict is
faster). The model is the default CNN with untrained weights (inference costs the same) and the
default feature parameters; clips are synthetic (``demo_data``), written once to ``--workdir``.

    python benchmarks/bench_predict.py --files 1000 [--jobs 2] [--workdir /tmp/bench-predict]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from genre_classification.data.demo_data import GENRES, make_demo_dataset  # noqa: E402
from genre_classification.features.features import FeatureParams, load_audio, log_mel_segments  # noqa: E402
from genre_classification.predict import predict  # noqa: E402
from genre_classification.training import model_info  # noqa: E402


def clips(workdir: Path, n: int, seconds: float) -> list[Path]:
    audio = workdir / f"audio-{seconds:g}s"
    genres = sorted(GENRES)
    per_genre = -(-n // len(genres))
    if len(list(audio.glob("*/*.wav"))) < per_genre * len(genres):
        make_demo_dataset(audio, per_genre, seconds=seconds, genres=genres)
    return sorted(audio.glob("*/*.wav"))[:n]


def untrained_model(workdir: Path, params: FeatureParams) -> Path:
    import keras

    from genre_classification.training import models

    path = workdir / "model" / "model.keras"
    if not path.is_file():
        shape = (params.n_mels, params.frames_per_segment, 1)
        labels = sorted(GENRES)
        model = models.build_model(
            "cnn", shape, len(labels), np.zeros(params.n_mels), np.ones(params.n_mels)
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        model_info.write(
            path.with_name(model_info.FILE_NAME), {"features": asdict(params), "labels": labels}
        )
        keras.backend.clear_session()
    return path


def bare_loop(model_path: Path, files: list[Path], params: FeatureParams) -> list[int]:
    import keras

    model = keras.models.load_model(model_path)
    predicted = []
    for path in files:
        x = log_mel_segments(load_audio(path, params), params)
        probs = model.predict(x[..., None], verbose=0)
        predicted.append(int(probs.mean(axis=0).argmax()))
    return predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-predict"))
    args = parser.parse_args()

    params = FeatureParams()
    files = clips(args.workdir, args.files, args.seconds)
    model_path = untrained_model(args.workdir, params)
    print(f"{len(files)} clips × {args.seconds:g} s, {os.cpu_count()} CPUs, jobs={args.jobs}")

    start = time.perf_counter()
    bare = bare_loop(model_path, files, params)
    bare_s = time.perf_counter() - start

    out = args.workdir / "predictions.csv"
    start = time.perf_counter()
    with open(out, "w", newline="") as handle:
        n_files, n_failed = predict.predict(
            files, handle, model=str(model_path), jobs=args.jobs, log=open(os.devnull, "w")
        )
    predict_s = time.perf_counter() - start
    assert n_files == len(files) and n_failed == 0

    import pandas as pd

    labels = sorted(GENRES)
    same = (pd.read_csv(out)["genre"] == [labels[i] for i in bare]).mean()
    print(f"{'run':<44} {'seconds':>8} {'files/s':>8} {'ratio':>6}")
    print(
        f"{'bare loop (decode, log-mel, model.predict)':<44} {bare_s:8.1f} "
        f"{len(files) / bare_s:8.1f} {1.0:6.2f}"
    )
    print(
        f"{'predict (genre_classification.predict.predict)':<44} {predict_s:8.1f} "
        f"{len(files) / predict_s:8.1f} {bare_s / predict_s:6.2f}"
    )
    print(f"same predicted genre as the bare loop: {same:.1%} of files")


if __name__ == "__main__":
    main()
