"""Snakemake entry point of mlflow_parent_run (logic: genre_classification.evaluation.cv)."""

from genre_classification.config_check import model_entry
from genre_classification.evaluation.cv import start_parent_run
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0], capture_output=True)
params = snakemake.params
start_parent_run(
    snakemake.output.run,
    snakemake.wildcards.model,
    # the validated entry (defaults filled in); params.model_config is the entry as written
    model_entry(snakemake.config, snakemake.wildcards.model),
    params.n_folds,
    experiment=params.experiment,
    tracking_uri=params.tracking_uri,
    timeout_s=snakemake.config["training"]["mlflow_timeout_s"],
)
