"""One table decides what differs between the kinds of model (training.model_kinds)."""

from __future__ import annotations

import pytest

from genre_classification.training.model_kinds import KINDS, kind_of


@pytest.mark.parametrize(
    ("entry", "kind", "train_reads", "evaluate_reads"),
    [
        ({"architecture": "cnn"}, "cnn", False, False),
        ({"architecture": "CNN", "options": {"filters": [8]}}, "cnn", False, False),
        ({"architecture": "efficientnetb0"}, "backbone", False, False),
        ({"architecture": "resnet50"}, "backbone", False, False),
        ({"architecture": "musicnn"}, "musicnn-frozen", True, True),
        ({"architecture": "musicnn", "options": {"mode": "probe"}}, "musicnn-probe", True, True),
        (
            {"architecture": "musicnn", "options": {"mode": "finetune"}},
            "musicnn-finetune-probe",
            True,
            False,
        ),
        (
            {"architecture": "musicnn", "options": {"mode": "finetune", "head_init": "random"}},
            "musicnn-finetune",
            False,
            False,
        ),
    ],
)
def test_each_entry_has_its_kind(entry, kind, train_reads, evaluate_reads):
    found = kind_of(entry)
    assert found.name == kind
    assert found.reads_embeddings("train") is train_reads
    assert found.reads_embeddings("evaluate") is evaluate_reads
    assert found.pretrained is entry["architecture"].lower().startswith("musicnn")


def test_a_head_fitted_on_embeddings_starts_from_them():
    for kind in KINDS.values():
        assert not kind.fits_on_embeddings or kind.first_model_from_embeddings, kind
    with pytest.raises(ValueError, match="unknown step"):
        KINDS["cnn"].reads_embeddings("predict")
