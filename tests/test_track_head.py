"""Track-pooled heads (training.track_head) and the kNN probe (training.knn_head): the
arithmetic of the saved heads, the grouped cross-validation and the temperature; then a pooled
probe and a kNN probe on two backbones at once, trained by the real training code, each give the
same per-track answer through evaluation (on the embedding cache and on the whole model),
`predict`, a predict set, the pyfunc and `mlflow models serve`."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _serving import serve_clip, served
from _training_data import train_tiny
from conftest import skip_unless_required
from genre_classification.aggregation import SegmentsToTracks, aggregate_tracks, temperature_of
from genre_classification.columns import SPLIT_COLUMNS
from genre_classification.data.demo_data import make_demo_dataset
from genre_classification.evaluation import evaluate, registry
from genre_classification.features.features import (
    BUILTIN_SETS,
    FeatureParams,
    extract_audio,
    read_features,
)
from genre_classification.predict import predict_set
from genre_classification.training import calibration, embeddings, knn_head, track_head
from genre_classification.training.musicnn import check_options
from test_predict import read_rows, run_cli

GENRES = ["classical", "metal", "reggae"]
SPLITS = ["train"] * 4 + ["val"] * 2 + ["test"] * 2  # per genre, by clip number
NAME = "genre-pooled-test"
POOLED = {
    "architecture": "musicnn",
    "options": {"mode": "probe", "pooling": "auto", "checkpoint": "MSD_musicnn+MSD_vgg"},
    "epochs": 1,
    "batch_size": 8,
    "seed": 3,
    "early_stopping": {"patience": 100},
}
KNN_NAME = "genre-knn-test"
KNN_MAX_REFERENCE = 20  # fewer than the 36 train and val segments: the sample is exercised
KNN = {
    **POOLED,
    "options": {
        "mode": "probe",
        "classifier": "knn",
        "checkpoint": "MSD_musicnn+MSD_vgg",
        "knn_max_reference": KNN_MAX_REFERENCE,
    },
}


# --- arithmetic -------------------------------------------------------------------------------


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


@pytest.mark.parametrize("pooling", ["mean", "mean_std"])
def test_saved_head_computes_the_pooled_probe(pooling):
    rng = np.random.default_rng(0)
    width, n_classes = 6, 3
    tracks = [rng.normal(1.0, 2.0, size=(n, width)) for n in (1, 2, 5, 9)]
    moments = np.stack([track_head.track_moments(t) for t in tracks])
    x = track_head.pooled(moments, pooling)
    if pooling == "mean_std":  # the pooled vector is mean and (population) std per dimension
        np.testing.assert_allclose(x[:, width:], [t.std(axis=0) for t in tracks], atol=1e-9)
    mean, variance = track_head.standardisation(x)
    kernel = rng.normal(size=(x.shape[1], n_classes)).astype(np.float32)
    bias = rng.normal(size=n_classes).astype(np.float32)
    head = track_head.head_model(width, n_classes, pooling, mean, variance, 0.3, temperature=2.5)
    head.get_layer("logits").set_weights([kernel, bias])
    expected = softmax(((x - mean) / np.sqrt(variance) @ kernel + bias) / 2.5)
    got = np.asarray(head(moments, training=False))
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert track_head.pooling_of(head) == pooling
    cooler = calibration.with_temperature(head, 1.0)
    unscaled = np.asarray(cooler(moments))
    np.testing.assert_allclose(unscaled, softmax(2.5 * np.log(expected)), atol=2e-5)


def test_temperature_recovers_overconfidence_and_lowers_the_ece():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 1.5, size=(4000, 4))
    y = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    overconfident = 3.0 * true_logits
    t = track_head.fit_temperature(overconfident, np.arange(len(y)), y)
    assert 2.6 < t < 3.4
    before = evaluate.expected_calibration_error(softmax(overconfident), y)
    after = evaluate.expected_calibration_error(softmax(overconfident / t), y)
    assert before > 0.1 and after < 0.03
    # uncalibrated() undoes the scaling the evaluation reports "before"
    np.testing.assert_allclose(
        evaluate.uncalibrated(softmax(overconfident / t), t), softmax(overconfident), atol=1e-9
    )


def test_probe_path_is_the_fits_from_scratch_and_stops_past_the_best_c():
    rng = np.random.default_rng(0)
    y = np.arange(240) % 3
    x = rng.normal(0, 1, (240, 40)) + 0.6 * np.eye(3, 40)[y]  # noisy: weak C overfits
    (xt, yt), (xh, yh) = (x[:120], y[:120]), (x[120:], y[120:])
    path = track_head.probe_path(
        xt, yt, 3, 0, lambda kernel, bias: track_head.log_loss(xh @ kernel + bias, yh)
    )
    cs = list(path)
    assert cs == list(track_head.PROBE_C[: len(cs)])  # strongest regularisation first
    held = [path[c][2] for c in cs]
    assert len(cs) == int(np.argmin(held)) + 1 + track_head.PATH_PATIENCE < len(track_head.PROBE_C)
    for c in cs:  # warm-started, the same optimum as a fit from scratch
        kernel, bias = track_head.fit_probe(xt, yt, 3, c, 0)
        cold = track_head.log_loss(xt @ kernel + bias, yt)
        warm = track_head.log_loss(xt @ path[c][0] + path[c][1], yt)
        assert warm == pytest.approx(cold, rel=1e-3)
        assert path[c][2] == pytest.approx(track_head.log_loss(xh @ kernel + bias, yh), rel=1e-3)


def test_cv_folds_keep_groups_apart_and_every_genre_in_training():
    def tracks(per_genre):  # groups of 3 tracks of a genre
        y = np.repeat([0, 1, 2], per_genre)
        index = np.tile(np.arange(per_genre), 3)
        return y, np.array([f"{g}-{i // 3}" for g, i in zip(y, index, strict=True)])

    y, groups = tracks(12)  # 4 groups per genre: 4 folds
    assert len(track_head.cv_folds(y, groups, seed=0)) == 4
    y, groups = tracks(21)
    folds = track_head.cv_folds(y, groups, seed=0)
    assert len(folds) == track_head.CV_FOLDS
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(len(y)))  # every track held out once
    for train, h in folds:
        assert not set(groups[train]) & set(groups[h])
        assert set(y[train]) == {0, 1, 2}
    # one group per genre cannot be cross-validated: a clear error naming what to do
    with pytest.raises(ValueError, match="at least 2 groups.*add tracks of it, or use musicnn"):
        track_head.cv_folds(y, np.array([f"g{k}" for k in y]), seed=0)


def test_choice_prefers_the_pooling_that_carries_the_genre():
    """Genres differ only in how much the segments vary: mean pooling cannot tell them apart,
    mean_std can; auto chooses mean_std, with a finite C and a positive temperature."""
    rng = np.random.default_rng(2)
    moments, y = [], []
    for track in range(60):
        genre = track % 3
        segments = rng.normal(0.0, 0.5 + genre, size=(8, 4))
        moments.append(track_head.track_moments(segments))
        y.append(genre)
    y = np.array(y)
    groups = np.array([str(i) for i in range(len(y))])
    choice = track_head.choose_probe(np.stack(moments), y, groups, 3, ("mean", "mean_std"), 0)
    assert choice.pooling == "mean_std" and choice.c in track_head.PROBE_C
    assert choice.temperature > 0 and choice.folds == 5
    best_mean = min(v for (p, _), v in choice.losses.items() if p == "mean")
    assert choice.cv_loss < best_mean - 0.3


def test_saved_knn_block_computes_the_votes():
    """The saved kNN head (standardisation -> knn_block -> probs, temperature-scaled) gives
    the probabilities of ``log_votes`` at the chosen k, ties at the k-th similarity included."""
    rng = np.random.default_rng(4)
    width, n_classes, k = 5, 3, 4
    x = rng.normal(2.0, 3.0, size=(30, width))
    mean, variance = track_head.standardisation(x)
    units = knn_head.standardised_units(x, mean, variance)
    reference = np.concatenate([units, units[:3]])  # duplicates: ties at the k-th similarity
    labels = rng.integers(0, n_classes, len(reference))
    choice = knn_head.KnnChoice(
        k, 0.0, 5, 1.7, mean, variance, reference, labels, n_classes
    )  # fmt: skip
    head = embeddings.head_model(width, n_classes, mean, variance, 0.5, knn_head.knn_block(choice))
    head.get_layer("probs").set_weights([choice.kernel, choice.bias])
    queries = rng.normal(2.0, 3.0, size=(12, width))
    q = knn_head.standardised_units(queries, mean, variance)
    log_p = knn_head.log_votes(reference, labels, q, n_classes, [k])[k]
    np.testing.assert_allclose(np.asarray(head(queries, training=False)), np.exp(log_p), atol=2e-5)
    scaled = calibration.with_temperature(head, choice.temperature)
    np.testing.assert_allclose(np.asarray(scaled(queries)), softmax(log_p / 1.7), atol=2e-5)
    assert np.all(np.exp(log_p) >= knn_head.SMOOTHING / n_classes - 1e-9)  # never 0


def test_knn_probe_separates_what_no_linear_probe_can():
    """Each genre is two clusters on opposite sides (an XOR): the logistic probe stays near
    chance, the kNN probe gets nearly every held-out track, with k from its grid and a
    reference set of at most ``max_reference`` segments."""
    rng = np.random.default_rng(5)
    centres = np.array([[3, 3], [-3, -3], [3, -3], [-3, 3]], dtype=float)

    def tracks(n):
        cluster = np.arange(n) % 4
        x = centres[cluster][:, None, :] + rng.normal(0, 1.0, size=(n, 3, 2))
        return x.reshape(-1, 2), np.repeat(np.arange(n), 3), cluster // 2

    x, owners, y = tracks(120)
    groups = np.array([str(i) for i in range(len(y))])
    knn = knn_head.choose_knn_probe(x, owners, y, groups, 2, seed=0, max_reference=150)
    logistic = track_head.choose_segment_probe(x, owners, y, groups, 2, seed=0)
    assert knn.k in knn_head.KNN_K and len(knn.reference) == 150 and knn.folds == 5
    assert knn.cv_loss < logistic.cv_loss - 0.3
    xt, owners_t, yt = tracks(40)
    q = knn_head.standardised_units(xt, knn.mean, knn.variance)
    votes = knn_head.log_votes(knn.reference, knn.reference_labels, q, 2, [knn.k])[knn.k]
    accuracy = np.mean(aggregate_tracks(np.exp(votes), owners_t)[1].argmax(1) == yt)
    linear = (xt - logistic.mean) / np.sqrt(logistic.variance) @ logistic.kernel + logistic.bias
    linear_accuracy = np.mean(aggregate_tracks(softmax(linear), owners_t)[1].argmax(1) == yt)
    assert accuracy >= 0.95 and linear_accuracy < 0.75


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "probe", "classifier": "svm"}, "unknown musicnn classifier 'svm'"),
        ({"mode": "frozen", "classifier": "knn"}, "'knn' needs mode: probe and pooling: segment"),
        ({"mode": "probe", "classifier": "knn", "pooling": "mean"}, "'knn' needs mode: probe"),
        ({"mode": "probe", "classifier": "knn", "knn_max_reference": 0}, "knn_max_reference"),
        ({"mode": "frozen", "pooling": "auto"}, "'auto'.*needs mode: probe"),
        ({"mode": "finetune", "pooling": "mean"}, "needs mode frozen or probe"),
        ({"mode": "finetune", "checkpoint": "MSD_musicnn+MTT_musicnn"}, "several backbones"),
        ({"mode": "probe", "checkpoint": "MSD_musicnn+NOPE"}, "unknown musicnn checkpoint 'NOPE'"),
        ({"mode": "probe", "checkpoint": "MSD_vgg+MSD_vgg"}, "names a checkpoint twice"),
        ({"mode": "probe", "pooling": "max"}, "unknown musicnn pooling 'max'"),
        ({"mode": "probe", "checkpoint": "MSD_musicnn+MSD_vgg", "embedding": "a+b+c"}, "one per"),
    ],
)
def test_bad_options_name_the_option(options, message):
    opts = {
        "embedding": None,
        "backbone_learning_rate_factor": 1.0,
        "checkpoint": "MSD_musicnn",
        "head_init": "probe",
        **options,
    }
    with pytest.raises(ValueError, match=message):
        check_options((96, 187, 1), **opts)


def test_several_backbones_are_cached_one_by_one():
    entries = [POOLED, {"architecture": "musicnn", "options": {"mode": "frozen"}}]
    assert embeddings.cached_backbones(entries) == [
        ["MSD_musicnn", "penultimate"],
        ["MSD_vgg", "pool5"],
    ]


# --- a pooled probe on two backbones, end to end ----------------------------------------------


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    """Audio -> musicnn features -> split -> train (pooled probe on MSD_musicnn+MSD_vgg) ->
    evaluate -> registered champion, in a temp dir."""
    return trained_and_registered(tmp_path_factory, POOLED, "pooled", NAME)


@pytest.fixture(scope="module")
def knn(tmp_path_factory):
    """The same for the kNN probe on MSD_musicnn+MSD_vgg."""
    return trained_and_registered(tmp_path_factory, KNN, "knn", KNN_NAME)


def trained_and_registered(tmp_path_factory, config: dict, name: str, registered: str) -> dict:
    if importlib.util.find_spec("musicnn") is None:  # CI: a failure, not a skip
        skip_unless_required("musicnn wheel not installed (make install)")
    root = tmp_path_factory.mktemp(name)
    audio = make_demo_dataset(root / "audio", len(SPLITS), seconds=6.5, genres=GENRES)
    params = FeatureParams(**BUILTIN_SETS["musicnn"])
    rows = []
    for path in audio:
        genre, track = path.parent.name, path.stem
        h5 = root / "features" / genre / f"{track}.h5"
        shape, _ = extract_audio(path, h5, params, genre, f"md5-{track}")
        rows.append((genre, track, SPLITS[int(track.split(".")[1])], str(h5), shape[0], "m"))
    split = root / "split.tsv"
    pd.DataFrame(rows, columns=SPLIT_COLUMNS).to_csv(split, sep="\t", index=False)
    info, uri = train_tiny(config, split, root, name, f"{name}-test")
    model = root / f"models/{name}/model.keras"
    outputs = {k: root / "eval" / k for k in ("cache", "whole")}
    metrics = {
        route: evaluate.evaluate(
            model,
            split,
            out / "metrics.json",
            out / "predictions.csv",
            out / "cm.png",
            model_config=config if route == "cache" else None,
        )  # fmt: skip
        for route, out in outputs.items()
    }
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        registry.register_and_promote(root / "run.json", metrics["cache"], registered, uri)
    return {
        "name": registered,
        "root": root,
        "audio": audio,
        "split": split,
        "model": model,
        "run": info,
        "uri": uri,
        "metrics": metrics,
        "predictions": {k: pd.read_csv(out / "predictions.csv") for k, out in outputs.items()},
        "params": params,
    }


def test_pooled_probe_is_chosen_calibrated_and_logged(pooled):
    import keras
    import mlflow

    model = keras.models.load_model(pooled["model"])
    names = {layer.name for layer in model.layers}
    assert {"track_moments", "track_head"} <= names
    metrics = pooled["metrics"]["cache"]
    assert metrics["temperature"] == pytest.approx(temperature_of(model))
    assert 0 <= metrics["ece"] <= 1 and 0 <= metrics["ece_uncalibrated"] <= 1
    run = mlflow.MlflowClient(pooled["uri"]).get_run(pooled["run"]["run_id"])
    assert run.data.params["probe.pooling"] in ("mean", "mean_std")
    assert float(run.data.params["probe.C"]) in track_head.PROBE_C
    assert run.data.params["probe.cv_folds"] == "5"
    assert {"pretrained.MSD_musicnn.weights_sha256", "pretrained.MSD_vgg.weights_sha256"} <= set(
        run.data.tags
    ) | set(run.data.params)


def test_knn_probe_is_chosen_calibrated_and_logged(knn):
    import keras
    import mlflow

    model = keras.models.load_model(knn["model"])
    similarity = model.get_layer(knn_head.KNN_BLOCK).get_layer("similarity")
    assert similarity.get_weights()[0].shape[1] == KNN_MAX_REFERENCE
    metrics = knn["metrics"]["cache"]
    assert metrics["temperature"] == pytest.approx(temperature_of(model))
    run = mlflow.MlflowClient(knn["uri"]).get_run(knn["run"]["run_id"])
    params = run.data.params
    assert params["probe.classifier"] == "knn" and params["probe.pooling"] == "segment"
    assert int(params["probe.k"]) in knn_head.KNN_K
    assert params["probe.reference_segments"] == str(KNN_MAX_REFERENCE)
    assert "probe.C" not in params


def test_a_track_is_answered_the_same_however_its_segments_are_batched(pooled):
    import keras

    model = keras.models.load_model(pooled["model"])
    parts = SegmentsToTracks.of(model)
    split = pd.read_csv(pooled["split"], sep="\t")
    tracks = [read_features(f)[0] for f in split.features[:6]]
    x, owners = np.concatenate(tracks), np.repeat(np.arange(6), [len(t) for t in tracks])
    together = parts.per_segment.predict(x[..., None], batch_size=len(x), verbose=0)
    one_by_one = np.concatenate(
        [parts.per_segment.predict(x[i : i + 1, ..., None], verbose=0) for i in range(len(x))]
    )
    np.testing.assert_allclose(
        parts.tracks(together, owners)[1], parts.tracks(one_by_one, owners)[1], atol=1e-5
    )
    # the whole model on one track's segments answers for each as a track of one segment
    single = np.asarray(model.predict(x[:1, ..., None], verbose=0))
    np.testing.assert_allclose(single, parts.tracks(together[:1], [0])[1], atol=1e-5)


@pytest.mark.parametrize("trained", ["pooled", "knn"])
def test_same_answer_through_evaluation_predict_a_predict_set_pyfunc_and_the_server(
    trained, request, tmp_path, monkeypatch
):
    import mlflow

    pooled = request.getfixturevalue(trained)

    clips = [p for p in pooled["audio"] if SPLITS[int(p.stem.split(".")[1])] == "test"]
    cache, whole = pooled["predictions"]["cache"], pooled["predictions"]["whole"]
    prob_columns = [c for c in cache.columns if c.startswith("prob_")]
    np.testing.assert_allclose(cache[prob_columns], whole[prob_columns], atol=1e-5)
    evaluated = {
        row.track.split("/")[-1]: dict(zip(prob_columns, row[prob_columns], strict=True))
        for _, row in cache.iterrows()
    }

    # predict on the audio files, with the registered champion
    uri = f"models:/{pooled['name']}@{registry.CHAMPION}"
    out = tmp_path / "cli.csv"
    env = {"MLFLOW_TRACKING_URI": pooled["uri"]}
    result = run_cli("--model", uri, "--output", out, *clips, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cli = {Path(r["path"]).stem: r for r in read_rows(out.read_text())}
    assert sorted(cli) == sorted(p.stem for p in clips)
    for stem, row in cli.items():
        probs = evaluated[stem]
        assert row["genre"] == max(probs, key=probs.get).removeprefix("prob_")
        assert float(row["probability"]) == pytest.approx(max(probs.values()), abs=1e-5)

    # a predict set: the same files' features through predict_set.write_predictions
    manifest, rejected = tmp_path / "manifest.tsv", tmp_path / "rejected.tsv"
    features = {Path(f).stem: f for f in pd.read_csv(pooled["split"], sep="\t").features}
    manifest.write_text(
        "path\ttrack\tfeatures\n" + "".join(f"{p}\t{p.stem}\t{features[p.stem]}\n" for p in clips)
    )
    rejected.write_text("path\ttrack\treason\n")
    set_out = tmp_path / "set.csv"
    predict_set.write_predictions(pooled["model"], manifest, rejected, set_out)
    for row in read_rows(set_out.read_text()):
        assert row["genre"] == cli[row["track"]]["genre"]
        assert row["probability"] == cli[row["track"]]["probability"]

    # the pyfunc in this process, and `mlflow models serve` over HTTP
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pooled["uri"])
    mlflow.set_tracking_uri(pooled["uri"])
    pyfunc = mlflow.pyfunc.load_model(uri)
    answers = pyfunc.predict(pd.DataFrame({"path": [str(p) for p in clips]}))
    for row in answers.itertuples():
        assert row.genre == cli[Path(row.path).stem]["genre"]
        assert f"{row.probability:.6f}" == cli[Path(row.path).stem]["probability"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": pooled["uri"]}
    with served(uri, env, tmp_path) as (url, log):
        row = serve_clip(url, log, clips[0])
    assert row["genre"] == cli[clips[0].stem]["genre"]
    assert f"{row['probability']:.6f}" == cli[clips[0].stem]["probability"]


def test_frozen_track_head_trains_by_epochs_and_is_calibrated_on_val(pooled):
    import keras

    config = {
        **POOLED,
        "options": {"mode": "frozen", "pooling": "mean_std", "checkpoint": "MSD_musicnn"},
        "epochs": 4,
        "learning_rate": 0.01,
    }
    root = pooled["root"]
    train_tiny(config, pooled["split"], root, "frozen-tracks", "pooled-test")
    history = pd.read_csv(root / "models/frozen-tracks/history.csv")
    assert len(history) == 4 and history["loss"].iloc[-1] < history["loss"].iloc[0]
    model = keras.models.load_model(root / "models/frozen-tracks/model.keras")
    head = model.get_layer("track_head")
    assert track_head.pooling_of(head) == "mean_std"
    temperature = temperature_of(model)
    assert temperature is not None and temperature != 1.0
    out = root / "eval-frozen"
    metrics = evaluate.evaluate(
        root / "models/frozen-tracks/model.keras", pooled["split"], out / "metrics.json",
        out / "predictions.csv", out / "cm.png", model_config=config,
    )  # fmt: skip
    assert metrics["n_tracks"] == 6 and metrics["temperature"] == pytest.approx(temperature)
