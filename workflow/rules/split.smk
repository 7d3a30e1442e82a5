# Track-level split (config `split`): holdout, k folds (one table per fold) or a predefined
# table, optionally group-aware. Logic: genre_classification.data.split.


rule split_tracks:
    input:
        unpack(split_inputs),
        code=code_of("split_tracks"),
    output:
        **SPLIT_EXTRA,
        split=report(
            SPLIT,
            caption="../report/split.rst",
            category="Data",
        ),
    log:
        "logs/split_tracks.log",
    benchmark:
        benchmark_path("split_tracks", "all")
    localrule: True
    container:
        config["container"]["image"]
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        **SPLIT_OPTIONS,
        seed=config["split"]["seed"],
        fractions=config["split"]["fractions"],
    script:
        "../../scripts/split_tracks.py"
