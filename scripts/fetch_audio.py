"""Snakemake entry point of fetch_audio (genre_classification.data.audio_source.fetch_audio)."""

from genre_classification.data.audio_source import AudioFile, fetch_audio
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
members = [AudioFile(*member) for member in snakemake.params.members]
fetch_audio(snakemake.params.data, members, snakemake.output.fetched)
