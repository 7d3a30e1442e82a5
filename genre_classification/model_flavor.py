"""How the model is saved: the ``tensorflow`` flavor plus a ``python_function`` flavor whose
loader is ``genre_classification.audio_model`` (audio in, genre out; it loads the model with the
``predict`` command's code). Saving needs only MLflow and TensorFlow, so the training job logs
models from here without importing the prediction code.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from genre_classification import __version__
from genre_classification.code_version import copy_package

FLAVOR_NAME = "genre_classification"
# Every model logged since the first release names this module as its pyfunc loader.
LOADER_MODULE = "genre_classification.audio_model"
DEFAULT_TOP_K = 3
INPUT_COLUMNS = ("path", "audio", "name")
OUTPUT_COLUMNS = ("path", "genre", "probability", "top_k", "n_segments", "error")


def signature():
    """The audio signature of the ``python_function`` flavor."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", name, required=False) for name in INPUT_COLUMNS])
    outputs = Schema(
        [
            ColSpec("string", "path"),
            ColSpec("string", "genre"),
            ColSpec("double", "probability"),
            ColSpec("string", "top_k"),
            ColSpec("long", "n_segments"),
            ColSpec("string", "error"),
        ]
    )
    params = ParamSchema([ParamSpec("top_k", "long", DEFAULT_TOP_K)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def save_model(path, mlflow_model, keras_model, **tf_kwargs):
    """Flavor ``save_model`` for ``mlflow.models.Model.log`` (which sets the metadata): the
    TensorFlow flavor's files with a copy of this package's code (``code/``: MLflow puts it first
    on ``sys.path`` when it loads the ``python_function`` flavor, so serving needs no installed
    package), then ``audio_model`` as that flavor's loader with the audio signature."""
    import mlflow.tensorflow
    from mlflow import pyfunc
    from mlflow.models import Model

    # No tensor signature: the model's signature is the audio one (its warning would mislead).
    tf_log = logging.getLogger("mlflow.tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.tensorflow.save_model(
                keras_model, path, mlflow_model=mlflow_model, signature=False,
                code_paths=[str(copy_package(Path(tmp)))], **tf_kwargs,
            )  # fmt: skip
    finally:
        tf_log.setLevel(level)
    mlflow_model.flavors[pyfunc.FLAVOR_NAME]["loader_module"] = LOADER_MODULE
    mlflow_model.signature = signature()
    mlflow_model.add_flavor(FLAVOR_NAME, version=__version__)
    mlflow_model.save(os.path.join(path, "MLmodel"))
    Model.load(path)  # the rewritten file reads back
