"""Snakemake entry point of track_table_shard (genre_classification.reports.track_table)."""

from genre_classification.reports.track_table import write_shard_table
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
write_shard_table(
    snakemake.input.record,
    snakemake.output.table,
    n_bands=snakemake.params.n_bands,
    n_mfcc=snakemake.params.n_mfcc,
    threads=snakemake.threads,
)
