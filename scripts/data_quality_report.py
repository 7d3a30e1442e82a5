"""Snakemake entry point of data_quality_report (genre_classification.reports.reports)."""

from pathlib import Path

from genre_classification.reports.monitoring import Monitor
from genre_classification.reports.reports import write_data_quality_report
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
params = snakemake.params
write_data_quality_report(
    snakemake.input.table,
    dict(snakemake.output.items()),
    data_version_path=snakemake.input.data_version,
    # on a failure the outputs are removed; a copy of the JSON stays beside the log
    kept_json_path=Path(snakemake.log[0]).with_suffix(".json"),
    fail_on_quality_issue=params.fail_on_quality_issue,
    min_class_ratio=params.min_class_ratio,
    ignore_constant=params.ignore_constant,
    # the Evidently monitoring workspace (genre_classification.reports.monitoring)
    max_rows=snakemake.params.max_rows,
    monitor=Monitor(params.monitor_workspace, params.monitor_project),
)
