"""The columns of every TSV/CSV contract between workflow stages (docs/CONTRACTS.md), defined
once here and imported wherever such a file is written or read; ``tests/test_contracts.py``
checks that docs/CONTRACTS.md lists the same columns."""

from __future__ import annotations

# results/data/manifest.tsv (and a predict set's): one row per accepted audio file.
MANIFEST_COLUMNS = (
    "genre",
    "track",
    "path",
    "md5",
    "size_bytes",
    "duration_s",
    "features",
    "n_segments",
)
# results/qc/rejected.tsv: quarantined audio and why.
REJECTED_COLUMNS = ("genre", "track", "path", "reason")
# results/features[-<set>]/.shards/<shard>.tsv: one row per file of an extraction shard; the
# HDF5's size and mtime (ns) when the record was written (empty for a rejected file; records
# written before these columns have none): a file changed since reruns its shard.
RECORD_COLUMNS = (*MANIFEST_COLUMNS, "status", "reason", "features_size", "features_mtime_ns")
RECORD_STATUSES = ("kept", "extracted", "rejected")
# results/features[-<set>]/.packs/<shard>.tsv: the rows of each file's segments in the shard's
# packed array (genre_classification.features.packs).
PACK_INDEX_COLUMNS = ("genre", "track", "features", "n_segments", "first_row")
# The record of an embed_features job: per accepted file of the shard and cached backbone
# (``<checkpoint>-<embedding>``), the number of segments embedded (training.embeddings).
EMBEDDING_RECORD_COLUMNS = ("genre", "track", "features", "backbone", "n_segments")
# results/split/split.tsv and the k-fold tables (plus "group" with split.group_by).
SPLIT_COLUMNS = ("genre", "track", "split", "features", "n_segments", "source_md5")
# results/eval/{model}/predictions.csv: then one prob_<genre> column per genre.
EVAL_PREDICTION_COLUMNS = ("track", "true", "predicted")
# The `predict` command's CSV; results/predict/{set}/predictions.csv has "track" before them.
PREDICT_COLUMNS = ("path", "genre", "probability", "top_k", "n_segments", "error")
PREDICT_SET_COLUMNS = ("track", *PREDICT_COLUMNS)
# results/resources/jobs.tsv: one row per job (its benchmark file), used against declared.
JOB_RESOURCE_COLUMNS = (
    "rule",
    "wildcards",
    "threads",
    "wall_s",
    "max_rss_mb",
    "cpu_time_s",
    "mem_mb",
    "runtime_min",
    "benchmark",
)
