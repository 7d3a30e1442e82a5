"""Snakemake entry point of embed_features (logic: genre_classification.training.embeddings)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from genre_classification.runlog import log_to_file  # noqa: E402
from genre_classification.training.embeddings import embed_shard  # noqa: E402

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0], capture_output=True)
embed_shard(
    snakemake.input.record,
    snakemake.params.backbones,
    snakemake.output.record,
    threads=snakemake.threads,
)
