rule split_tracks:
    input:
        manifest="results/data/manifest.tsv",
        features=feature_files,
    output:
        split=report(
            "results/split/split.tsv",
            caption="../report/split.rst",
            category="Data",
        ),
    log:
        "logs/split_tracks.log",
    params:
        seed=config["split"]["seed"],
        fractions=config["split"]["fractions"],
    resources:
        mem_mb=1000,
        runtime=10,
    localrule: True
    script:
        "../../scripts/split_tracks.py"
