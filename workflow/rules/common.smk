import functools
import os
from pathlib import Path

from snakemake.utils import validate

from genre_classification.audio_source import audio_root, data_version, list_collection
from genre_classification.config_check import check_keys, check_values
from genre_classification.features import repair_requests, shard_record_path
from genre_classification.shards import assign_shards
from genre_classification.audio_source import list_unlabelled
from genre_classification.predict_set import set_source
from genre_classification.shards import shard_runtime_minutes

CONFIG_SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
check_keys(config, CONFIG_SCHEMA)
validate(config, CONFIG_SCHEMA)
check_values(config)


wildcard_constraints:
    genre="[^/]+",
    track="[^/]+",
    shard="[0-9]+",


FEATURES_DIR = "results/features"
SHARD_RECORD = str(shard_record_path(FEATURES_DIR, "{shard}"))
FETCHED = "results/data/fetched/{shard}.json"


@functools.cache
def audio_collection():
    """Every audio file of the configured source with its version: DVC's per-file md5s, or
    size:mtime of a plain directory. Listed once per Snakemake invocation, no audio read.
    """
    return list_collection(config["data"])


@functools.cache
def audio_shards():
    return assign_shards(audio_collection(), config["extraction"]["files_per_shard"])


def fetched_audio(wildcards):
    """A DVC source is pulled shard by shard before extraction; a plain directory is read in
    place."""
    if config["data"]["source"] != "dvc":
        return []
    return FETCHED.format(shard=wildcards.shard)


def shard_members(wildcards):
    """The shard's files as [genre, track, relpath, version]: a param, so a changed, added or
    removed file reruns only its own shard."""
    return [
        [audio.genre, audio.track, audio.relpath, audio.version]
        for audio in audio_shards()[wildcards.shard]
    ]


def shard_runtime(wildcards, threads, attempt):
    """Minutes: a fixed start-up allowance plus runtime_s_per_file for each member."""
    n_files = len(audio_shards()[wildcards.shard])
    per_file = config["extraction"]["runtime_s_per_file"]
    return (10 + -(-n_files * per_file // (60 * threads))) * attempt


def shard_records(wildcards=None):
    return [SHARD_RECORD.format(shard=shard) for shard in audio_shards()]


def final_targets(wildcards):
    return [
        "results/data/data_version.json",
        "results/qc/rejected.tsv",
        "results/data/manifest.tsv",
        "results/split/split.tsv",
        *training_targets(),
        *report_targets(),
        *predict_targets(),
    ]


# --- training / evaluation (rules in rules/train.smk; maintained with the training stage) ---


TRAINING_RESOURCE_DEFAULTS = {
    "partition": None,
    "gpu": 0,
    "gres": None,
    "mem_mb": 4000,
    "runtime": 60,
}


def training_model_config(wildcards):
    models = config["training"]["models"]
    if wildcards.model not in models:
        raise ValueError(
            f"model {wildcards.model!r} is not in training.models ({sorted(models)})"
        )
    return {k: v for k, v in models[wildcards.model].items() if k != "resources"}


def training_resource(name):
    """Resource ``name`` of a model: training.models.<m>.resources > training.resources."""

    def get(wildcards):
        merged = {
            **TRAINING_RESOURCE_DEFAULTS,
            **config["training"].get("resources", {}),
            **config["training"]["models"][wildcards.model].get("resources", {}),
        }
        return merged[name]

    return get


def training_gres(wildcards):
    """Slurm --gres: the explicit gres string, else gpu:<n> when gpu > 0, else none ("")."""
    gres = training_resource("gres")(wildcards)
    gpu = training_resource("gpu")(wildcards)
    return gres or (f"gpu:{gpu}" if gpu else "")


def training_models():
    """Models that become training jobs: training.run (checked by check_values at parse time)."""
    return list(config["training"]["run"])


def training_targets(wildcards=None):
    """Model file, history, MLflow run record and evaluation outputs of every selected model."""
    return [
        path
        for model in training_models()
        for path in (
            f"results/models/{model}/model.keras",
            f"results/models/{model}/history.csv",
            f"results/mlflow/runs/{model}.json",
            f"results/eval/{model}/metrics.json",
            f"results/eval/{model}/predictions.csv",
            f"results/eval/{model}/confusion_matrix.png",
        )
    ]


# --- Evidently report targets (rules in rules/reports.smk; maintained with the reports stage)


def drift_reference_inputs(wildcards):
    if config["reports"]["reference"] is None:
        return {}
    return {
        "reference": "results/reference/tracks.tsv",
        "reference_info": "results/reference/reference.json",
    }


def report_targets(wildcards=None):
    """Track table, data drift and quality reports, and a classification report per model."""
    return [
        "results/tables/tracks.tsv",
        "results/reports/data_drift.html",
        "results/reports/data_drift.json",
        "results/reports/data_quality.html",
        "results/reports/data_quality.json",
        *(
            f"results/reports/{model}/classification.{ext}"
            for model in training_models()
            for ext in ("html", "json")
        ),
    ]


# --- predict sets (rules in rules/predict.smk; logic in genre_classification.predict_set) ---


PREDICT_DIR = "results/predict/{set}"
PREDICT_FEATURES = f"{PREDICT_DIR}/features"
PREDICT_RECORD = str(shard_record_path(PREDICT_FEATURES, "{shard}"))
PREDICT_FETCHED = f"{PREDICT_DIR}/fetched/{{shard}}.json"


def predict_model():
    """The training.models entry that predicts: predict.model, else the first of training.run."""
    return config["predict"]["model"] or training_models()[0]


def predict_model_files(wildcards=None):
    model = predict_model()
    return {
        "model": f"results/models/{model}/model.keras",
        "model_features": f"results/models/{model}/features.json",
    }


@functools.cache
def predict_source(name):
    """The set as a data-like config section (source, dir or dvc, extensions)."""
    if name not in config["predict"]["sets"]:
        raise ValueError(
            f"predict set {name!r} is not in predict.sets ({sorted(config['predict']['sets'])})"
        )
    return set_source(config["predict"]["sets"][name], config["data"])


@functools.cache
def predict_shards(name):
    """Shards of the set's files, listed once per invocation (every audio file below it)."""
    files = list_unlabelled(predict_source(name))
    return assign_shards(files, config["extraction"]["files_per_shard"])


def predict_fetched(wildcards):
    if predict_source(wildcards.set)["source"] != "dvc":
        return []
    return PREDICT_FETCHED.format(set=wildcards.set, shard=wildcards.shard)


def predict_shard_members(wildcards):
    return [
        [audio.genre, audio.track, audio.relpath, audio.version]
        for audio in predict_shards(wildcards.set)[wildcards.shard]
    ]


def predict_shard_runtime(wildcards, threads, attempt):
    n_files = len(predict_shards(wildcards.set)[wildcards.shard])
    per_file = config["extraction"]["runtime_s_per_file"]
    return shard_runtime_minutes(n_files, per_file, threads, attempt)


def predict_shard_records(wildcards):
    return [
        PREDICT_RECORD.format(set=wildcards.set, shard=shard)
        for shard in predict_shards(wildcards.set)
    ]


def predict_targets(wildcards=None):
    """Predictions and the drift report of every predict set."""
    return [
        path
        for name in config["predict"]["sets"]
        for path in (
            f"results/predict/{name}/predictions.csv",
            f"results/reports/predict/{name}/drift.html",
            f"results/reports/predict/{name}/drift.json",
        )
    ]
