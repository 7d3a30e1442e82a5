"""Snakemake entry point of classification_report (logic: genre_classification.reports)."""

import logging

from genre_classification.provenance import result_provenance
from genre_classification.reports import classification_report
from genre_classification.runlog import log_to_file
from genre_classification.track_table import attach_predictions, read_table
from genre_classification.tracking import attach_files

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0], capture_output=True)
# MLflow settings from the config, not params: changing them must not rerun the job.
training = snakemake.config["training"]
log = logging.getLogger("classification_report")
model = snakemake.wildcards.model
table = read_table(snakemake.input.table)
tested = attach_predictions(table, snakemake.input.predictions)
splits = sorted(set(tested["split"]))
if snakemake.params.split and splits != [snakemake.params.split]:
    log.warning(
        "predicted tracks come from splits %s, expected only %s", splits, snakemake.params.split
    )
summary = classification_report(
    tested,
    snakemake.output.html,
    snakemake.output.json,
    model=model,
    provenance=result_provenance(snakemake.input.data_version),
)
log.info("%s: accuracy %.4f on %d tracks", model, summary["accuracy"], summary["n_tracks"])
if snakemake.params.log_to_mlflow:
    attach_files(
        snakemake.input.run,
        [snakemake.output.html, snakemake.output.json],
        artifact_path=snakemake.params.artifact_path,
        tracking_uri=training.get("tracking_uri"),
        mlflow_timeout_s=training["mlflow_timeout_s"],
    )
