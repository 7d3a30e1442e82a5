"""Snakemake entry point of track_table (logic: genre_classification.track_table)."""

import logging
import time

from genre_classification.dataset import read_split
from genre_classification.runlog import log_to_file
from genre_classification.track_table import build_track_table, write_table

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
start = time.perf_counter()
table = build_track_table(
    read_split(snakemake.input.split).to_dict("records"),
    n_bands=snakemake.params.n_bands,
    n_mfcc=snakemake.params.n_mfcc,
)
write_table(table, snakemake.output.table)
logging.getLogger("track_table").info(
    "%d tracks x %d columns -> %s in %.2f s",
    len(table),
    table.shape[1],
    snakemake.output.table,
    time.perf_counter() - start,
)
