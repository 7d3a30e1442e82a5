"""Command line: ``genre-classification predict [--model M] [--output OUT.csv] [--top-k K] PATH...``
(also ``python -m genre_classification predict``)."""

from __future__ import annotations

import argparse
import os
import sys

from genre_classification import predict as predict_module
from genre_classification import tracking


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="genre-classification", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "predict",
        help="predict the genre of audio files",
        description="One CSV row per audio file: path, genre, probability, top-k genres, "
        "number of segments, error. Exit code 1 if any file could not be used.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files or directories")
    p.add_argument(
        "--model",
        help="a model.keras path or an MLflow model URI (models:/<name>@<alias>, "
        "runs:/<run_id>/model); default: the registered champion of the workflow, else the "
        "newest results/models/*/model.keras",
    )
    p.add_argument("--output", "-o", help="CSV file to write (default: standard output)")
    p.add_argument("--top-k", type=int, default=3, help="genres listed per file (default: 3)")
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="decoding processes (0: decode in the main process; default: %(default)s)",
    )
    p.add_argument(
        "--batch-segments",
        type=int,
        default=predict_module.BATCH_SEGMENTS,
        help="segments per model batch (default: %(default)s)",
    )
    p.add_argument(
        "--overlap",
        type=float,
        default=0.0,
        help="predict windows overlapping by this share of a segment, in [0, 1) (default: 0, "
        "the segments)",
    )
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.top_k < 1 or args.batch_segments < 1:
        parser().error("--top-k and --batch-segments must be at least 1")
    if not 0 <= args.overlap < 1:
        parser().error("--overlap must be in [0, 1)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name, value in tracking.HTTP_LIMITS.items():  # an unreachable server fails in seconds
        os.environ.setdefault(name, value)
    output = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        n_files, n_failed = predict_module.predict(
            args.paths,
            output,
            model=args.model,
            top_k=args.top_k,
            jobs=args.jobs,
            batch_segments=args.batch_segments,
            overlap=args.overlap,
        )
    except predict_module.PredictError as error:
        print(f"genre-classification predict: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        if output is not sys.stdout:
            output.close()
    print(f"{n_files} files, {n_failed} failed", file=sys.stderr)
    return 1 if n_failed else 0
