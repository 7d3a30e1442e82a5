# Evidently reports on the per-track feature table (issue 4): classification per model, data
# drift (train vs test, or a reference data version vs the current data) and data quality tests.
# Logic: genre_classification.reports (track_table, reports, reference); entry points: scripts/*.py.
# Targets: report_targets() in rules/common.smk.


rule track_table_shard:
    # One job per extraction shard (a process pool each, like extraction): the summary
    # features of its tracks.
    input:
        record=lambda wildcards: SHARD_RECORD.format(
            feature_dir=Path(FEATURES_DIR).name, shard=wildcards.shard
        ),
        code=code_of("track_table_shard"),
    output:
        table=TRACK_TABLE_SHARD,
    log:
        "logs/track_table_shard/{shard}.log",
    benchmark:
        benchmark_path("track_table_shard", "{shard}")
    container:
        config["container"]["image"]
    threads: config["extraction"]["threads"]
    resources:
        mem_mb=lambda wildcards, threads, attempt: (600 + 350 * threads) * attempt,
        runtime=shard_runtime,
    params:
        n_bands=config["reports"]["track_table"]["n_bands"],
        n_mfcc=config["reports"]["track_table"]["n_mfcc"],
    script:
        "../../scripts/track_table_shard.py"


rule track_table:
    # The shard tables joined with each track's split (memory: the table, ~0.5 KB a track).
    input:
        split=SPLIT,
        shards=lambda wildcards: expand(TRACK_TABLE_SHARD, shard=audio_shards()),
        code=code_of("track_table"),
    output:
        table=TRACK_TABLE,
    log:
        "logs/track_table/tracks.log",
    benchmark:
        benchmark_path("track_table", "all")
    localrule: True
    container:
        config["container"]["image"]
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../../scripts/track_table.py"


rule reference_track_table:
    input:
        code=code_of("reference_track_table"),
    output:
        table=REFERENCE_TABLE,
        info=REFERENCE_INFO,
    log:
        "logs/reference_track_table/reference.log",
    benchmark:
        benchmark_path("reference_track_table", "all")
    container:
        config["container"]["image"]
    threads: config["extraction"]["threads"]
    resources:
        mem_mb=3000,
        runtime=120,
    params:
        reference=config["reports"]["reference"],
        data=config["data"],
        features=config["features"],
        work_dir=lambda wildcards, output: os.path.dirname(output.table),
        n_bands=config["reports"]["track_table"]["n_bands"],
        n_mfcc=config["reports"]["track_table"]["n_mfcc"],
    script:
        "../../scripts/reference_track_table.py"


rule classification_report:
    input:
        table=TRACK_TABLE,
        data_version=DATA_VERSION,
        predictions=model_predictions,
        run=model_run_record,
        code=code_of("classification_report"),
    output:
        html=report(
            report_path(CLASSIFICATION_REPORT, "html"),
            caption="../report/classification_report.rst",
            category="Reports",
            subcategory="{model}",
            labels={"model": "{model}", "report": "classification"},
        ),
        json=report_path(CLASSIFICATION_REPORT, "json"),
    log:
        "logs/classification_report/{model}.log",
    benchmark:
        benchmark_path("classification_report", "{model}")
    container:
        config["container"]["image"]
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        **MONITOR_PARAMS,
        # Pooled out-of-fold predictions cover every split of split.tsv (fold 0's assignment).
        max_rows=config["reports"]["max_rows"],
        split=None if KFOLD else config["reports"]["drift"]["current_split"],
        log_to_mlflow=config["reports"]["log_to_mlflow"],
        artifact_path="evidently",
    script:
        "../../scripts/classification_report.py"


rule data_drift_report:
    input:
        unpack(drift_reference_inputs),
        table=TRACK_TABLE,
        data_version=DATA_VERSION,
        code=code_of("data_drift_report"),
    output:
        html=report(
            report_path(DATA_DRIFT_REPORT, "html"),
            caption="../report/data_drift.rst",
            category="Reports",
            subcategory="Data",
            labels={"model": "-", "report": "data drift"},
        ),
        json=report_path(DATA_DRIFT_REPORT, "json"),
    log:
        "logs/data_drift_report/data_drift.log",
    benchmark:
        benchmark_path("data_drift_report", "all")
    container:
        config["container"]["image"]
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        **MONITOR_PARAMS,
        max_rows=config["reports"]["max_rows"],
        reference=config["reports"]["reference"],
        reference_split=config["reports"]["drift"]["reference_split"],
        current_split=config["reports"]["drift"]["current_split"],
        drift_share=config["reports"]["drift"]["drift_share"],
        method=config["reports"]["drift"]["method"],
        threshold=config["reports"]["drift"]["threshold"],
    script:
        "../../scripts/data_drift_report.py"


rule data_quality_report:
    input:
        table=TRACK_TABLE,
        data_version=DATA_VERSION,
        code=code_of("data_quality_report"),
    output:
        html=report(
            report_path(DATA_QUALITY_REPORT, "html"),
            caption="../report/data_quality.rst",
            category="Reports",
            subcategory="Data",
            labels={"model": "-", "report": "data quality"},
        ),
        json=report_path(DATA_QUALITY_REPORT, "json"),
    log:
        "logs/data_quality_report/data_quality.log",
    benchmark:
        benchmark_path("data_quality_report", "all")
    container:
        config["container"]["image"]
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        **MONITOR_PARAMS,
        max_rows=config["reports"]["max_rows"],
        fail_on_quality_issue=config["reports"]["fail_on_quality_issue"],
        min_class_ratio=config["reports"]["quality"]["min_class_ratio"],
        ignore_constant=config["reports"]["quality"]["ignore_constant"],
    script:
        "../../scripts/data_quality_report.py"
