checkpoint fetch_audio:
    input:
        dvc_file=dvc_file,
    output:
        manifest="results/data/manifest.tsv",
        rejected=report(
            "results/qc/rejected.tsv",
            caption="../report/rejected.rst",
            category="Data",
        ),
        version="results/data/data_version.json",
    log:
        "logs/fetch_audio.log",
    params:
        data=config["data"],
        segment_seconds=config["features"]["segment_seconds"],
        trigger=fetch_audio_trigger(),
        screen_cache="results/data/screened.tsv",
    resources:
        mem_mb=2000,
        runtime=60,
    localrule: True
    script:
        "../../scripts/fetch_audio.py"
