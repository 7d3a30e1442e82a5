"""Snakemake entry point of reference_track_table (genre_classification.reports.reference)."""

from genre_classification.reports.reference import build_reference_table
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
params = snakemake.params
build_reference_table(
    params.reference,
    params.data,
    params.features,
    table_path=snakemake.output.table,
    info_path=snakemake.output.info,
    work_dir=params.work_dir,
    n_bands=params.n_bands,
    n_mfcc=params.n_mfcc,
    threads=snakemake.threads,
)
