"""Snakemake entry point of predict_drift_report (genre_classification.predict_set)."""

import logging

from genre_classification.predict_set import drift_report, set_track_table
from genre_classification.provenance import result_provenance
from genre_classification.runlog import log_to_file
from genre_classification.track_table import read_table, write_table

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
params = snakemake.params
table = set_track_table(
    snakemake.input.manifest, snakemake.input.predictions, params.n_bands, params.n_mfcc
)
write_table(table, snakemake.output.table)
summary = drift_report(
    table,
    read_table(snakemake.input.training_table),
    snakemake.output.html,
    snakemake.output.json,
    set_name=snakemake.wildcards.set,
    model=params.model,
    drift_share=params.drift_share,
    method=params.method,
    threshold=params.threshold,
    provenance=result_provenance(snakemake.input.data_version),
)
logging.getLogger("predict_drift_report").info(
    "%s: %d/%d columns drifted, dataset drift: %s; prediction drift: %s (%s)",
    snakemake.wildcards.set,
    summary["n_drifted"],
    summary["n_features"],
    summary["dataset_drift"],
    summary["prediction_drift"]["drifted"],
    summary["prediction_drift"]["predicted_shares"],
)
