"""What differs between the kinds of model, decided in one place that training, evaluation and
the workflow's rules ask (``kind_of``).

* ``cnn``, ``backbone`` (``keras.applications``), ``musicnn-finetune``: the model is built
  (``models.build_model``), trained by Keras epochs on log-mel segments, evaluated on log-mel
  windows.
* ``musicnn-finetune-probe``: the same, starting from the probe's head (from the embeddings);
  that start is epoch 0 of its early stopping (``starts_fitted``).
* ``musicnn-frozen`` (a Keras head) and ``musicnn-probe`` (a logistic regression, C by
  cross-validation): the head is fitted on the embeddings and evaluated on them (the saved
  model is still log-mel in).

"From the embeddings" means the job reads the embedding cache that the ``embed_features``
jobs fill (``training.embeddings``); the rules give those jobs' records as inputs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from genre_classification.training.musicnn import (
    JOIN,
    backbone_pairs,
    build_musicnn_classifier,
)

BACKBONES = {"efficientnetb0": "EfficientNetB0", "resnet50": "ResNet50"}


@dataclass(frozen=True)
class ModelKind:
    name: str
    first_model_from_embeddings: bool  # else models.build_model
    fits_on_embeddings: bool  # a head on the cached embeddings, not epochs over log-mel
    pretrained: bool  # starts from the musicnn wheel's weights (their provenance is logged)

    @property
    def starts_fitted(self) -> bool:
        """Whether Keras epochs start from a fitted classifier (the probe's head), which early
        stopping then counts as epoch 0: the weights kept are never worse on val than it."""
        return self.first_model_from_embeddings and not self.fits_on_embeddings

    def reads_embeddings(self, step: str) -> bool:
        """Whether the job of ``step`` ("train" or "evaluate") reads the embedding cache."""
        if step == "train":
            return self.first_model_from_embeddings
        if step == "evaluate":
            return self.fits_on_embeddings
        raise ValueError(f"unknown step {step!r}")


KINDS = {
    kind.name: kind
    for kind in (
        ModelKind("cnn", False, False, False),
        ModelKind("backbone", False, False, False),
        ModelKind("musicnn-finetune", False, False, True),
        ModelKind("musicnn-finetune-probe", True, False, True),
        ModelKind("musicnn-frozen", True, True, True),
        ModelKind("musicnn-probe", True, True, True),
    )
}


def architecture(cfg: dict) -> str:
    return str(cfg.get("architecture", "cnn")).lower()


def musicnn_options(cfg: dict) -> dict:
    """The musicnn options of a model entry with the builder's defaults."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(build_musicnn_classifier).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    opts = {**defaults, **(cfg.get("options") or {})}
    pairs = backbone_pairs(opts["checkpoint"], opts["embedding"])
    opts["embedding"] = JOIN.join(embedding for _, embedding in pairs)
    return opts


def track_pooled(cfg: dict) -> bool:
    """Whether a model entry's head sees one pooled vector per track (musicnn ``pooling``)."""
    return architecture(cfg) == "musicnn" and musicnn_options(cfg)["pooling"] != "segment"


def kind_of(cfg: dict) -> ModelKind:
    """The kind of a model entry (validated config)."""
    arch = architecture(cfg)
    if arch == "musicnn":
        opts = musicnn_options(cfg)
        if opts["mode"] == "finetune":
            probe_head = opts["head_init"] == "probe"
            return KINDS["musicnn-finetune-probe" if probe_head else "musicnn-finetune"]
        return KINDS[f"musicnn-{opts['mode']}"]
    return KINDS["backbone" if arch in BACKBONES else "cnn"]
