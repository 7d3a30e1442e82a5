"""Track table and Evidently reports on tiny synthetic data in the contract format.

Audio is synthesised in memory (genre_classification.data.demo_data), turned into log-mel HDF5 files
with the extraction stage's own functions, summarised into track tables, and fed to the reports.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _browser import headless_chromium
from genre_classification.data.demo_data import synthesize_clip
from genre_classification.features.features import FeatureParams, log_mel_segments, write_features
from genre_classification.reports.reports import (
    DataQualityError,
    check_tested_splits,
    classification_report,
    data_drift_report,
    data_quality_report,
    drift_inputs,
    enforce_quality,
    keep_failed_quality_json,
    write_data_quality_report,
)
from genre_classification.reports.track_table import (
    ID_COLUMNS,
    attach_predictions,
    build_track_table,
    feature_columns,
    read_table,
    write_table,
)
from genre_classification.tracking import attach_files

SR = 22050
PARAMS = FeatureParams(sample_rate=SR, segment_seconds=3.0)
SECONDS = 6.0
N_BANDS, N_MFCC = 4, 5  # a smaller table keeps the Evidently reports fast
BASE_GENRES = ["classical", "disco", "hiphop", "jazz"]
OTHER_GENRES = ["metal", "reggae"]


def write_clip(root: Path, genre: str, track: str, audio: np.ndarray, split: str = "") -> dict:
    path = root / genre / f"{track}.h5"
    segments = log_mel_segments(audio.astype(np.float32), PARAMS)
    write_features(
        path, segments, PARAMS, genre, f"/audio/{genre}/{track}.wav", track, audio.size / SR
    )
    return {"genre": genre, "track": track, "split": split, "features": str(path)}


def make_set(root: Path, genres, n: int, seed: int, transform=None, split: str = "") -> list:
    rows = []
    for g, genre in enumerate(genres):
        for i in range(n):
            audio = synthesize_clip(genre, SECONDS, SR, seed=seed * 100_000 + g * 1000 + i)
            if transform is not None:
                audio = transform(audio)
            rows.append(write_clip(root, genre, f"{genre}.s{seed}.{i:03d}", audio, split))
    return rows


def table_of(rows) -> pd.DataFrame:
    return build_track_table(rows, n_bands=N_BANDS, n_mfcc=N_MFCC)


def lowpass_resample(audio: np.ndarray) -> np.ndarray:
    """Audio that went through an 8 kHz channel: nothing above 4 kHz (a resampled recording)."""
    import librosa

    narrow = librosa.resample(audio, orig_sr=SR, target_sr=8000, res_type="polyphase")
    return librosa.resample(narrow, orig_sr=8000, target_sr=SR, res_type="polyphase")[: audio.size]


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, pd.DataFrame]:
    root = tmp_path_factory.mktemp("features")
    louder = make_set(root / "loud", BASE_GENRES, 6, seed=2, transform=lambda a: a * 4)
    resampled = make_set(root / "rs", BASE_GENRES, 6, seed=3, transform=lowpass_resample)
    return {
        "reference": table_of(make_set(root / "ref", BASE_GENRES, 12, seed=1, split="train")),
        "louder": table_of(louder),
        "resampled": table_of(resampled),
        "other_genres": table_of(make_set(root / "other", OTHER_GENRES, 12, seed=4)),
    }


# ------------------------------------------------------------------------------ track table


def clicks(bpm: float, gain: float = 0.5, seconds: float = 12.0) -> np.ndarray:
    audio = np.zeros(int(seconds * SR), dtype=np.float32)
    t = np.arange(400) / SR
    click = np.exp(-t * 500) * np.sin(2 * np.pi * 2000 * t)
    for start in range(0, audio.size - click.size, int(SR * 60 / bpm)):
        audio[start : start + click.size] += click
    return gain * audio


def test_track_table_columns_and_known_values(tmp_path):
    rows = [
        write_clip(tmp_path, "clicks", "slow", clicks(70), "train"),
        write_clip(tmp_path, "clicks", "fast", clicks(140), "test"),
        write_clip(tmp_path, "clicks", "quiet", clicks(100, gain=0.05), "val"),
        write_clip(tmp_path, "clicks", "loud", clicks(100, gain=0.5), "train"),
    ]
    table = build_track_table(rows)  # default 8 band groups, 13 MFCCs
    assert list(table.columns[: len(ID_COLUMNS)]) == list(ID_COLUMNS)
    assert list(table["track_id"]) == ["clicks/fast", "clicks/loud", "clicks/quiet", "clicks/slow"]
    features = feature_columns(table)
    assert len(features) == 2 * 8 + 2 * 13 + 12
    for column in (
        "band07_std",
        "mfcc12_mean",
        "centroid_hz_mean",
        "rolloff_hz_std",
        "flatness_mean",
        "contrast_db_mean",
        "rms_mean",
        "loudness_db_mean",
        "onset_strength_mean",
        "tempo_bpm",
        "duration_s",
    ):
        assert column in features
    assert not table[features].isna().any().any()
    by = table.set_index("track")
    assert by.loc["fast", "tempo_bpm"] == pytest.approx(140, rel=0.05)
    assert by.loc["slow", "tempo_bpm"] == pytest.approx(70, rel=0.05)
    assert by.loc["loud", "rms_mean"] == pytest.approx(10 * by.loc["quiet", "rms_mean"], rel=0.01)
    assert by.loc["loud", "loudness_db_mean"] > by.loc["quiet", "loudness_db_mean"]
    assert by.loc["fast", "duration_s"] == pytest.approx(12.0)
    assert by.loc["fast", "split"] == "test" and by.loc["fast", "source_md5"] == "fast"
    # deterministic, independent of input order, and survives the TSV round trip
    again = build_track_table(rows[::-1])
    pd.testing.assert_frame_equal(table, again)
    write_table(table, tmp_path / "tracks.tsv")
    back = read_table(tmp_path / "tracks.tsv")
    np.testing.assert_allclose(back[features], table[features], rtol=1e-6)


def test_attach_predictions(tmp_path):
    rows = [
        write_clip(tmp_path, "clicks", name, clicks(bpm), "test")
        for name, bpm in (("a", 80), ("b", 120))
    ]
    table = build_track_table(rows)
    csv = tmp_path / "predictions.csv"
    pd.DataFrame(
        {
            "track": ["clicks/a"],
            "true": ["clicks"],
            "predicted": ["rock"],
            "prob_clicks": [0.4],
            "prob_rock": [0.6],
        }
    ).to_csv(csv, index=False)
    merged = attach_predictions(table, csv)
    assert list(merged["track_id"]) == ["clicks/a"]
    assert merged["prediction"].tolist() == ["rock"] and "prob_rock" in merged
    assert "prediction" not in feature_columns(merged)
    assert "prob_rock" not in feature_columns(merged)


# ------------------------------------------------------------------------------ data drift


def drift(reference, current, tmp_path, name):
    return data_drift_report(
        reference, current, tmp_path / f"{name}.html", tmp_path / f"{name}.json"
    )


def test_no_drift_on_a_shuffle_of_the_reference(tables, tmp_path):
    reference = tables["reference"]
    order = np.random.default_rng(7).permutation(len(reference))
    half = len(reference) // 2
    summary = drift(reference.iloc[order[:half]], reference.iloc[order[half:]], tmp_path, "shuf")
    assert summary["dataset_drift"] is False
    assert summary["drifted_share"] <= 0.15, summary["drifted_features"]
    assert summary["n_features"] == len(feature_columns(reference)) + 1  # + genre
    on_disk = json.loads((tmp_path / "shuf.json").read_text())
    assert set(on_disk) >= {
        "drifted_share",
        "n_drifted",
        "n_features",
        "dataset_drift",
        "features",
        "reference",
        "current",
    }
    assert on_disk["features"]["rms_mean"]["method"] == "K-S p_value"
    assert on_disk["features"]["genre"]["method"] == "chi-square p_value"
    assert on_disk["reference"]["n_tracks"] == half


def test_drift_detected_when_louder(tables, tmp_path):
    summary = drift(tables["reference"], tables["louder"], tmp_path, "loud")
    features = summary["features"]
    for column in ("rms_mean", "loudness_db_mean", "band00_mean", "mfcc00_mean"):
        assert features[column]["drifted"], column
    assert not features["genre"]["drifted"]
    assert summary["n_drifted"] >= 5


def test_drift_detected_when_resampled(tables, tmp_path):
    summary = drift(tables["reference"], tables["resampled"], tmp_path, "resampled")
    features = summary["features"]
    for column in ("rolloff_hz_mean", "centroid_hz_mean", "band03_mean"):
        assert features[column]["drifted"], column
    assert not features["genre"]["drifted"]


def test_dataset_drift_with_other_genres(tables, tmp_path):
    summary = drift(tables["reference"], tables["other_genres"], tmp_path, "genres")
    assert summary["features"]["genre"]["drifted"]
    assert summary["dataset_drift"] is True
    assert summary["drifted_share"] >= 0.5


# ------------------------------------------------------------------------------ data quality


def quality(table, tmp_path, **kwargs):
    return data_quality_report(table, tmp_path / "q.html", tmp_path / "q.json", **kwargs)


def failed(summary) -> set[str]:
    return {t["name"] for t in summary["tests"] if t["status"] == "failed"}


def test_quality_passes_on_clean_data(tables, tmp_path):
    summary = quality(tables["reference"], tmp_path)
    assert summary["passed"] is True, summary
    assert [t["name"] for t in summary["tests"]] == [
        "missing_values",
        "constant_columns",
        "duplicated_tracks",
        "duplicated_source_audio",
        "class_balance",
    ]
    assert json.loads((tmp_path / "q.json").read_text()) == summary


def test_quality_flags_constant_column(tables, tmp_path):
    table = tables["reference"].copy()
    table["tempo_bpm"] = 120.0
    summary = quality(table, tmp_path)
    assert failed(summary) == {"constant_columns"}
    assert "tempo_bpm" in summary["tests"][1]["description"]
    # duration_s is constant here (fixed-length clips) and ignored by default, not otherwise
    assert failed(quality(tables["reference"], tmp_path, ignore_constant=[])) == {
        "constant_columns"
    }


def test_quality_flags_duplicated_track(tables, tmp_path):
    table = tables["reference"]
    copy = table.iloc[[3]].assign(track_id="classical/copy", track="copy")
    summary = quality(pd.concat([table, copy], ignore_index=True), tmp_path)
    assert failed(summary) == {"duplicated_tracks", "duplicated_source_audio"}
    same_audio_other_name = table.iloc[[3]].assign(track_id="jazz/x", genre="jazz", rms_mean=9.0)
    summary = quality(pd.concat([table, same_audio_other_name], ignore_index=True), tmp_path)
    assert failed(summary) == {"duplicated_source_audio"}


def test_quality_flags_missing_value_and_class_imbalance(tables, tmp_path):
    table = tables["reference"].copy()
    table.loc[5, "centroid_hz_mean"] = np.nan
    assert failed(quality(table, tmp_path)) == {"missing_values"}
    table = tables["reference"]
    imbalanced = table[(table["genre"] != "jazz") | (table["track"].str.endswith(("0", "1")))]
    summary = quality(imbalanced, tmp_path, min_class_ratio=0.5)
    assert failed(summary) == {"class_balance"}
    assert quality(imbalanced, tmp_path, min_class_ratio=0.1)["passed"]


def test_fail_or_warn_switch(tables, tmp_path, caplog):
    table = tables["reference"].copy()
    table["tempo_bpm"] = 120.0
    summary = quality(table, tmp_path)
    with pytest.raises(DataQualityError, match=r"constant_columns.*q\.json"):
        enforce_quality(summary, tmp_path / "q.json", fail=True)
    with caplog.at_level(logging.WARNING):
        enforce_quality(summary, tmp_path / "q.json", fail=False)
    assert "constant_columns" in caplog.text and "q.json" in caplog.text
    enforce_quality(quality(tables["reference"], tmp_path), tmp_path / "q.json", fail=True)


# ------------------------------------------------------------------------------ classification


def predictions_for(table: pd.DataFrame, seed: int = 0, consistent: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = sorted(table["genre"].unique())
    probs = rng.dirichlet(np.ones(len(labels)), len(table))
    right = rng.random(len(table)) < 0.6
    true_index = table["genre"].map(labels.index).to_numpy()
    probs[right, true_index[right]] += 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    out = table.copy()
    out["prediction"] = np.array(labels)[probs.argmax(axis=1)]
    if not consistent:
        out.loc[out.index[:3], "prediction"] = labels[0]
    for i, label in enumerate(labels):
        out[f"prob_{label}"] = probs[:, i]
    return out


@pytest.mark.parametrize("consistent", [True, False])
def test_classification_json_matches_sklearn(tables, tmp_path, consistent):
    from sklearn.metrics import accuracy_score, f1_score

    data = predictions_for(tables["reference"], consistent=consistent)
    summary = classification_report(data, tmp_path / "c.html", tmp_path / "c.json", model="m")
    on_disk = json.loads((tmp_path / "c.json").read_text())
    expected = accuracy_score(data["genre"], data["prediction"])
    assert on_disk["accuracy"] == pytest.approx(expected)
    assert on_disk["f1"] == pytest.approx(
        f1_score(data["genre"], data["prediction"], average="macro")
    )
    assert on_disk["probabilities"] is consistent and ("roc_auc" in on_disk) is consistent
    assert set(on_disk["per_class"]) == set(BASE_GENRES)
    assert sum(c["support"] for c in on_disk["per_class"].values()) == len(data)
    assert summary["n_tracks"] == len(data)


@pytest.mark.parametrize("consistent", [True, False])
def test_two_genre_classification_json_matches_sklearn(tables, tmp_path, consistent):
    """Evidently runs two labels as a binary task (it fails on a two-label multiclass task with
    "Undefined pos_label"): the summary still has macro scores and both genres' scores."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    reference = tables["reference"]
    two = ["disco", "jazz"]
    data = predictions_for(reference[reference["genre"].isin(two)], seed=3, consistent=consistent)
    summary = classification_report(data, tmp_path / "c.html", tmp_path / "c.json", model="m")
    on_disk = json.loads((tmp_path / "c.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, default=str))
    assert on_disk["accuracy"] == pytest.approx(accuracy_score(data["genre"], data["prediction"]))
    assert on_disk["f1"] == pytest.approx(
        f1_score(data["genre"], data["prediction"], average="macro")
    )
    assert on_disk["labels"] == two and set(on_disk["per_class"]) == set(two)
    assert on_disk["positive_label"] == "disco"
    p, r, f, support = precision_recall_fscore_support(
        data["genre"], data["prediction"], labels=two
    )
    for i, genre in enumerate(two):
        scores = on_disk["per_class"][genre]
        assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx(
            (p[i], r[i], f[i])
        )
        assert scores["support"] == support[i]
    assert on_disk["probabilities"] is consistent and ("roc_auc" in on_disk) is consistent
    if consistent:
        from sklearn.metrics import roc_auc_score

        expected = roc_auc_score(data["genre"] == "disco", data["prob_disco"])
        assert on_disk["roc_auc"] == pytest.approx(expected)
    assert (tmp_path / "c.html").stat().st_size > 0


@pytest.mark.parametrize("n_tested", [1, 3])  # two labels (binary), four
def test_classification_with_a_genre_without_test_tracks(tables, tmp_path, caplog, n_tested):
    """A genre of the model (a probability column) without test tracks, predicted for some
    tracks: no crash; macro scores over the genres that occur as truth or prediction, like
    scikit-learn's defaults; ROC AUC/log loss left out."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score

    reference = tables["reference"]
    tested = BASE_GENRES[:n_tested]
    data = predictions_for(reference[reference["genre"].isin(tested)], seed=4)
    data["prob_zydeco"] = 0.0
    data.loc[data.index[:2], ["prediction", "prob_zydeco"]] = ["zydeco", 9.0]  # argmax stays
    with caplog.at_level(logging.WARNING):
        summary = classification_report(data, tmp_path / "c.html", tmp_path / "c.json")
    assert "genres ['zydeco'] have no test tracks" in caplog.text
    assert summary["labels"] == sorted([*tested, "zydeco"])
    assert summary["accuracy"] == pytest.approx(accuracy_score(data["genre"], data["prediction"]))
    for key, score in (("f1", f1_score), ("precision", precision_score)):
        expected = score(data["genre"], data["prediction"], average="macro", zero_division=0)
        assert summary[key] == pytest.approx(expected), key
    assert summary["probabilities"] is False and "roc_auc" not in summary
    assert all(summary["per_class"][g]["support"] > 0 for g in tested)


def test_classification_report_logged_to_mlflow(tables, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    client.set_terminated(run.info.run_id)  # the training run has finished
    run_json = tmp_path / "run.json"
    run_json.write_text(
        json.dumps({"run_id": run.info.run_id, "experiment_id": experiment, "tracking_uri": uri})
    )
    data = predictions_for(tables["reference"])
    classification_report(data, tmp_path / "classification.html", tmp_path / "c.json")
    attach_files(run_json, [tmp_path / "classification.html", tmp_path / "c.json"])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "evidently")}
    assert logged == {"evidently/classification.html", "evidently/c.json"}


# ------------------------------------------------------------------------------ HTML


def test_html_is_self_contained_and_renders(tables, tmp_path):
    html_path = tmp_path / "drift.html"
    data_drift_report(tables["reference"], tables["louder"], html_path, tmp_path / "d.json")
    html = html_path.read_text()
    assert "drawDashboard" in html and "<script src=" not in html  # JS bundle inlined
    dom = headless_chromium(html_path.as_uri(), tmp_path / "chromium")
    # the dashboard is drawn by the inlined JS: its text only exists after rendering
    assert "Dataset Drift" in dom and "Drifted Columns" in dom, dom[-2000:]
    assert "rms_mean" in dom


# ------------------------------------------------------------------------------ report jobs


def test_drift_inputs_train_vs_test_or_reference_version():
    tracks = pd.DataFrame({"split": ["train", "test", "val", "test"], "x": [1, 2, 3, 4]})
    reference, current, ref_info, cur_info = drift_inputs(tracks)
    assert reference["x"].tolist() == [1] and current["x"].tolist() == [2, 4]
    assert (ref_info, cur_info) == ({"name": "train tracks"}, {"name": "test tracks"})
    reference, current, *_ = drift_inputs(tracks, reference_split="val", current_split="train")
    assert reference["x"].tolist() == [3] and current["x"].tolist() == [1]

    older = pd.DataFrame({"split": ["", ""], "x": [9, 8]})
    info = {"rev": "v1", "n_tracks": 2, "rejected": [{"path": "a.wav"}]}
    reference, current, ref_info, cur_info = drift_inputs(tracks, older, info)
    assert reference is older and current is tracks  # all current tracks, every split
    assert ref_info == {"name": "reference data version", "rev": "v1", "n_tracks": 2}
    assert cur_info == {"name": "current data (all splits)"}


def test_check_tested_splits_warns_about_other_splits(caplog):
    tested = pd.DataFrame({"split": ["test", "val", "test"]})
    with caplog.at_level(logging.WARNING):
        assert check_tested_splits(tested, None) == ["test", "val"]  # pooled folds: no check
        assert check_tested_splits(tested[tested.split == "test"], "test") == ["test"]
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING):
        check_tested_splits(tested, "test")
    assert "['test', 'val'], expected only test" in caplog.text


def test_failed_quality_json_is_kept_beside_the_log_and_named(tables, tmp_path, caplog):
    table = tables["reference"].copy()
    table["tempo_bpm"] = 120.0  # a constant column fails the quality tests
    table_path, data_version = tmp_path / "tracks.tsv", tmp_path / "data_version.json"
    write_table(table, table_path)
    data_version.write_text(json.dumps({"md5": "abc"}))
    out = {"html": tmp_path / "q.html", "json": tmp_path / "q.json"}
    kept = tmp_path / "logs" / "quality.json"
    kept.parent.mkdir()
    with pytest.raises(DataQualityError, match="logs/quality.json"):
        write_data_quality_report(
            table_path,
            out,
            data_version_path=data_version,
            kept_json_path=kept,
            fail_on_quality_issue=True,
        )
    assert json.loads(kept.read_text()) == json.loads(out["json"].read_text())
    kept.unlink()
    with caplog.at_level(logging.WARNING):
        summary = write_data_quality_report(
            table_path,
            out,
            data_version_path=data_version,
            kept_json_path=kept,
            fail_on_quality_issue=False,
        )
    assert not summary["passed"] and not kept.exists() and "q.json" in caplog.text
    assert keep_failed_quality_json({"passed": True}, "a.json", kept, fail=True).name == "a.json"


def test_reports_read_at_most_max_rows(tables, tmp_path):
    from genre_classification.reports.reports import sample_rows, write_data_drift_report

    table = pd.concat([tables["reference"], tables["louder"].assign(split="test")])
    table = table.reset_index(drop=True)
    sample, rows = sample_rows(table, 10, "tracks")
    assert len(sample) == 10 and rows == {
        "n_rows": len(table), "n_used": 10, "sampled": True, "seed": 0,
    }  # fmt: skip
    assert list(sample.index) == sorted(sample.index)  # the table's order
    again, _ = sample_rows(table, 10, "tracks")
    assert again["track_id"].tolist() == sample["track_id"].tolist()  # seeded
    whole, rows = sample_rows(table, 1000, "tracks")
    assert whole is table and not rows["sampled"]

    table_path, data_version = tmp_path / "tracks.tsv", tmp_path / "data_version.json"
    write_table(table, table_path)
    data_version.write_text(json.dumps({"md5": "abc"}))
    out = {"html": tmp_path / "d.html", "json": tmp_path / "d.json"}
    summary = write_data_drift_report(
        table_path, out, data_version_path=data_version, reference_split="train",
        current_split="test", max_rows=10,
    )  # fmt: skip
    assert summary["reference"]["n_tracks"] == 10
    assert summary["reference"]["rows"]["n_rows"] == len(tables["reference"])
    assert summary["current"]["n_tracks"] == 10
    assert summary["current"]["rows"]["n_rows"] == len(tables["louder"])
    assert json.loads(out["json"].read_text())["reference"]["rows"]["sampled"]
