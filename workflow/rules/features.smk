rule extract_features:
    # run: (not script:) so that locally the jobs share one interpreter with librosa loaded,
    # see workflow/profiles/default/config.yaml; logic lives in genre_classification.features.
    input:
        audio=audio_file,
    output:
        "results/features/{genre}/{track}.h5",
    log:
        "logs/extract_features/{genre}/{track}.log",
    group:
        "extract"
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=lambda wildcards, attempt: 10 * attempt,
    params:
        features=config["features"],
        source_md5=audio_md5,
    run:
        from genre_classification.features import extract_logged

        extract_logged(
            input.audio,
            output[0],
            params.features,
            label=wildcards.genre,
            source_md5=params.source_md5,
            log_path=log[0],
        )


rule extract_all:
    # Target for extraction alone: snakemake --cores 8 extract_all
    input:
        feature_files,
    localrule: True
