"""Cross-validation aggregate, comparison table and sweep expansion (no training)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from genre_classification.evaluation.cv import aggregate_folds, summary_table
from genre_classification.evaluation.evaluate import compute_metrics, predictions_table
from genre_classification.training.sweep import expand_sweep, point_name

LABELS = ["jazz", "metal"]


def write_fold(tmp_path, fold: int, tracks: list[str], y_true: list[int], y_pred: list[int]):
    """metrics.json and predictions.csv of one fold as evaluate_model writes them."""
    import numpy as np

    probs = np.eye(2)[y_pred]
    directory = tmp_path / f"fold-{fold}"
    directory.mkdir()
    predictions_table(tracks, y_true, y_pred, probs, LABELS).to_csv(
        directory / "predictions.csv", index=False
    )
    metrics = compute_metrics(y_true, y_pred, LABELS)
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory / "metrics.json", directory / "predictions.csv"


def test_aggregate_folds_mean_std_and_pooled_predictions(tmp_path):
    folds = [
        write_fold(tmp_path, 0, ["jazz/a", "metal/b"], [0, 1], [0, 1]),  # accuracy 1
        write_fold(tmp_path, 1, ["jazz/c", "metal/d"], [0, 1], [1, 1]),  # accuracy 0.5
        write_fold(tmp_path, 2, ["jazz/e", "metal/f"], [0, 1], [1, 0]),  # accuracy 0
    ]
    out = tmp_path / "out"
    result = aggregate_folds(
        [m for m, _ in folds],
        [p for _, p in folds],
        out / "cv_metrics.json",
        out / "oof_predictions.csv",
        out / "oof_confusion_matrix.png",
        model="m",
    )
    assert result == json.loads((out / "cv_metrics.json").read_text())
    assert result["n_folds"] == 3
    from genre_classification import code_version

    assert result["code"]["fingerprint"] == code_version.package_fingerprint()  # what ran
    assert result["accuracy"]["folds"] == [1.0, 0.5, 0.0]
    assert result["accuracy"]["mean"] == pytest.approx(0.5)
    assert result["accuracy"]["std"] == pytest.approx(0.5)  # sample std of 1, 0.5, 0
    assert result["per_genre_f1"]["jazz"]["folds"] == pytest.approx([1.0, 0.0, 0.0])
    assert result["pooled"]["accuracy"] == pytest.approx(0.5)
    assert result["pooled"]["n_tracks"] == 6
    pooled = pd.read_csv(out / "oof_predictions.csv")
    assert pooled["fold"].tolist() == [0, 0, 1, 1, 2, 2]
    assert (out / "oof_confusion_matrix.png").stat().st_size > 0

    outputs = [out / name for name in ("1.json", "1.csv", "1.png")]
    one = aggregate_folds([folds[1][0]], [folds[1][1]], *outputs, model="m")
    assert one["macro_f1"]["std"] == 0.0

    write_fold(tmp_path, 3, ["jazz/a"], [0], [0])
    with pytest.raises(ValueError, match="more than one fold"):
        aggregate_folds([folds[0][0], tmp_path / "fold-3/metrics.json"],
                        [folds[0][1], tmp_path / "fold-3/predictions.csv"],
                        *(out / n for n in ("x.json", "x.csv", "x.png")), model="m")  # fmt: skip


def test_summary_table_has_options_and_mean_std(tmp_path):
    paths = {}
    for model, (mean, std) in {"a": (0.8, 0.05), "b": (0.6, 0.1)}.items():
        cv = {
            "n_folds": 5,
            "accuracy": {"mean": mean, "std": std},
            "macro_f1": {"mean": mean, "std": std},
            "pooled": {"macro_f1": mean},
        }
        paths[model] = tmp_path / f"{model}.json"
        paths[model].write_text(json.dumps(cv))
    configs = {
        "a": {"architecture": "cnn", "learning_rate": 0.001, "resources": {"gpu": 1}},
        "b": {"architecture": "cnn", "learning_rate": 0.01, "options": {"filters": [4, 8]}},
    }
    table = summary_table(paths, configs)
    assert table["model"].tolist() == ["a", "b"]
    assert table["macro_f1"].tolist() == ["0.800 ± 0.050", "0.600 ± 0.100"]
    assert table["learning_rate"].tolist() == ["0.001", "0.01"]
    assert table["options.filters"].fillna("").tolist() == ["", "[4, 8]"]
    assert "resources.gpu" not in table.columns


def test_sweep_grid_and_list_expand_into_named_models():
    training = {
        "run": ["cnn"],
        "models": {"cnn": {"architecture": "cnn", "learning_rate": 0.001, "options": {}}},
        "sweep": {
            "base": "cnn",
            "grid": {"learning_rate": [0.001, 0.0005], "options": {"filters": [[8, 16], [4]]}},
            "list": [{"architecture": "resnet50", "batch_size": 8}],
        },
    }
    expanded = expand_sweep(training)
    names = [
        "cnn-lr0.001-f8x16",
        "cnn-lr0.001-f4",
        "cnn-lr0.0005-f8x16",
        "cnn-lr0.0005-f4",
        "cnn-resnet50-bs8",
    ]
    assert expanded["run"] == ["cnn", *names]
    assert expanded["models"]["cnn-lr0.0005-f4"] == {
        "architecture": "cnn",
        "learning_rate": 0.0005,
        "options": {"filters": [4]},
    }
    assert training["models"]["cnn"]["options"] == {}  # the base is not modified
    assert expand_sweep({**training, "sweep": None}) == {**training, "sweep": None}
    with pytest.raises(ValueError, match="two models named 'cnn-bs8'"):
        expand_sweep({**training, "sweep": {"base": "cnn", "list": [{"batch_size": 8}] * 2}})
    assert point_name("x", {"options.weights": "/a b/w.h5"}) == "x-weights_a_b_w.h5"
