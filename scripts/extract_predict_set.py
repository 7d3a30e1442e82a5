"""Snakemake entry point of predict_extract_features: one shard of a predict set, with the
feature parameters recorded with the model (genre_classification.predict.predict_set)."""

from genre_classification.data.members import read_member_list
from genre_classification.predict.predict_set import extract_set_shard
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
extract_set_shard(
    read_member_list(snakemake.input.members),
    snakemake.input.model_features,
    root=snakemake.params.root,
    features_dir=snakemake.params.features_dir,
    record_path=snakemake.output.record,
    threads=snakemake.threads,
)
