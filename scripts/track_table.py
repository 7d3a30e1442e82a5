"""Snakemake entry point of track_table (genre_classification.track_table)."""

from genre_classification.runlog import log_to_file
from genre_classification.track_table import write_track_table

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
write_track_table(snakemake.input.split, snakemake.input.shards, snakemake.output.table)
