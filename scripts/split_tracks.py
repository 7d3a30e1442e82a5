"""Snakemake entry point of split_tracks (logic: genre_classification.data.split)."""

from genre_classification.data.split import write_split
from genre_classification.runlog import log_to_file

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0])
params = snakemake.params
write_split(
    snakemake.input.manifest,
    snakemake.output.split,
    fractions=params.fractions,
    seed=params.seed,
    fold_paths=snakemake.output.get("folds", []),
    info_path=snakemake.output.get("info"),
    rejected_path=snakemake.input.get("rejected"),
    method=params.get("method", "holdout"),
    folds=params.get("folds", 1),
    split_file=snakemake.input.get("table"),
    group_by=params.get("group_by"),
    groups_file=snakemake.input.get("groups"),
)
