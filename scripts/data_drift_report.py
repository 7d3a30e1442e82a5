"""Snakemake entry point of data_drift_report (logic: genre_classification.reports).

Without a reference data version: train tracks (reference) vs test tracks (current). With one:
the reference version's tracks vs all current tracks.
"""

import json
import logging

from genre_classification.provenance import result_provenance
from genre_classification.reports import data_drift_report
from genre_classification.runlog import log_to_file
from genre_classification.track_table import read_table

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
log = logging.getLogger("data_drift_report")
params = snakemake.params
current = read_table(snakemake.input.table)
if snakemake.input.get("reference"):
    reference = read_table(snakemake.input.reference)
    reference_info = {"name": "reference data version"}
    reference_info.update(json.loads(open(snakemake.input.reference_info).read()))
    reference_info.pop("rejected", None)
    current_info = {"name": "current data (all splits)"}
else:
    reference = current[current["split"] == params.reference_split]
    current = current[current["split"] == params.current_split]
    reference_info = {"name": f"{params.reference_split} tracks"}
    current_info = {"name": f"{params.current_split} tracks"}
summary = data_drift_report(
    reference,
    current,
    snakemake.output.html,
    snakemake.output.json,
    drift_share=params.drift_share,
    method=params.method,
    threshold=params.threshold,
    reference_info=reference_info,
    current_info=current_info,
    provenance=result_provenance(snakemake.input.data_version),
)
log.info(
    "%s vs %s: %d/%d columns drifted (share %.3f), dataset drift: %s; drifted: %s",
    reference_info["name"],
    current_info["name"],
    summary["n_drifted"],
    summary["n_features"],
    summary["drifted_share"],
    summary["dataset_drift"],
    summary["drifted_features"],
)
