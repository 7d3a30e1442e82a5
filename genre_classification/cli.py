"""Command line: ``genre-classification predict [--model M] [--output OUT.csv] [--top-k K] PATH...``
and ``genre-classification demo-data [--tiny] --repo DIR --remote DIR`` (also
``python -m genre_classification ...``)."""

from __future__ import annotations

import argparse
import os
import sys

from genre_classification import tracking
from genre_classification.data.demo_data import TINY_DATA, make_demo_repo
from genre_classification.predict import predict as predict_module


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
    d = commands.add_parser(
        "demo-data",
        help="create the demo (or --tiny test) data set",
        description="Synthetic clips versioned in a git + DVC repository with a local DVC "
        "remote (the workspace copy is dropped: the workflow's first rule pulls it).",
    )
    d.add_argument("--repo", default="results/demo-data", help="DVC data repository to create")
    d.add_argument("--remote", default="results/demo-dvc-remote", help="local DVC remote dir")
    d.add_argument("--target", default="genres")
    d.add_argument("--clips-per-genre", type=int, default=20)
    d.add_argument("--seconds", type=float, default=6.0)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--genres", nargs="+", help="genres to synthesize (default: all)")
    d.add_argument("--bad-files", action="store_true", help="add 3 files to be quarantined")
    d.add_argument("--force", action="store_true", help="recreate even if it exists")
    d.add_argument(
        "--tiny", action="store_true", help="the tiny test data set (.test/config/config.yaml)"
    )
    return main


def demo_data(args) -> int:

    data = {
        "clips_per_genre": args.clips_per_genre,
        "seconds": args.seconds,
        "genres": args.genres,
        "bad_files": args.bad_files,
    }
    if args.tiny:
        data = TINY_DATA
    print(
        make_demo_repo(
            args.repo, args.remote, target=args.target, seed=args.seed, force=args.force, **data
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "demo-data":
        return demo_data(args)
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
