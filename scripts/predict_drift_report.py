"""Snakemake entry point of predict_drift_report (genre_classification.predict.predict_set)."""

from genre_classification.predict.predict_set import write_drift_report
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
params = snakemake.params
write_drift_report(
    snakemake.input.manifest,
    snakemake.input.predictions,
    snakemake.input.training_table,
    dict(snakemake.output.items()),
    table_options={"n_bands": params.n_bands, "n_mfcc": params.n_mfcc},
    data_version_path=snakemake.input.data_version,
    set_name=snakemake.wildcards.set,
    model=params.model,
    drift_share=params.drift_share,
    method=params.method,
    threshold=params.threshold,
)
