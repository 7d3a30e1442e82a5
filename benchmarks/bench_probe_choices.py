"""How the probe's own choices hold up on real music, over several fold assignments.

The probe (musicnn ``mode: probe``) chooses C by the out-of-fold log loss of the tracks'
answers, and ``pooling: auto`` chooses by the same loss between ``mean`` and ``mean_std``.
This script puts those rules, and the alternatives a user might expect, side by side on the
embeddings that a ``bench_real_music.py`` run cached. It runs no workflow and no training job:
for each fold assignment (``split.seed``) and fold it fits on train + val with the package's
own ``track_head`` functions and scores the test tracks' macro-F1.

    .venv/bin/python benchmarks/bench_probe_choices.py \\
        --run ~/.cache/genre-real-music/run --split-seeds 42 1 2 3 4

The run must have cached the backbones of ``--checkpoint`` (run ``bench_real_music.py
--variants msd3-probe`` first). Rules compared (C by the out-of-fold log loss unless named):

* ``segment``, ``mean``, ``mean_std``: one pooling each;
* ``auto``: the lower loss of ``mean`` and ``mean_std`` (what ``pooling: auto`` does);
* ``auto+segment``: the lowest loss of all three;
* ``segment, C by accuracy``: C by the tracks' out-of-fold accuracy (ties: the log loss);
* ``knn``: ``classifier: knn`` (``knn_head``), k by the out-of-fold log loss.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genre_classification.aggregation import aggregate_tracks  # noqa: E402
from genre_classification.config_check import with_defaults  # noqa: E402
from genre_classification.data.split import GROUP_COLUMN, kfold_splits, track_key  # noqa: E402
from genre_classification.training import knn_head, track_head  # noqa: E402
from genre_classification.training.dataset import genre_labels, read_split  # noqa: E402
from genre_classification.training.embeddings import EmbeddedSplit  # noqa: E402
from genre_classification.training.model_kinds import musicnn_options  # noqa: E402

MSD3 = "MSD_musicnn+MTT_musicnn+MSD_vgg"
RULES = ("segment", "mean", "mean_std", "auto", "auto+segment", "segment, C by accuracy", "knn")
KNN = {"architecture": "musicnn", "options": {"mode": "probe", "classifier": "knn"}}
FLOOR = 0.80  # bench_real_music's target for the worst fold


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def answers(choice: track_head.ProbeChoice, x: np.ndarray, owners: np.ndarray | None):
    """Test tracks' probabilities: ``x`` segments with their ``owners``, or pooled rows."""
    z = (x - choice.mean) / np.sqrt(choice.variance) @ choice.kernel + choice.bias
    p = softmax(z / choice.temperature)
    return p if owners is None else aggregate_tracks(p, owners)[1]


def segment_probe_by_accuracy(x, owners, y, groups, n_classes: int, seed: int):
    """The segment probe with C chosen by the tracks' out-of-fold accuracy (ties: log loss)."""
    folds = track_head.cv_folds(y, groups, seed)
    losses, logits_of = track_head._out_of_fold(x, owners, y, folds, n_classes, seed)
    accuracy = {
        c: np.mean(aggregate_tracks(softmax(logits_of(c)), owners)[1].argmax(1) == y)
        for c in losses
    }
    c = max(losses, key=lambda c: (accuracy[c], -losses[c]))
    by_c = {("segment", c): loss for c, loss in losses.items()}
    return track_head._refitted(x, owners, y, "segment", c, by_c, len(folds), logits_of(c), seed)


