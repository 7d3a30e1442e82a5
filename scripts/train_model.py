"""Snakemake entry point of train_model (logic: genre_classification.train)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from genre_classification.runlog import log_to_file  # noqa: E402
from genre_classification.train import train  # noqa: E402

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0], capture_output=True)
params = snakemake.params
# Operational knobs from the config, not params: changing them must not rerun the job.
training = snakemake.config["training"]
train(
    params.model_config,
    split_path=snakemake.input.split,
    model_path=snakemake.output.model,
    features_path=snakemake.output.features,
    history_path=snakemake.output.history,
    run_info_path=snakemake.output.run,
    checkpoint_dir=params.checkpoint_dir,
    experiment=params.experiment,
    tracking_uri=params.tracking_uri,
    data_version_path=snakemake.input.data_version,
    model_name=snakemake.wildcards.model,
    snakemake_rule=snakemake.rule,
    wildcards=dict(snakemake.wildcards.items()),
    threads=snakemake.threads,
    mlflow_timeout_s=training["mlflow_timeout_s"],
    lock_timeout_s=training["lock_timeout_s"],
    fold=int(snakemake.wildcards.fold) if "fold" in snakemake.wildcards.keys() else None,
    parent_run_path=snakemake.input.get("parent"),
    feature_records=list(snakemake.input.feature_records),
)
