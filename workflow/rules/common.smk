import functools
import os
from pathlib import Path

from snakemake.utils import validate

from genre_classification.audio_source import (
    audio_root,
    directory_fingerprint,
    dvc_out,
    read_tsv,
)
from genre_classification.config_check import check_keys, check_values
from genre_classification.split import feature_path

CONFIG_SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
check_keys(config, CONFIG_SCHEMA)
validate(config, CONFIG_SCHEMA)
check_values(config)


wildcard_constraints:
    genre="[^/]+",
    track="[^/]+",


def dvc_data_version():
    """``outs`` of the DVC file of the audio directory (a clear error if it is missing)."""
    return dvc_out(Path(config["data"]["dvc"]["repo"]), config["data"]["dvc"]["target"])


def fetch_audio_trigger():
    """What makes the fetch step rerun: the DVC data version, or the plain directory's stat."""
    data = config["data"]
    if data["source"] == "dir":
        return directory_fingerprint(audio_root(data), data["extensions"])
    # Parsing (lint, --dag) must work before the demo data exists; dvc_file() reports it.
    return (
        dvc_data_version()["md5"]
        if audio_root(data).with_suffix(".dvc").exists()
        else "missing"
    )


def dvc_file(wildcards):
    if config["data"]["source"] != "dvc":
        return []
    dvc_data_version()
    return ancient(str(audio_root(config["data"]).with_suffix(".dvc")))


@functools.cache
def _manifest_by_track(path, mtime):
    return {(row["genre"], row["track"]): row for row in read_tsv(path)}


def audio_manifest():
    """Accepted audio files, known once the fetch_audio checkpoint has run."""
    manifest = checkpoints.fetch_audio.get().output.manifest
    return _manifest_by_track(manifest, os.path.getmtime(manifest))


def manifest_row(wildcards):
    return audio_manifest()[(wildcards.genre, wildcards.track)]


def audio_file(wildcards):
    # ancient(): a `dvc pull` rewrites files and their mtimes; the md5 param decides reruns.
    return ancient(manifest_row(wildcards)["path"])


def audio_md5(wildcards):
    return manifest_row(wildcards)["md5"]


def feature_files(wildcards=None):
    return [feature_path(genre, track) for genre, track in sorted(audio_manifest())]


def final_targets(wildcards):
    return [
        "results/data/data_version.json",
        "results/qc/rejected.tsv",
        *feature_files(),
        "results/split/split.tsv",
        *training_targets(),
        *report_targets(),
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