def fold_scores(cfg: dict, fold, labels: list[str], seed: int) -> dict[str, float]:
    """Each rule's test macro-F1 on one fold (train and val fitted together)."""
    from sklearn.metrics import f1_score

    fitted, test = fold[fold.split != "test"], fold[fold.split == "test"]
    # the split's "val" part holds the test tracks here: nothing is chosen on it
    split = EmbeddedSplit(cfg, fitted, test, labels)
    x, owners, y, groups = split.segments(("train",))
    x_test, test_owners, y_test, _ = split.segments(("val",))
    moments, _ = split.track_moments("train")
    test_moments, _ = split.track_moments("val")
    n = split.n_classes
    choices = {"segment": track_head.choose_segment_probe(x, owners, y, groups, n, seed)}
    for pooling in ("mean", "mean_std"):
        choices[pooling] = track_head.choose_probe(moments, y, groups, n, (pooling,), seed)
    probs = {"segment": answers(choices["segment"], x_test, test_owners)}
    for pooling in ("mean", "mean_std"):
        probs[pooling] = answers(choices[pooling], track_head.pooled(test_moments, pooling), None)
    by_accuracy = segment_probe_by_accuracy(x, owners, y, groups, n, seed)
    probs["segment, C by accuracy"] = answers(by_accuracy, x_test, test_owners)
    knn = knn_head.choose_knn_probe(
        x, owners, y, groups, n, seed, musicnn_options(KNN)["knn_max_reference"]
    )
    queries = knn_head.standardised_units(x_test, knn.mean, knn.variance)
    log_p = knn_head.log_votes(knn.reference, knn.reference_labels, queries, n, [knn.k])[knn.k]
    probs["knn"] = aggregate_tracks(softmax(log_p / knn.temperature), test_owners)[1]
    probs["auto"] = probs[min(("mean", "mean_std"), key=lambda p: choices[p].cv_loss)]
    probs["auto+segment"] = probs[min(choices, key=lambda p: choices[p].cv_loss)]
    return {rule: f1_score(y_test, probs[rule].argmax(1), average="macro") for rule in RULES}


def main(argv=None) -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path.home() / ".cache/genre-real-music/run")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    parser.add_argument("--checkpoint", default=MSD3, help="musicnn checkpoint(s), + joined")
    parser.add_argument("--seed", type=int, default=42, help="the probe's seed")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)

    run = args.run.expanduser().resolve()
    os.chdir(run)  # the split's feature paths are relative to the run
    overlay = yaml.safe_load(Path("config/bench.yaml").read_text())  # the run's split section
    split_cfg = with_defaults(overlay["split"], "/properties/split")
    records = sorted(str(p) for p in Path("results/features-musicnn/.shards").glob("*.tsv"))
    tracks = read_split("results/split/folds/fold-0.tsv", records)
    base = tracks.drop(columns=["split"]).to_dict("records")
    groups = {track_key(row): row[GROUP_COLUMN] for row in base}
    labels = genre_labels(tracks)
    cfg = {"architecture": "musicnn", "options": {"mode": "probe", "checkpoint": args.checkpoint}}
    print(
        f"run {run}: {len(base)} tracks, {split_cfg['folds']} folds, checkpoint "
        f"{args.checkpoint}, fold assignments {args.split_seeds}",
        flush=True,
    )
    scores = {rule: {} for rule in RULES}  # rule -> seed -> [fold F1]
    start = time.perf_counter()
    for split_seed in args.split_seeds:
        folds = kfold_splits(base, split_cfg["folds"], split_cfg["fractions"], split_seed, groups)
        for i, rows in enumerate(folds):
            per_rule = fold_scores(cfg, pd.DataFrame(rows), labels, args.seed)
            for rule, f1 in per_rule.items():
                scores[rule].setdefault(split_seed, []).append(f1)
            print(
                f"split.seed {split_seed} fold {i}: "
                + ", ".join(f"{rule} {f1:.3f}" for rule, f1 in per_rule.items()),
                flush=True,
            )
    print(f"\n{time.perf_counter() - start:.0f} s\n")
    n_seeds = len(args.split_seeds)
    header = "| rule | macro-F1, all folds | per assignment | worst fold | every fold ≥ 0.80 |"
    print(header + "\n|---|---|---|---|---|")
    summary = {}
    for rule, by_seed in scores.items():
        f1s = np.array([by_seed[s] for s in args.split_seeds])
        summary[rule] = {
            "mean": float(f1s.mean()),
            "per_assignment": {
                s: float(v.mean()) for s, v in zip(args.split_seeds, f1s, strict=True)
            },
            "worst_fold": float(f1s.min()),
            "assignments_above_floor": int((f1s.min(axis=1) >= FLOOR).sum()),
        }
        per = " ".join(f"{v:.3f}" for v in f1s.mean(axis=1))
        floor_ok = summary[rule]["assignments_above_floor"]
        print(f"| {rule} | {f1s.mean():.3f} | {per} | {f1s.min():.3f} | {floor_ok} of {n_seeds} |")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "summary": summary}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
