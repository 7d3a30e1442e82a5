"""Snakemake entry point of collect_features (features.shards.write_collection)."""

from genre_classification.data.members import read_listing_extras
from genre_classification.features.shards import write_collection
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
skipped, labels = read_listing_extras(snakemake.input.get("listing"))
write_collection(
    snakemake.input.records,
    snakemake.params.data_version,
    snakemake.output.manifest,
    snakemake.output.rejected,
    snakemake.output.version,
    skipped=skipped,
    labels=labels,
)
