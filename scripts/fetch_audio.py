"""Snakemake entry point of fetch_audio (genre_classification.data.audio_source.fetch_audio)."""

from genre_classification.data.audio_source import fetch_audio
from genre_classification.data.members import read_member_list
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
members = read_member_list(snakemake.input.members)
fetch_audio(snakemake.params.data, members, snakemake.output.fetched)
