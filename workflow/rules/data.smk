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
    localrule: True
    container:
        config["container"]["image"]
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        data=config["data"],
        segment_seconds=config["features"]["segment_seconds"],
        trigger=fetch_audio_trigger(),
        screen_cache="results/data/screened.tsv",
    script:
        "../../scripts/fetch_audio.py"
