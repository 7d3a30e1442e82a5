"""Snakemake entry point of classification_report (genre_classification.reports.reports)."""

from genre_classification.reports.monitoring import Monitor
from genre_classification.reports.reports import write_classification_report
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0], capture_output=True)
# MLflow settings from the config, not params: changing them must not rerun the job.
training = snakemake.config["training"]
params = snakemake.params
write_classification_report(
    snakemake.input.table,
    snakemake.input.predictions,
    dict(snakemake.output.items()),
    model=snakemake.wildcards.model,
    data_version_path=snakemake.input.data_version,
    split=params.split,
    run_path=snakemake.input.run if params.log_to_mlflow else None,
    artifact_path=params.artifact_path,
    tracking_uri=training.get("tracking_uri"),
    mlflow_timeout_s=training["mlflow_timeout_s"],
    # the Evidently monitoring workspace (genre_classification.reports.monitoring)
    max_rows=snakemake.params.max_rows,
    monitor=Monitor(params.monitor_workspace, params.monitor_project),
)
