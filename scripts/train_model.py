"""Snakemake entry point of train_model (logic: genre_classification.training.train)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from genre_classification.config_check import model_entry  # noqa: E402
from genre_classification.runlog import log_to_file  # noqa: E402
from genre_classification.tracking import provenance_tags  # noqa: E402
from genre_classification.training.train import MlflowSettings, TrainingPaths, train  # noqa: E402

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0], capture_output=True)
wildcards = dict(snakemake.wildcards.items())
# The validated entry (schema defaults filled in); params.model_config is the entry as written
# (rules/common.smk). Timeouts from the config, not params: changing them must not rerun the job.
training = snakemake.config["training"]
train(
    model_entry(snakemake.config, wildcards["model"]),
    TrainingPaths(
        split=snakemake.input.split,
        model=snakemake.output.model,
        history=snakemake.output.history,
        run_info=snakemake.output.run,
        checkpoint_dir=snakemake.params.checkpoint_dir,
        features=snakemake.output.features,
        parent_run=snakemake.input.get("parent"),
        feature_records=list(snakemake.input.feature_records),
        packs=tuple(snakemake.input.packs),
    ),
    MlflowSettings(
        snakemake.params.experiment,
        snakemake.params.tracking_uri,
        training["mlflow_timeout_s"],
        training["system_metrics"],
    ),
    model_name=wildcards["model"],
    lock_timeout_s=training["lock_timeout_s"],
    threads=snakemake.threads,
    fold=int(wildcards["fold"]) if "fold" in wildcards else None,
    tags=provenance_tags(snakemake.input.data_version, snakemake.rule, wildcards),
    mem_mb=snakemake.resources.mem_mb,
)
