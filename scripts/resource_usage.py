"""Snakemake entry point of resource_usage (logic: genre_classification.resources)."""

from genre_classification.resources import write_resource_usage
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
write_resource_usage(snakemake.params.benchmark_dir, snakemake.output.table, snakemake.output.plot)
