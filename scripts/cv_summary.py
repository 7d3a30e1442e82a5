"""Snakemake entry point of cv_summary (logic: genre_classification.evaluation.cv)."""

from genre_classification.evaluation.cv import write_summary
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
params = snakemake.params
write_summary(
    dict(zip(params.models, snakemake.input.cv, strict=True)),
    params.model_configs,
    snakemake.output.table,
    snakemake.output.plot,
)
