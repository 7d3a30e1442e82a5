"""Snakemake entry point of split_tracks (logic: genre_classification.split)."""

from genre_classification.runlog import log_to_file
from genre_classification.split import write_split

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
write_split(
    snakemake.input.manifest,
    snakemake.output.split,
    fractions=snakemake.params.fractions,
    seed=snakemake.params.seed,
)
