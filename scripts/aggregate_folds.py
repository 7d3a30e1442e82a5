"""Snakemake entry point of aggregate_folds (logic: genre_classification.evaluation.cv)."""

from genre_classification.evaluation.cv import aggregate_folds
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0], capture_output=True)
# MLflow settings from the config, not params: changing them must not rerun the job.
training = snakemake.config["training"]
out = snakemake.output
aggregate_folds(
    list(snakemake.input.metrics),
    list(snakemake.input.predictions),
    cv_path=out.cv,
    oof_path=out.predictions,
    confusion_path=out.confusion,
    model=snakemake.wildcards.model,
    parent_run_path=snakemake.input.get("parent"),
    tracking_uri=training.get("tracking_uri"),
    mlflow_timeout_s=training["mlflow_timeout_s"],
)
