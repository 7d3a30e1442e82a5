"""Snakemake entry point of track_table (genre_classification.reports.track_table)."""

from genre_classification.reports.track_table import write_track_table
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
write_track_table(snakemake.input.split, snakemake.input.shards, snakemake.output.table)
