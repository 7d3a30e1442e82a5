"""Snakemake entry point of the fetch_audio checkpoint (genre_classification.audio_source)."""

from genre_classification.audio_source import fetch_audio
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
out = snakemake.output
fetch_audio(
    snakemake.params.data,
    snakemake.params.segment_seconds,
    out.manifest,
    out.rejected,
    out.version,
    screen_cache_path=snakemake.params.screen_cache,
)
