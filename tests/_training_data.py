"""Tiny synthetic HDF5 features + split manifest in the format of docs/CONTRACTS.md."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest

from genre_classification.columns import SPLIT_COLUMNS
from genre_classification.features.features import FeatureParams

GENRES = ("blues", "metal", "pop")
# The pack of every track make_features writes (one shard), relative to its root.
PACK = Path("features/.packs/00000.npy")


def packs_beside(split_path: Path) -> tuple[Path, ...]:
    """The packs of the features of ``split_path`` (``make_features`` writes them beside it;
    written here for a split table made otherwise)."""
    pack = Path(split_path).parent / PACK
    if not pack.is_file():
        write_packs(split_path)
    return (pack,)


def make_features(
    root: Path,
    genres=GENRES,
    tracks_per_split=(("train", 4), ("val", 1), ("test", 2)),
    n_segments: int = 2,
    n_mels: int = 16,
    frames: int = 20,
    seed: int = 0,
) -> Path:
    """Write ``root/features/<genre>/<track>.h5`` and ``root/split.tsv``; returns the split path.

    Genre ``g`` has extra energy in mel bands ``[4g, 4g+4)`` so a small model can learn it.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for g, genre in enumerate(genres):
        i = 0
        for split, count in tracks_per_split:
            for _ in range(count):
                track = f"{genre}.{i:05d}"
                i += 1
                x = rng.normal(-40.0, 5.0, size=(n_segments, n_mels, frames)).astype(np.float32)
                x[:, 4 * g : 4 * g + 4, :] += 20.0
                path = root / "features" / genre / f"{track}.h5"
                path.parent.mkdir(parents=True, exist_ok=True)
                with h5py.File(path, "w") as h5:
                    h5.create_dataset("logmel", data=x)
                    h5.attrs.update(asdict(FeatureParams(n_mels=n_mels)))
                    h5.attrs.update(
                        label=genre,
                        source_md5=f"md5-{track}",
                        source_path=f"audio/{genre}/{track}.wav",
                        librosa_version="0.11.0",
                        duration_s=6.0,
                    )
                rows.append((genre, track, split, str(path), n_segments, f"md5-{track}"))
    split_path = root / "split.tsv"
    lines = ["\t".join(SPLIT_COLUMNS)] + ["\t".join(map(str, r)) for r in rows]
    split_path.write_text("\n".join(lines) + "\n")
    write_packs(split_path)
    (root / "data_version.json").write_text(
        json.dumps(
            {
                "source": "dir",
                "md5": "0123abcd",
                "n_files": len(rows),
                "location": str(root),
                "rev": None,
            }
        )
    )
    return split_path


def write_packs(split_path: Path) -> None:
    """The pack of every track of ``split_path`` (as the workflow's pack_features writes)."""
    import pandas as pd

    from genre_classification.features.packs import write_pack

    rows = pd.read_csv(split_path, sep="\t", dtype=str)
    write_pack(rows, Path(split_path).parent / PACK)


TINY_CONFIG = {
    "architecture": "cnn",
    "optimizer": "adam",
    "learning_rate": 0.01,
    "epochs": 4,
    "batch_size": 8,
    "early_stopping": {"patience": 100},
    "seed": 7,
    "mixed_precision": False,
    "options": {"filters": [4, 8], "dropout": 0.3},
}


def full_config(entry: dict) -> dict:
    """A model entry with the schema's defaults filled in, as the workflow validates it."""
    from genre_classification.config_check import MODEL_SCHEMA, with_defaults

    return with_defaults(entry, MODEL_SCHEMA)


def train_tiny(config: dict, split_path: Path, out: Path, model_name: str, experiment: str):
    """``train.train`` with its outputs in ``out/models/<model_name>`` and a local MLflow store
    ``out/mlflow.db``; returns the run info and the tracking URI. mlflow.set_tracking_uri
    exports MLFLOW_TRACKING_URI: it is kept out of later tests."""
    from genre_classification.training import train

    uri = f"sqlite:///{out / 'mlflow.db'}"
    model_dir = out / "models" / model_name
    paths = train.TrainingPaths(
        split=split_path,
        model=model_dir / "model.keras",
        history=model_dir / "history.csv",
        run_info=out / "run.json",
        checkpoint_dir=model_dir / "checkpoints",
        packs=packs_beside(split_path),
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        info = train.train(
            full_config(config),
            paths,
            train.MlflowSettings(experiment, uri, timeout_s=10),
            model_name=model_name,
            lock_timeout_s=30,
            threads=2,
        )
    return info, uri
