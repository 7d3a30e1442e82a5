"""Snakemake entry point of evaluate_model (logic: genre_classification.evaluation)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from genre_classification.config_check import model_entry  # noqa: E402
from genre_classification.evaluation.evaluate import evaluate_and_register  # noqa: E402
from genre_classification.runlog import log_to_file  # noqa: E402

snakemake = globals()["snakemake"]
log_to_file(snakemake.log[0], capture_output=True)
# MLflow settings from the config, not params: changing them must not rerun the job.
training = snakemake.config["training"]
out = snakemake.output
evaluate_and_register(
    snakemake.input.model,
    snakemake.input.split,
    run_info_path=snakemake.input.run,
    registry_name=training["registry"]["name"],
    tracking_uri=training.get("tracking_uri"),
    mlflow_timeout_s=training["mlflow_timeout_s"],
    metrics_path=out.metrics,
    predictions_path=out.predictions,
    confusion_path=out.confusion,
    data_version_path=snakemake.input.data_version,
    batch_size=snakemake.params.batch_size,
    overlap=snakemake.params.overlap,
    name="/".join(f"fold-{v}" if k == "fold" else v for k, v in snakemake.wildcards.items()),
    feature_records=list(snakemake.input.feature_records),
    # the validated entry (not a param: no rerun); a frozen/probe model runs only its head on
    # the cached embeddings
    model_config=model_entry(snakemake.config, snakemake.wildcards.model),
)
