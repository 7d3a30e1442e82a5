"""The logged and registered MLflow model: one model with two flavors.

* ``tensorflow``: the Keras model itself (log-mel segments in, class probabilities out), for
  ``mlflow.tensorflow.load_model`` and the ``predict`` command.
* ``python_function`` (this module is its loader): **audio in**, genre out. ``mlflow.pyfunc``
  and ``mlflow models serve`` take a DataFrame with a column ``path`` (audio file paths) or
  ``audio`` (the file's bytes, base64-encoded; optional ``name``, whose extension helps the
  decoder) and return one row per input: ``path``, ``genre``, ``probability``, ``top_k``
  (``genre:probability;...``, best first), ``n_segments``, ``error``. The parameter ``top_k``
  (default 3) is a request parameter.

The feature parameters and labels are the model's metadata (``model_info``, also in MLmodel);
decoding and segment averaging are the ``predict`` command's own functions (``predict.decode``,
``predict.predict_segments``), so the served numbers are the command's.

The logged model carries a copy of this package (``model_flavor``: MLflow's ``code_paths``),
which MLflow puts first on ``sys.path`` when it loads the model: serving needs no installed
workflow.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from pathlib import Path

import numpy as np

from genre_classification.model_flavor import (  # noqa: F401  (this module's interface)
    DEFAULT_TOP_K,
    FLAVOR_NAME,
    INPUT_COLUMNS,
    OUTPUT_COLUMNS,
)
from genre_classification.predict import predict
from genre_classification.training import model_info


def _load_pyfunc(data_path: str) -> AudioGenreModel:
    """Called by ``mlflow.pyfunc.load_model`` with the model's ``data`` directory."""
    from mlflow.models import Model

    model_dir = Path(data_path).parent
    metadata = Model.load(str(model_dir)).metadata or {}
    if "features" not in metadata:
        raise predict.PredictError(f"{model_dir}: the MLflow model has no recorded features")
    import mlflow.tensorflow

    keras_model = mlflow.tensorflow.load_model(str(model_dir))
    params, labels = model_info.parse(metadata)
    return AudioGenreModel(predict._checked(keras_model, params, labels, str(model_dir)))


class AudioGenreModel:
    """The ``python_function`` implementation: ``predict(model_input, params)``."""

    def __init__(self, loaded):
        self.loaded = loaded  # predict.LoadedModel

    def predict(self, model_input, params: dict | None = None):
        import pandas as pd

        frame = _as_frame(model_input)
        top_k = max(1, int((params or {}).get("top_k") or DEFAULT_TOP_K))
        with tempfile.TemporaryDirectory(prefix="genre-audio-") as tmp:
            records = frame.to_dict("records")
            items = [self._decoded(i, row, Path(tmp)) for i, row in enumerate(records)]
            rows = predict.predict_segments(self.loaded, items)
            out = [_output_row(row, self.loaded.labels, top_k) for row in rows]
        return pd.DataFrame(out, columns=list(OUTPUT_COLUMNS))

    def _decoded(self, index: int, record: dict, tmp: Path):

        path, audio, name = (_text(record.get(c)) for c in INPUT_COLUMNS)
        label = path or name or f"input-{index}"
        if audio:
            try:
                data = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError) as error:
                return label, None, f"audio is not base64: {error}"
            file = tmp / f"{index}{Path(name).suffix if name else '.wav'}"
            file.write_bytes(data)
            segments, error = predict.decode(file, self.loaded.params)
            return label, segments, error
        if not path:
            return label, None, "no input: give a 'path' or a base64 'audio' column"
        if not Path(path).is_file():
            return label, None, f"{path}: no such file"
        return (label, *predict.decode(Path(path), self.loaded.params))


def _text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def _as_frame(model_input):
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, str | os.PathLike):
        model_input = [model_input]
    if isinstance(model_input, dict):
        return pd.DataFrame(model_input)
    return pd.DataFrame({"path": [str(p) for p in model_input]})


def _output_row(row, labels: list[str], top_k: int) -> list:
    """The ``predict`` command's CSV row (``predict.csv_row``), the probability unrounded."""

    path, genre, _, top, n_segments, error = predict.csv_row(row, labels, top_k)
    probability = float(np.max(row.probs)) if row.probs is not None else float("nan")
    return [path, genre, probability, top, n_segments, error]
