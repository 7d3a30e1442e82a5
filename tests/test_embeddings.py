"""musicnn transfer learning on embeddings computed once (training.embeddings): the per-file
cache, a frozen head that starts at chance and converges, the probe, the fine-tune from
the probe's head, the self-contained saved model, and exact resume of a killed frozen job."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from _train_job import start
from _training_data import train_tiny
from conftest import REPO, TINY_MODEL, planned_jobs
from genre_classification.columns import SPLIT_COLUMNS
from genre_classification.data.demo_data import synthesize_clip
from genre_classification.features.features import FeatureParams
from genre_classification.training import embeddings, musicnn, track_head
from genre_classification.training.model_kinds import kind_of

if importlib.util.find_spec("musicnn") is None:
    pytest.skip("musicnn wheel not installed (make install)", allow_module_level=True)

GENRES = ("classical", "metal", "reggae")
SPLITS = (("train", 4), ("val", 2), ("test", 1))
FROZEN = {
    "architecture": "musicnn",
    "options": {"mode": "frozen"},
    "epochs": 4,
    "batch_size": 8,
    "seed": 3,
    "early_stopping": {"patience": 100},
}


def make_musicnn_features(root: Path) -> Path:
    """3 genres x 7 synthetic 6.5 s clips as musicnn features (two 187-frame segments each),
    in the layout of docs/CONTRACTS.md; returns the split manifest."""
    params = asdict(FeatureParams(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96))
    rows, seed = [], 0
    for genre in GENRES:
        i = 0
        for split, count in SPLITS:
            for _ in range(count):
                track, seed, i = f"{genre}.{i:05d}", seed + 1, i + 1
                audio = synthesize_clip(genre, 6.5, musicnn.SR, seed=seed)
                x = musicnn.musicnn_input(audio).transpose(0, 2, 1)  # (2, 96, 187)
                path = root / "features-musicnn" / genre / f"{track}.h5"
                path.parent.mkdir(parents=True, exist_ok=True)
                with h5py.File(path, "w") as h5:
                    h5.create_dataset("logmel", data=x)
                    h5.attrs.update({**params, "label": genre, "source_md5": f"md5-{track}"})
                rows.append((genre, track, split, str(path), len(x), f"md5-{track}"))
    split_path = root / "split.tsv"
    lines = ["\t".join(SPLIT_COLUMNS)] + ["\t".join(map(str, r)) for r in rows]
    split_path.write_text("\n".join(lines) + "\n")
    (root / "data_version.json").write_text(
        json.dumps({"source": "dir", "md5": "0", "n_files": len(rows), "location": str(root)})
    )
    return split_path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_musicnn_features(tmp_path_factory.mktemp("musicnn-data"))


def split_rows(split_path: Path, name: str) -> pd.DataFrame:
    split = pd.read_csv(split_path, sep="\t", dtype=str)
    return split[split.split == name]


def test_cache_is_computed_once_and_follows_the_file_and_weights(data):
    rows = split_rows(data, "train")
    embedders = embeddings.Embedders(FROZEN)
    embedder = embedders.parts[0]
    assert (embedder.checkpoint, embedder.embedding) == ("MSD_musicnn", "penultimate")
    first = rows.iloc[0]
    cache = embeddings.cache_path(first.features, embedder.name)
    assert cache == (
        Path(first.features).parents[1]
        / ".embeddings/MSD_musicnn-penultimate"
        / first.genre
        / f"{first.track}.npz"
    )
    x, y, counts = embedders.rows(rows, list(GENRES))
    assert counts.tolist() == [2] * len(rows)
    assert x.shape == (len(rows) * 2, 200) and y.tolist() == sorted(y.tolist())
    assert cache.is_file() and len(list(cache.parent.parent.glob("*/*.npz"))) == len(rows)
    # The cached values are the backbone's embedding of the file's segments.
    with h5py.File(first.features) as h5:
        segments = h5["logmel"][:]
    np.testing.assert_allclose(x[:2], embedder.embed(segments), atol=1e-5)

    # Read back, not recomputed ...
    calls = []
    embedder.embed, real_embed = (lambda s: calls.append(len(s)) or real_embed(s)), embedder.embed
    again, _, _ = embedders.rows(rows, list(GENRES))
    assert calls == [] and np.array_equal(again, x)
    # ... until the feature file changes (its content) or the weights do.
    with h5py.File(first.features, "a") as h5:
        h5["logmel"][0, :, :] += 0.5
    changed, _, _ = embedders.rows(rows, list(GENRES))
    assert calls == [2] and not np.allclose(changed[:2], x[:2])
    embedder.weights_sha256 = "other-weights"
    embedders.rows(rows.iloc[1:2], list(GENRES))
    assert calls == [2, 2]
    with h5py.File(first.features, "a") as h5:  # restore the file for the other tests
        h5["logmel"][0, :, :] -= 0.5


def shard_record(split_path: Path, out: Path) -> Path:
    """An extraction shard record of every file of the split (the columns embed_shard reads)."""
    split = pd.read_csv(split_path, sep="\t", dtype=str)
    record = split[["genre", "track", "features", "n_segments"]].assign(status="extracted")
    record.to_csv(out, sep="\t", index=False)
    return out


def test_embed_shard_fills_the_cache_for_every_backbone_once(data, tmp_path, monkeypatch):
    from genre_classification.columns import EMBEDDING_RECORD_COLUMNS

    record = shard_record(data, tmp_path / "00000.tsv")
    out = embeddings.shard_record_path(tmp_path / "features-musicnn", "00000")
    assert out == tmp_path / "features-musicnn/.embeddings/.shards/00000.tsv"
    backbones = [["MSD_musicnn", "penultimate"], ["MSD_vgg", "pool5"]]
    table = embeddings.embed_shard(record, backbones, out, threads=2)
    written = pd.read_csv(out, sep="\t", dtype=str)
    assert tuple(written.columns) == EMBEDDING_RECORD_COLUMNS
    n_files = len(GENRES) * sum(n for _, n in SPLITS)
    assert len(written) == 2 * n_files and set(table["n_segments"]) == {2}
    assert set(written["backbone"]) == {"MSD_musicnn-penultimate", "MSD_vgg-pool5"}
    for row in written.itertuples():
        with np.load(embeddings.cache_path(row.features, row.backbone)) as cached:
            width = 200 if row.backbone.startswith("MSD_musicnn") else 256
            assert cached["embeddings"].shape == (2, width)

    # A rerun (or a training/evaluation job) reads everything back: no backbone is built.
    def no_backbone(*args, **kwargs):
        raise AssertionError("built a backbone although every file is cached")

    monkeypatch.setattr(musicnn, "pretrained_backbone", no_backbone)
    again = embeddings.embed_shard(record, backbones, out)
    pd.testing.assert_frame_equal(again, table)
    config = {"architecture": "musicnn", "options": {"mode": "probe", "checkpoint": "MSD_vgg"}}
    split = embeddings.EmbeddedSplit(
        config, split_rows(data, "train"), split_rows(data, "val"), list(GENRES)
    )
    assert split.x_train.shape == (len(GENRES) * 4 * 2, 256)


def test_cached_backbones_of_the_models_that_read_the_cache():
    models = [
        {"architecture": "cnn", "options": {}},
        {"architecture": "musicnn", "options": {}},  # frozen
        {"architecture": "musicnn", "options": {"mode": "probe"}},
        {"architecture": "musicnn", "options": {"mode": "probe", "checkpoint": "MSD_vgg"}},
        {"architecture": "musicnn", "options": {"mode": "finetune", "embedding": "pool"}},
        {"architecture": "musicnn", "options": {"mode": "finetune", "head_init": "random"}},
    ]
    assert embeddings.cached_backbones(models) == [
        ["MSD_musicnn", "penultimate"],
        ["MSD_musicnn", "pool"],
        ["MSD_vgg", "pool5"],
    ]
    assert [kind_of(m).fits_on_embeddings for m in models] == [0, 1, 1, 1, 0, 0]


def test_embed_features_jobs_feed_the_frozen_and_probe_jobs(workflow_dir):
    """The wiring (a dry run): one embed_features job per shard of the musicnn set when a
    frozen/probe model is run, an input of its training and evaluation jobs; none for a CNN."""
    probe = {"architecture": "musicnn", "options": {"mode": "probe"}}
    vgg = {"architecture": "musicnn", "options": {"mode": "frozen", "checkpoint": "MSD_vgg"}}
    models = {"tiny": TINY_MODEL, "probe": probe, "vgg": vgg}
    workflow_dir.overlay("mnn.yaml", {"training": {"run": ["tiny"], "models": models}})
    dry = workflow_dir("--cores", "2", "--dry-run", "results/eval/tiny/metrics.json")
    assert "embed_features" not in planned_jobs(dry.stdout)
    workflow_dir.overlay("mnn2.yaml", {"training": {"run": ["probe", "vgg"], "models": models}})
    targets = ["results/eval/probe/metrics.json", "results/eval/vgg/metrics.json"]
    dry = workflow_dir("--cores", "2", "--dry-run", *targets)
    jobs = planned_jobs(dry.stdout)
    assert jobs["embed_features"] == jobs["extract_features"] - 1  # the musicnn set's shards
    record = "results/features-musicnn/.embeddings/.shards/"
    blocks = re.split(r"\n\[\w{3} \w{3} ", dry.stdout)  # a job's block starts with its date
    for rule in ("train_model", "evaluate_model"):
        inputs = [b for b in blocks if f"rule {rule}:" in b]
        assert len(inputs) == 2 and all(record in b for b in inputs), inputs


@pytest.mark.parametrize("entry", ["msd3-probe", "msd3-knn-probe"])
def test_shipped_msd3_probes_plan_their_three_backbones(workflow_dir, entry):
    """config/config.yaml's `msd3-probe` and `msd3-knn-probe` entries run as they are: one
    embed_features job per shard of the musicnn set feeds the training and evaluation jobs."""
    workflow_dir.overlay("msd3.yaml", {"training": {"run": [entry]}})
    dry = workflow_dir("--cores", "2", "--dry-run", f"results/eval/{entry}/metrics.json")
    jobs = planned_jobs(dry.stdout)
    assert jobs["embed_features"] == jobs["extract_features"] - 1
    assert jobs["train_model"] == jobs["evaluate_model"] == 1
    models = yaml.safe_load((REPO / "config/config.yaml").read_text())["training"]["models"]
    assert kind_of(models[entry]).name == "musicnn-probe"
    assert embeddings.backbones_of(models[entry]) == [
        ("MSD_musicnn", "penultimate"),
        ("MTT_musicnn", "penultimate"),
        ("MSD_vgg", "pool5"),
    ]


def test_evaluation_on_cached_embeddings_equals_the_whole_model(data, tmp_path, monkeypatch):
    """A frozen/probe model is evaluated by its head on the cached embeddings: the same
    predictions and metrics as the whole saved model (backbone included) on the segments."""
    from _training_data import full_config
    from genre_classification.evaluation import evaluate

    config = full_config(
        {**FROZEN, "options": {"mode": "probe"}, "early_stopping": {"patience": 3}}
    )
    train_tiny(config, data, tmp_path, "probe", "embeddings-eval-test")
    model_path = tmp_path / "models/probe/model.keras"
    embeddings.embed_shard(
        shard_record(data, tmp_path / "00000.tsv"),
        [["MSD_musicnn", "penultimate"]],
        tmp_path / "embedded.tsv",
    )
    results = {}
    for how, model_config in (("whole", None), ("head", config)):
        if how == "head":  # neither the segments through the model nor a backbone pass

            def fail(*args, **kwargs):
                raise AssertionError("ran the backbone")

            monkeypatch.setattr(evaluate, "predict_tracks", fail)
            monkeypatch.setattr(musicnn, "pretrained_backbone", fail)
        for subset in ("val", "test"):
            out = tmp_path / how / subset
            metrics = evaluate.evaluate(
                model_path,
                data,
                out / "metrics.json",
                out / "predictions.csv",
                out / "confusion.png",
                subset=subset,
                model_config=model_config,
            )
            results[how, subset] = (metrics, pd.read_csv(out / "predictions.csv"))
    for subset in ("val", "test"):
        (m_whole, p_whole), (m_head, p_head) = results["whole", subset], results["head", subset]
        assert m_head == m_whole
        assert m_head["temperature"] > 0 and 0 <= m_head["ece_uncalibrated"] <= 1  # one pass
        assert p_head[["track", "true", "predicted"]].equals(
            p_whole[["track", "true", "predicted"]]
        )
        probs = [c for c in p_whole.columns if c.startswith("prob_")]
        np.testing.assert_allclose(p_head[probs], p_whole[probs], atol=1e-5)
    assert results["whole", "val"][0]["n_segments"] == len(GENRES) * 2 * 2


def test_frozen_head_starts_at_chance_converges_and_saves_a_logmel_model(data, tmp_path):
    import keras

    info, _ = train_tiny(FROZEN, data, tmp_path, "frozen", "embeddings-test")
    history = pd.read_csv(tmp_path / "models/frozen/history.csv")
    chance = math.log(len(GENRES))
    first = history["loss"].iloc[0]
    print(f"first-epoch loss {first:.3f}, ln({len(GENRES)}) = {chance:.3f}")
    assert abs(first - chance) <= 0.2 * chance
    assert history["val_loss"].is_monotonic_decreasing  # it learns, epoch after epoch
    assert history["val_accuracy"].iloc[-1] == 1.0

    # The saved model takes log-mel segments: backbone + standardisation + the head.
    model = keras.models.load_model(tmp_path / "models/frozen/model.keras")
    assert model.input_shape == (None, 96, 187, 1)
    assert [layer.name for layer in model.layers][-5:] == [
        "embedding_standardisation",
        "head_dropout",
        "logits",
        "temperature",  # calibrate (default): logits / T, T fitted on the val tracks
        "probs",
    ]
    val = split_rows(data, "val")
    split = embeddings.EmbeddedSplit.of(
        {"architecture": "musicnn", "options": {"mode": "frozen"}},
        split_rows(data, "train"),
        val,
        list(GENRES),
    )
    segments = np.concatenate([h5py.File(f)["logmel"][:] for f in val.features])
    probs = model.predict(segments[..., None], verbose=0)
    # the standardisation holds the training split's statistics
    norm = model.get_layer("embedding_standardisation")
    np.testing.assert_allclose(np.ravel(norm.input_mean), split.mean, rtol=1e-5, atol=1e-5)
    # the same probabilities as the head on the cached embeddings
    x_val = (split.x_val - split.mean) / np.sqrt(np.maximum(split.variance, 1e-6))
    z = x_val @ model.get_layer("logits").kernel.numpy()
    z = (z + model.get_layer("logits").bias.numpy()) * model.get_layer("temperature").scale
    want = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, want / want.sum(axis=1, keepdims=True), atol=1e-4)
    assert info["run_id"]


def falling_loss():
    """A held-out loss that always falls: the regularisation path runs to its end."""
    values = iter(range(0, -100, -1))
    return lambda kernel, bias: next(values)


def test_probe_chooses_c_by_grouped_cross_validation(data, tmp_path):
    """The segment probe's C is the one whose out-of-fold track answers have the lowest log
    loss over grouped folds of train and val; refitted on both; T from the same folds."""
    import keras
    import mlflow

    from genre_classification.aggregation import temperature_of

    config = {**FROZEN, "options": {"mode": "probe"}}
    info, uri = train_tiny(config, data, tmp_path, "probe", "embeddings-test")
    train_rows, val_rows = split_rows(data, "train"), split_rows(data, "val")
    split = embeddings.EmbeddedSplit.of(config, train_rows, val_rows, list(GENRES))
    x, owners, y, groups = split.segments(("train", "val"))
    assert len(x) == len(GENRES) * 6 * 2 and owners.max() == len(GENRES) * 6 - 1
    choice = track_head.choose_segment_probe(x, owners, y, groups, 3, seed=3)
    assert choice.losses[("segment", choice.c)] == min(choice.losses.values())

    # the chosen C's out-of-fold loss by hand
    folds = track_head.cv_folds(y, groups, 3)
    assert choice.folds == len(folds) == 5
    nll = []
    for train, held in folds:
        fit, out = np.isin(owners, train), np.isin(owners, held)
        mean, variance = track_head.standardisation(x[fit])
        xt = (x[fit] - mean) / np.sqrt(variance)
        path = track_head.probe_path(xt, y[owners[fit]], 3, 3, falling_loss())
        kernel, bias, _ = path[choice.c]
        z = (x[out] - mean) / np.sqrt(variance) @ kernel + bias
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        for track in held:
            nll.append(-np.log(p[owners[out] == track, y[track]].mean()))
    assert choice.cv_loss == pytest.approx(np.mean(nll), rel=1e-4)

    history = pd.read_csv(tmp_path / "models/probe/history.csv")
    assert len(history) == 1 and history["C"].iloc[0] == pytest.approx(choice.c)
    assert history["val_loss"].iloc[0] == pytest.approx(choice.cv_loss)
    params = mlflow.MlflowClient(tracking_uri=uri).get_run(info["run_id"]).data.params
    assert params["probe.pooling"] == "segment" and float(params["probe.C"]) == choice.c
    model = keras.models.load_model(tmp_path / "models/probe/model.keras")
    segments = np.stack([h5py.File(f)["logmel"][0] for f in split_rows(data, "test").features])
    assert model.predict(segments[..., None], verbose=0).argmax(axis=1).tolist() == [0, 1, 2]
    # the saved head is that C's probe refitted on train and val, scaled by the folds' T
    np.testing.assert_allclose(model.get_layer("logits").kernel.numpy(), choice.kernel, atol=1e-6)
    assert temperature_of(model) == pytest.approx(choice.temperature)
    assert float(params["calibration.temperature"]) == round(choice.temperature, 4)


def test_finetune_starts_from_the_probe_head(data):
    """The fine-tune's starting head is the probe chosen over the train tracks only: val stays
    unseen for its early stopping."""
    config = {"architecture": "musicnn", "seed": 3, "augment": {}}
    config["options"] = {"mode": "finetune", "backbone_learning_rate_factor": 0.1}
    train_rows, val_rows = split_rows(data, "train"), split_rows(data, "val")
    model = embeddings.initial_model(config, train_rows, val_rows, list(GENRES), (96, 187, 1))
    split = embeddings.EmbeddedSplit.of(config, train_rows, val_rows, list(GENRES))
    x, owners, y, groups = split.segments(("train",))
    probe = track_head.choose_segment_probe(x, owners, y, groups, 3, seed=3)
    np.testing.assert_array_equal(model.get_layer("probs").kernel.numpy(), probe.kernel)
    np.testing.assert_array_equal(model.get_layer("probs").bias.numpy(), probe.bias)
    norm = model.get_layer("embedding_standardisation")
    np.testing.assert_allclose(np.asarray(norm.input_mean).reshape(-1), probe.mean, rtol=1e-6)
    assert model.get_layer("musicnn").trainable_weights
    assert model.learning_rate_factors == {musicnn.BACKBONE_VARIABLES: 0.1}
    # Its first loss is the probe's, far below chance.
    segments = np.concatenate([h5py.File(f)["logmel"][:] for f in train_rows.features])
    probs = model.predict(segments[..., None], verbose=0)
    loss = -np.mean(np.log(probs[np.arange(len(probs)), split.y_train]))
    assert loss < 0.5 * math.log(len(GENRES))


def test_finetune_keeps_its_start_when_no_epoch_beats_it(data, tmp_path):
    """The fine-tune's start (the probe's head) is epoch 0 of its history and early stopping:
    when a learning rate that wrecks the network makes every epoch worse on val, the saved
    model is the start, not the last epoch."""
    import keras
    import mlflow

    config = {**FROZEN, "epochs": 2, "learning_rate": 5.0, "calibrate": False}
    config["options"] = {"mode": "finetune"}
    info, uri = train_tiny(config, data, tmp_path, "finetune", "embeddings-test")
    history = pd.read_csv(tmp_path / "models/finetune/history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    assert not (history["val_loss"].iloc[1:] <= history["val_loss"].iloc[0]).any()  # or NaN
    assert pd.isna(history["loss"].iloc[0])  # epoch 0 trained nothing
    train_rows, val_rows = split_rows(data, "train"), split_rows(data, "val")
    start = embeddings.initial_model(config, train_rows, val_rows, list(GENRES), (96, 187, 1))
    saved = keras.models.load_model(tmp_path / "models/finetune/model.keras")
    for layer in ("probs", "embedding_standardisation"):
        for a, b in zip(
            saved.get_layer(layer).get_weights(), start.get_layer(layer).get_weights(), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    # the start's val loss is epoch 0's
    segments = np.concatenate([h5py.File(f)["logmel"][:] for f in val_rows.features])
    y = np.repeat([GENRES.index(g) for g in val_rows.genre], 2)
    probs = saved.predict(segments[..., None], verbose=0)
    val_loss = -np.mean(np.log(probs[np.arange(len(y)), y]))
    assert history["val_loss"].iloc[0] == pytest.approx(val_loss, rel=1e-4)
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_run(info["run_id"]).data.metrics["best_epoch"] == 0
    assert [m.step for m in client.get_metric_history(info["run_id"], "val_loss")] == [0, 1, 2]


def test_augment_needs_finetune(data):
    config = {**FROZEN, "augment": {"crop": True}}
    with pytest.raises(ValueError, match="augment needs mode: finetune"):
        embeddings.initial_model(
            config, split_rows(data, "train"), split_rows(data, "val"), list(GENRES), (96, 187, 1)
        )


@pytest.mark.slow
def test_killed_frozen_job_resumes_exactly(data, tmp_path):
    from _training_data import TINY_CONFIG

    def job(name, kill_after=None):
        out = tmp_path / name
        config = {**TINY_CONFIG, **FROZEN, "keep_checkpoints": False}
        config["early_stopping"] = {"patience": 100, "restore_best_weights": False}
        spec = {
            "config": config,
            "split_path": str(data),
            "model_path": str(out / "model.keras"),
            "history_path": str(out / "history.csv"),
            "run_info_path": str(out / "run.json"),
            "checkpoint_dir": str(out / "checkpoints"),
            "experiment": "embeddings-resume",
            "model_name": name,
            "threads": 1,
        }
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}
        env["GENRE_CLASSIFICATION_KILL_AFTER_EPOCH"] = str(kill_after or "")
        proc = start(spec, out, env)
        output, _ = proc.communicate(timeout=600)
        return proc.returncode, output, out

    code, output, _ = job("resumed", kill_after=2)
    assert code == -9, output
    code, output, resumed = job("resumed")
    assert code == 0, output
    assert "Resuming from checkpoint after epoch 2" in output
    code, output, full = job("full")
    assert code == 0, output
    h_full = pd.read_csv(full / "history.csv").drop(columns="epoch_seconds")
    h_resumed = pd.read_csv(resumed / "history.csv").drop(columns="epoch_seconds")
    pd.testing.assert_frame_equal(h_full, h_resumed, rtol=1e-5)
    import keras

    heads = [keras.models.load_model(d / "model.keras").get_layer("probs") for d in (full, resumed)]
    for a, b in zip(heads[0].get_weights(), heads[1].get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
