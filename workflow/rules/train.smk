# Training (one job per entry of training.run and fold: wildcards {model}, {fold} with k folds),
# track-level evaluation per fold, the per-model cross-validation aggregate and the comparison
# of all models. Paths of a run: RUN in rules/common.smk. Logic: genre_classification.training
# (train) and .evaluation (evaluate, cv); entry points: scripts/train_model.py,
# evaluate_model.py, mlflow_parent_run.py, aggregate_folds.py, cv_summary.py.


wildcard_constraints:
    model="[A-Za-z0-9_.-]+",
    fold="[0-9]+",


rule mlflow_parent_run:
    # The parent run of a model's fold runs, created before them so that they are nested under
    # it from their start; aggregate_folds logs the cross-validation metrics to it.
    input:
        code=code_of("mlflow_parent_run"),
    output:
        run=PARENT_RUN,
    log:
        "logs/mlflow_parent_run/{model}.log",
    benchmark:
        benchmark_path("mlflow_parent_run", "{model}")
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
        tracking_uri=config["training"]["tracking_uri"],
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
        unpack(model_packs),
        split=run_split,
        data_version=DATA_VERSION,
        feature_records=model_feature_records,
        embeddings=model_embedding_records("train"),
        code=code_of("train_model"),
    output:
        model=run_path(MODEL, RUN),
        features=run_path(MODEL_FEATURES, RUN),
        history=report(
            run_path(HISTORY, RUN),
            caption="../report/history.rst",
            category="Training",
            subcategory="{model}",
            labels={"model": RUN, "file": "history"},
        ),
        run=run_path(RUN_RECORD, RUN),
    log:
        f"logs/train_model/{RUN}.log",
    benchmark:
        benchmark_path("train_model", RUN)
    retries: config["training"]["retries"]
    container:
        config["container"]["image"]
    threads: config["training"]["threads"]
    resources:
        mem_mb=training_mem_mb,
        runtime=lambda wildcards, attempt: training_resource("runtime")(wildcards)
        * attempt,
        slurm_partition=lambda wildcards: training_resource("partition")(wildcards)
        or "",
        gres=training_gres,
    params:
        # the entry as written (a rerun trigger); the job trains on the validated entry
        model_config=training_model_config,
        checkpoint_dir=lambda wildcards: run_path(CHECKPOINT_DIR, run_of(wildcards)),
        experiment=config["training"]["experiment"],
        tracking_uri=config["training"]["tracking_uri"],
    script:
        "../../scripts/train_model.py"


rule evaluate_model:
    input:
        model=run_path(MODEL, RUN),
        run=run_path(RUN_RECORD, RUN),
        split=run_split,
        data_version=DATA_VERSION,
        feature_records=model_feature_records,
        embeddings=model_embedding_records("evaluate"),
        code=code_of("evaluate_model"),
    output:
        metrics=report(
            run_path(METRICS, RUN),
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": RUN, "file": "metrics"},
        ),
        predictions=report(
            run_path(PREDICTIONS, RUN),
            caption="../report/predictions.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": RUN, "file": "predictions"},
        ),
        confusion=report(
            run_path(CONFUSION, RUN),
            caption="../report/confusion_matrix.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": RUN, "file": "confusion matrix"},
        ),
    log:
        f"logs/evaluate_model/{RUN}.log",
    benchmark:
        benchmark_path("evaluate_model", RUN)
    container:
        config["container"]["image"]
    threads: config["training"]["threads"]
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
        metrics=eval_per_fold(METRICS),
        predictions=eval_per_fold(PREDICTIONS),
        code=code_of("aggregate_folds"),
    output:
        cv=report(
            CV_METRICS,
            caption="../report/cv_metrics.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "file": "cv metrics"},
        ),
        predictions=OOF_PREDICTIONS,
        confusion=report(
            OOF_CONFUSION,
            caption="../report/cv_metrics.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "file": "out-of-fold confusion matrix"},
        ),
    log:
        "logs/aggregate_folds/{model}.log",
    benchmark:
        benchmark_path("aggregate_folds", "{model}")
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
        cv=expand(CV_METRICS, model=training_models()),
        code=code_of("cv_summary"),
    output:
        table=SUMMARY_TABLE,
        plot=report(
            SUMMARY_PLOT,
            caption="../report/summary.rst",
            category="Evaluation",
            subcategory="Summary",
            labels={"model": "all", "file": "summary"},
        ),
    log:
        "logs/cv_summary.log",
    benchmark:
        benchmark_path("cv_summary", "all")
    localrule: True
    container:
        config["container"]["image"]
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        models=training_models(),
        # as written, like the training jobs' params (training_model_config)
        model_configs={model: written_model(model) for model in training_models()},
    script:
        "../../scripts/cv_summary.py"
