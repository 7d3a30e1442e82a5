# Training (one job per entry of training.run, wildcard {model}) and track-level evaluation.
# Logic: genre_classification.train / .evaluate; entry points: scripts/train_model.py,
# scripts/evaluate_model.py.


wildcard_constraints:
    model="[A-Za-z0-9_.-]+",


# The checkpoint directory results/models/{model}/checkpoints/ is deliberately NOT an output:
# Snakemake deletes a job's outputs before it reruns the job (after a kill, timeout, preemption
# or a failed attempt with `retries`), which would throw away the checkpoints the rerun resumes
# from. The training code validates checkpoints against a fingerprint of the model config and
# split manifest, and removes them itself once the outputs are written.
rule train_model:
    input:
        split="results/split/split.tsv",
        data_version="results/data/data_version.json",
    output:
        model="results/models/{model}/model.keras",
        features="results/models/{model}/features.json",
        history=report(
            "results/models/{model}/history.csv",
            caption="../report/history.rst",
            category="Training",
            subcategory="{model}",
            labels={"model": "{model}", "file": "history"},
        ),
        run="results/mlflow/runs/{model}.json",
    log:
        "logs/train_model/{model}.log",
    retries: config["training"].get("retries", 0)
    container:
        config["container"]["image"]
    threads: config["training"].get("threads", 2)
    resources:
        mem_mb=lambda wildcards, attempt: training_resource("mem_mb")(wildcards)
        * attempt,
        runtime=lambda wildcards, attempt: training_resource("runtime")(wildcards)
        * attempt,
        slurm_partition=lambda wildcards: training_resource("partition")(wildcards)
        or "",
        gres=training_gres,
    params:
        model_config=training_model_config,
        checkpoint_dir=lambda wildcards: f"results/models/{wildcards.model}/checkpoints",
        experiment=config["training"]["experiment"],
        tracking_uri=config["training"].get("tracking_uri"),
    script:
        "../../scripts/train_model.py"


rule evaluate_model:
    input:
        model="results/models/{model}/model.keras",
        run="results/mlflow/runs/{model}.json",
        split="results/split/split.tsv",
        data_version="results/data/data_version.json",
    output:
        metrics=report(
            "results/eval/{model}/metrics.json",
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "file": "metrics"},
        ),
        predictions=report(
            "results/eval/{model}/predictions.csv",
            caption="../report/predictions.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "file": "predictions"},
        ),
        confusion=report(
            "results/eval/{model}/confusion_matrix.png",
            caption="../report/confusion_matrix.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "file": "confusion matrix"},
        ),
    log:
        "logs/evaluate_model/{model}.log",
    container:
        config["container"]["image"]
    threads: config["training"].get("threads", 2)
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=lambda wildcards, attempt: 20 * attempt,
    params:
        batch_size=config["training"]["evaluate"]["batch_size"],
    script:
        "../../scripts/evaluate_model.py"
