# Training (one job per entry of training.run and fold: wildcards {model}, {fold} with k folds),
# track-level evaluation per fold, the per-model cross-validation aggregate and the comparison
# of all models. Paths of a run: RUN in rules/common.smk. Logic: genre_classification.train /
# .evaluate / .cv; entry points: scripts/train_model.py, evaluate_model.py, mlflow_parent_run.py,
# aggregate_folds.py, cv_summary.py.


wildcard_constraints:
    model="[A-Za-z0-9_.-]+",
    fold="[0-9]+",


rule mlflow_parent_run:
    # The parent run of a model's fold runs, created before them so that they are nested under
    # it from their start; aggregate_folds logs the cross-validation metrics to it.
    output:
        run=PARENT_RUN,
    log:
        "logs/mlflow_parent_run/{model}.log",
    localrule: True
    container:
        config["container"]["image"]
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        model_config=training_model_config,
        n_folds=N_FOLDS,
        experiment=config["training"]["experiment"],
        tracking_uri=config["training"].get("tracking_uri"),
    script:
        "../../scripts/mlflow_parent_run.py"


# The checkpoint directory results/models/{RUN}/checkpoints/ is deliberately NOT an output:
# Snakemake deletes a job's outputs before it reruns the job (after a kill, timeout, preemption
# or a failed attempt with `retries`), which would throw away the checkpoints the rerun resumes
# from. The training code validates checkpoints against a fingerprint of the model config and
# split manifest, and removes them itself once the outputs are written.
rule train_model:
    input:
        unpack(parent_run),
        split=run_split,
        data_version="results/data/data_version.json",
        feature_records=model_feature_records,
    output:
        model=f"results/models/{RUN}/model.keras",
        features=f"results/models/{RUN}/features.json",
        history=report(
            f"results/models/{RUN}/history.csv",
            caption="../report/history.rst",
            category="Training",
            subcategory="{model}",
            labels={"model": RUN, "file": "history"},
        ),
        run=f"results/mlflow/runs/{RUN}.json",
    log:
        f"logs/train_model/{RUN}.log",
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
        checkpoint_dir=lambda wildcards: f"results/models/{run_of(wildcards)}/checkpoints",
        experiment=config["training"]["experiment"],
        tracking_uri=config["training"].get("tracking_uri"),
    script:
        "../../scripts/train_model.py"


rule evaluate_model:
    input:
        model=f"results/models/{RUN}/model.keras",
        run=f"results/mlflow/runs/{RUN}.json",
        split=run_split,
        data_version="results/data/data_version.json",
        feature_records=model_feature_records,
    output:
        metrics=report(
            f"results/eval/{RUN}/metrics.json",
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": RUN, "file": "metrics"},
        ),
        predictions=report(
            f"results/eval/{RUN}/predictions.csv",
            caption="../report/predictions.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": RUN, "file": "predictions"},
        ),
        confusion=report(
            f"results/eval/{RUN}/confusion_matrix.png",
            caption="../report/confusion_matrix.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": RUN, "file": "confusion matrix"},
        ),
    log:
        f"logs/evaluate_model/{RUN}.log",
    container:
        config["container"]["image"]
    threads: config["training"].get("threads", 2)
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=lambda wildcards, attempt: 20 * attempt,
    params:
        batch_size=config["training"]["evaluate"]["batch_size"],
        overlap=config["training"]["evaluate"]["overlap"],
    script:
        "../../scripts/evaluate_model.py"


rule aggregate_folds:
    input:
        unpack(parent_run),
        metrics=eval_per_fold("metrics.json"),
        predictions=eval_per_fold("predictions.csv"),
    output:
        cv=report(
            "results/eval/{model}/cv_metrics.json",
            caption="../report/cv_metrics.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "file": "cv metrics"},
        ),
        predictions="results/eval/{model}/oof_predictions.csv",
        confusion=report(
            "results/eval/{model}/oof_confusion_matrix.png",
            caption="../report/cv_metrics.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "file": "out-of-fold confusion matrix"},
        ),
    log:
        "logs/aggregate_folds/{model}.log",
    localrule: True
    container:
        config["container"]["image"]
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../../scripts/aggregate_folds.py"


rule cv_summary:
    input:
        cv=expand("results/eval/{model}/cv_metrics.json", model=training_models()),
    output:
        table="results/eval/summary.tsv",
        plot=report(
            "results/eval/summary.png",
            caption="../report/summary.rst",
            category="Evaluation",
            subcategory="Summary",
            labels={"model": "all", "file": "summary"},
        ),
    log:
        "logs/cv_summary.log",
    localrule: True
    container:
        config["container"]["image"]
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        models=training_models(),
        model_configs={
            model: config["training"]["models"][model] for model in training_models()
        },
    script:
        "../../scripts/cv_summary.py"
