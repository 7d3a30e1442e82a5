"""Snakemake entry point of pack_features (logic: genre_classification.features.packs)."""

from genre_classification.features.packs import pack_shard
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
pack_shard(snakemake.input.record, snakemake.output.pack)
