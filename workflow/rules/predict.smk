# Batch predictions on new, unlabelled audio: one set per entry of predict.sets. Its files are
# extracted by the training data's sharded machinery with the model's recorded feature
# parameters, predicted like the `predict` command, and compared with the train tracks.
# Logic: genre_classification.predict.predict_set; input functions: "predict sets" in common.smk.


wildcard_constraints:
    set="[A-Za-z0-9_.-]+",


use rule fetch_audio as predict_fetch_audio with:
    input:
        members=predict_shard_members,
    output:
        fetched=PREDICT_FETCHED,
    log:
        "logs/predict/{set}/fetch_audio/{shard}.log",
    benchmark:
        benchmark_path("predict_fetch_audio", "{set}/{shard}")
    params:
        data=lambda wildcards: predict_source(wildcards.set),


rule predict_extract_features:
    # One job per shard of the set; <features>/unlabelled/<track>.h5 per file, kept when the
    # source and the model's feature parameters are unchanged.
    input:
        unpack(predict_model_files),
        members=predict_shard_members,
        fetched=predict_fetched,
        code=code_of("extract_predict_set"),
    output:
        record=PREDICT_RECORD,
    log:
        "logs/predict/{set}/extract_features/{shard}.log",
    benchmark:
        benchmark_path("predict_extract_features", "{set}/{shard}")
    container:
        config["container"]["image"]
    threads: config["extraction"]["threads"]
    resources:
        mem_mb=lambda wildcards, threads, attempt: (
            500 + config["extraction"]["mem_mb_per_thread"] * threads
        )
        * attempt,
        runtime=predict_shard_runtime,
    params:
        root=lambda wildcards: str(audio_root(predict_source(wildcards.set))),
        # the record lives in <features_dir>/.shards/
        features_dir=lambda wildcards, output: Path(output.record).parent.parent,
        repairs=lambda wildcards: shard_repairs(
            PREDICT_FEATURES.format(set=wildcards.set), wildcards.shard
        ),
    script:
        "../../scripts/extract_predict_set.py"


use rule collect_features as predict_collect_features with:
    input:
        records=predict_shard_records,
        listing=predict_listing_extras,
    output:
        manifest=PREDICT_MANIFEST,
        rejected=PREDICT_REJECTED,
        version=PREDICT_VERSION,
    log:
        "logs/predict/{set}/collect_features.log",
    benchmark:
        benchmark_path("predict_collect_features", "{set}")
    params:
        data_version=lambda wildcards: data_version(predict_source(wildcards.set)),


rule predict_set:
    input:
        unpack(predict_model_files),
        manifest=PREDICT_MANIFEST,
        rejected=PREDICT_REJECTED,
        code=code_of("predict_set"),
    output:
        predictions=report(
            PREDICT_PREDICTIONS,
            caption="../report/predict_set.rst",
            category="Predictions",
            subcategory="{set}",
            labels={"set": "{set}", "file": "predictions"},
        ),
    log:
        "logs/predict/{set}/predict.log",
    benchmark:
        benchmark_path("predict_set", "{set}")
    container:
        config["container"]["image"]
    threads: config["training"]["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        model=predict_model(),
        top_k=config["predict"]["top_k"],
        overlap=config["training"]["evaluate"]["overlap"],
    script:
        "../../scripts/predict_set.py"


rule predict_drift_report:
    input:
        training_table=TRACK_TABLE,
        manifest=PREDICT_MANIFEST,
        predictions=PREDICT_PREDICTIONS,
        data_version=PREDICT_VERSION,
        code=code_of("predict_drift_report"),
    output:
        table=PREDICT_TRACKS,
        html=report(
            report_path(PREDICT_DRIFT_REPORT, "html"),
            caption="../report/predict_drift.rst",
            category="Predictions",
            subcategory="{set}",
            labels={"set": "{set}", "file": "drift report"},
        ),
        json=report_path(PREDICT_DRIFT_REPORT, "json"),
    log:
        "logs/predict/{set}/drift_report.log",
    benchmark:
        benchmark_path("predict_drift_report", "{set}")
    container:
        config["container"]["image"]
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        model=predict_model(),
        n_bands=config["reports"]["track_table"]["n_bands"],
        n_mfcc=config["reports"]["track_table"]["n_mfcc"],
        drift_share=config["reports"]["drift"]["drift_share"],
        method=config["reports"]["drift"]["method"],
        threshold=config["reports"]["drift"]["threshold"],
    script:
        "../../scripts/predict_drift_report.py"
