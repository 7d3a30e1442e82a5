# Evidently reports on the per-track feature table (issue 4): classification per model, data
# drift (train vs test, or a reference data version vs the current data) and data quality tests.
# Logic: genre_classification.track_table / .reports / .reference; entry points: scripts/*.py.
# Targets: report_targets() in rules/common.smk.


REPORTS_DEFAULTS = {
    "reference": None,
    "fail_on_quality_issue": False,
    "log_to_mlflow": True,
    "track_table": {"n_bands": 8, "n_mfcc": 13},
    "drift": {
        "reference_split": "train",
        "current_split": "test",
        "drift_share": 0.5,
        "method": None,
        "threshold": None,
    },
    "quality": {"min_class_ratio": 0.5, "ignore_constant": ["duration_s"]},
}


def reports_config(key):
    """``reports.<key>`` of the config, with the defaults above filled in."""
    value = config.get("reports", {}).get(key, REPORTS_DEFAULTS[key])
    if isinstance(REPORTS_DEFAULTS[key], dict):
        return {**REPORTS_DEFAULTS[key], **(value or {})}
    return value


def drift_reference_inputs(wildcards):
    if reports_config("reference") is None:
        return {}
    return {
        "reference": "results/reference/tracks.tsv",
        "reference_info": "results/reference/reference.json",
    }


rule track_table:
    input:
        split="results/split/split.tsv",
        features=feature_files,
    output:
        table="results/tables/tracks.tsv",
    log:
        "logs/track_table/tracks.log",
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        n_bands=reports_config("track_table")["n_bands"],
        n_mfcc=reports_config("track_table")["n_mfcc"],
    script:
        "../../scripts/track_table.py"


rule reference_track_table:
    output:
        table="results/reference/tracks.tsv",
        info="results/reference/reference.json",
    log:
        "logs/reference_track_table/reference.log",
    resources:
        mem_mb=3000,
        runtime=120,
    params:
        reference=reports_config("reference"),
        data=config["data"],
        features=config["features"],
        work_dir="results/reference",
        n_bands=reports_config("track_table")["n_bands"],
        n_mfcc=reports_config("track_table")["n_mfcc"],
    script:
        "../../scripts/reference_track_table.py"


rule classification_report:
    input:
        table="results/tables/tracks.tsv",
        predictions="results/eval/{model}/predictions.csv",
        run="results/mlflow/runs/{model}.json",
    output:
        html=report(
            "results/reports/{model}/classification.html",
            caption="../report/classification_report.rst",
            category="Reports",
            subcategory="{model}",
            labels={"model": "{model}", "report": "classification"},
        ),
        json="results/reports/{model}/classification.json",
    log:
        "logs/classification_report/{model}.log",
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        split=reports_config("drift")["current_split"],
        log_to_mlflow=reports_config("log_to_mlflow"),
        artifact_path="evidently",
    script:
        "../../scripts/classification_report.py"


rule data_drift_report:
    input:
        unpack(drift_reference_inputs),
        table="results/tables/tracks.tsv",
    output:
        html=report(
            "results/reports/data_drift.html",
            caption="../report/data_drift.rst",
            category="Reports",
            subcategory="Data",
            labels={"model": "-", "report": "data drift"},
        ),
        json="results/reports/data_drift.json",
    log:
        "logs/data_drift_report/data_drift.log",
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        reference=reports_config("reference"),
        reference_split=reports_config("drift")["reference_split"],
        current_split=reports_config("drift")["current_split"],
        drift_share=reports_config("drift")["drift_share"],
        method=reports_config("drift")["method"],
        threshold=reports_config("drift")["threshold"],
    script:
        "../../scripts/data_drift_report.py"


rule data_quality_report:
    input:
        table="results/tables/tracks.tsv",
    output:
        html=report(
            "results/reports/data_quality.html",
            caption="../report/data_quality.rst",
            category="Reports",
            subcategory="Data",
            labels={"model": "-", "report": "data quality"},
        ),
        json="results/reports/data_quality.json",
    log:
        "logs/data_quality_report/data_quality.log",
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        fail_on_quality_issue=reports_config("fail_on_quality_issue"),
        min_class_ratio=reports_config("quality")["min_class_ratio"],
        ignore_constant=reports_config("quality")["ignore_constant"],
    script:
        "../../scripts/data_quality_report.py"
