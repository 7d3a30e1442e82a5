"""What a trained model needs besides its weights: the feature parameters it was trained with and
its class labels (``results/models/{model}/features.json``, also in the MLflow model's metadata).

Predictions must use the training features, not today's config, so these are derived from the
HDF5 attributes of the training files when the model is saved.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import h5py
import pandas as pd

from genre_classification.features.features import FeatureParams, params_from_attrs
from genre_classification.fileio import write_json

FILE_NAME = "features.json"


def training_features(paths) -> FeatureParams:
    """The ``FeatureParams`` shared by every HDF5 file in ``paths``; an error if they differ."""
    params, first = None, None
    for path in paths:
        with h5py.File(path, "r") as h5:
            found = params_from_attrs(h5.attrs)
        if params is None:
            params, first = found, path
        elif found != params:
            raise ValueError(
                f"training features were extracted with different parameters: {first}: "
                f"{params}, {path}: {found}"
            )
    if params is None:
        raise ValueError("no training feature files")
    return params


def describe(rows: pd.DataFrame, labels: list[str]) -> dict:
    """The model description of a model trained on the split rows ``rows`` with ``labels``."""
    return {"features": asdict(training_features(rows["features"])), "labels": list(labels)}


def write(path: str | Path, info: dict) -> None:
    write_json(path, info)


def parse(info: dict) -> tuple[FeatureParams, list[str]]:
    return FeatureParams(**info["features"]), list(info["labels"])


def read(path: str | Path) -> tuple[FeatureParams, list[str]]:
    return parse(json.loads(Path(path).read_text()))
