"""Snakemake entry point of extract_features: one shard (genre_classification.features.shards)."""

from genre_classification.data.members import read_member_list
from genre_classification.features.features import FeatureParams
from genre_classification.features.shards import extract_shard
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
extract_shard(
    read_member_list(snakemake.input.members),
    root=snakemake.params.root,
    features_dir=snakemake.params.features_dir,
    params=FeatureParams.from_config(snakemake.params.features),
    record_path=snakemake.output.record,
    threads=snakemake.threads,
)
