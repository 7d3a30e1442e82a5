"""Small track tables and predictions for the Evidently workspace tests (two data versions)."""

from __future__ import annotations

import numpy as np
import pandas as pd

GENRES = ("blues", "metal", "pop")


def track_table(seed: int, shift: float = 0.0, n_per_genre: int = 20) -> pd.DataFrame:
    """A track table (docs/CONTRACTS.md ids + 4 summary features) with train and test tracks;
    ``shift`` moves the test tracks' features (a drifted data version)."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, genre in enumerate(GENRES):
        for i in range(n_per_genre):
            split = "train" if i < n_per_genre // 2 else "test"
            base = rng.normal(g, 1.0, size=4) + (shift if split == "test" else 0.0)
            rows.append(
                {
                    "track_id": f"{genre}/{genre}.{i:05d}",
                    "genre": genre,
                    "track": f"{genre}.{i:05d}",
                    "split": split,
                    "source_md5": f"{seed:04d}{g}{i:05d}",
                    **{f"f{k}": float(v) for k, v in enumerate(base)},
                }
            )
    return pd.DataFrame(rows)


def predictions(table: pd.DataFrame, right: float, seed: int = 0) -> pd.DataFrame:
    """The test tracks with a prediction, right for a share ``right`` of them."""
    rng = np.random.default_rng(seed)
    test = table[table["split"] == "test"].copy()
    wrong = rng.random(len(test)) >= right
    shifted = test["genre"].map(lambda g: GENRES[(GENRES.index(g) + 1) % len(GENRES)])
    test["prediction"] = np.where(wrong, shifted, test["genre"])
    return test
