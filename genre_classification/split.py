"""Track-level, stratified, seeded train/val/test split (all segments of a track share a split)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("genre", "track", "split", "features", "n_segments", "source_md5")


def assign_splits(tracks: list[dict], fractions: dict[str, float], seed: int) -> list[dict]:
    """Return the rows of ``tracks`` (dicts with ``genre`` and ``track``) with a ``split`` key.

    Within each genre the tracks are shuffled with a seed derived from ``seed`` and the genre, so
    adding a genre does not reshuffle the others; every genre with at least three tracks gets at
    least one track in each split.
    """
    total = sum(fractions[name] for name in SPLITS)
    by_genre: dict[str, list[dict]] = {}
    for row in sorted(tracks, key=lambda r: (r["genre"], r["track"])):
        by_genre.setdefault(row["genre"], []).append(row)
    result = []
    for genre, rows in sorted(by_genre.items()):
        genre_seed = [seed, *genre.encode()]
        order = np.random.default_rng(genre_seed).permutation(len(rows))
        n = len(rows)
        n_test = round(n * fractions["test"] / total)
        n_val = round(n * fractions["val"] / total)
        if n >= 3:
            n_test, n_val = max(n_test, 1), max(n_val, 1)
        for rank, index in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            result.append({**rows[index], "split": split})
    return sorted(result, key=lambda r: (r["genre"], r["track"]))


def write_split(
    manifest_path: str | Path, split_path: str | Path, fractions: dict[str, float], seed: int
) -> list[dict]:
    """Assign every track of the manifest to a split and write ``split.tsv``."""
    from genre_classification.audio_source import read_tsv, write_tsv

    rows = [{**row, "source_md5": row["md5"]} for row in read_tsv(manifest_path)]
    result = assign_splits(rows, fractions, seed)
    write_tsv(split_path, result, SPLIT_COLUMNS)
    counts = {name: sum(r["split"] == name for r in result) for name in SPLITS}
    log.info("split %d tracks: %s (seed %d)", len(result), counts, seed)
    return result
