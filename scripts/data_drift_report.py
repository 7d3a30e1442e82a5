"""Snakemake entry point of data_drift_report (genre_classification.reports.reports).

Without a reference data version: train tracks (reference) vs test tracks (current). With one:
the reference version's tracks vs all current tracks.
"""

from genre_classification.reports.monitoring import Monitor
from genre_classification.reports.reports import write_data_drift_report
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
params = snakemake.params
write_data_drift_report(
    snakemake.input.table,
    dict(snakemake.output.items()),
    data_version_path=snakemake.input.data_version,
    reference_path=snakemake.input.get("reference"),
    reference_info_path=snakemake.input.get("reference_info"),
    reference_split=params.reference_split,
    current_split=params.current_split,
    drift_share=params.drift_share,
    method=params.method,
    threshold=params.threshold,
    # the Evidently monitoring workspace (genre_classification.reports.monitoring)
    max_rows=snakemake.params.max_rows,
    monitor=Monitor(params.monitor_workspace, params.monitor_project),
)
