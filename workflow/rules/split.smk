rule split_tracks:
    input:
        manifest="results/data/manifest.tsv",
    output:
        split=report(
            "results/split/split.tsv",
            caption="../report/split.rst",
            category="Data",
        ),
    log:
        "logs/split_tracks.log",
    localrule: True
    container:
        config["container"]["image"]
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        seed=config["split"]["seed"],
        fractions=config["split"]["fractions"],
    script:
        "../../scripts/split_tracks.py"
