"""Snakemake entry point of predict_extract_features: one shard of a predict set, with the
feature parameters recorded with the model (genre_classification.shards.extract_shard)."""

from genre_classification import model_info
from genre_classification.audio_source import AudioFile
from genre_classification.runlog import log_to_file
from genre_classification.shards import extract_shard

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
params, _ = model_info.read(snakemake.input.model_features)
extract_shard(
    [AudioFile(*member) for member in snakemake.params.members],
    root=snakemake.params.root,
    features_dir=snakemake.params.features_dir,
    params=params,
    record_path=snakemake.output.record,
    threads=snakemake.threads,
)
