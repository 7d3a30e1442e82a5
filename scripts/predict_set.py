"""Snakemake entry point of predict_set (logic: genre_classification.predict.predict_set)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from genre_classification.predict.predict_set import write_predictions  # noqa: E402
from genre_classification.runlog import log_to_file  # noqa: E402

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0], capture_output=True)
write_predictions(
    snakemake.input.model,
    snakemake.input.manifest,
    snakemake.input.rejected,
    snakemake.output.predictions,
    top_k=snakemake.params.top_k,
    overlap=snakemake.params.overlap,
)
