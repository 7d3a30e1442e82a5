"""Snakemake entry point of data_quality_report (logic: genre_classification.reports)."""

import shutil
from pathlib import Path

from genre_classification.provenance import result_provenance
from genre_classification.reports import data_quality_report, enforce_quality
from genre_classification.runlog import log_to_file
from genre_classification.track_table import read_table

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
params = snakemake.params
summary = data_quality_report(
    read_table(snakemake.input.table),
    snakemake.output.html,
    snakemake.output.json,
    min_class_ratio=params.min_class_ratio,
    ignore_constant=params.ignore_constant,
    provenance=result_provenance(snakemake.input.data_version),
)
# On failure Snakemake removes the job's outputs: keep a copy of the JSON beside the log (logs are
# kept) and name that one in the error.
json_path = snakemake.output.json
if not summary["passed"] and params.fail_on_quality_issue:
    json_path = str(Path(snakemake.log[0]).with_suffix(".json"))
    shutil.copyfile(snakemake.output.json, json_path)
enforce_quality(summary, json_path, fail=params.fail_on_quality_issue)
