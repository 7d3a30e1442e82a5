rule extract_features:
    # One job per shard of files (genre_classification.features.shards); one HDF5 per audio file in
    # results/features[-<set>]/<genre>/<track>.h5 (feature sets: rules/common.smk), recomputed
    # only where source md5 or parameters differ.
    input:
        members=shard_members,
        fetched=fetched_audio,
        code=code_of("extract_features"),
    output:
        record=SHARD_RECORD,
    log:
        "logs/extract_features/{feature_dir}/{shard}.log",
    benchmark:
        benchmark_path("extract_features", "{feature_dir}/{shard}")
    container:
        config["container"]["image"]
    threads: config["extraction"]["threads"]
    resources:
        mem_mb=lambda wildcards, threads, attempt: (
            500 + config["extraction"]["mem_mb_per_thread"] * threads
        )
        * attempt,
        runtime=shard_runtime,
    params:
        root=str(audio_root(config["data"])),
        # the record lives in <features_dir>/.shards/
        features_dir=lambda wildcards, output: Path(output.record).parent.parent,
        features=extraction_params,
        # damaged feature files reported by readers: a new report reruns the shard
        repairs=lambda wildcards: shard_repairs(
            FEATURE_SET_DIR.format(feature_dir=wildcards.feature_dir), wildcards.shard
        ),
    script:
        "../../scripts/extract_features.py"


rule pack_features:
    # A shard's segments in one array beside its HDF5s (features.packs): what the
    # training jobs read batches from, a few reads per batch whatever the collection's size.
    input:
        record=SHARD_RECORD,
        code=code_of("pack_features"),
    output:
        pack=PACK,
        index=PACK_INDEX,
        sums=PACK_SUMS,
    log:
        "logs/pack_features/{feature_dir}/{shard}.log",
    benchmark:
        benchmark_path("pack_features", "{feature_dir}/{shard}")
    container:
        config["container"]["image"]
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=pack_runtime,
    script:
        "../../scripts/pack_features.py"


rule embed_features:
    # The embeddings of a shard's files by every pretrained backbone that a musicnn model of
    # training.run trains a head on (frozen, probe; the fine-tune's probe head), into the
    # cache beside the HDF5s (genre_classification.training.embeddings): the training and evaluation
    # jobs of all folds then only read them. Files already cached are not recomputed.
    input:
        record=SHARD_RECORD,
        code=code_of("embed_features"),
    output:
        record=EMBEDDING_RECORD,
    log:
        "logs/embed_features/{feature_dir}/{shard}.log",
    benchmark:
        benchmark_path("embed_features", "{feature_dir}/{shard}")
    container:
        config["container"]["image"]
    threads: config["extraction"]["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=embed_runtime,
    params:
        backbones=lambda wildcards: cached_backbones_of(wildcards.feature_dir),
    script:
        "../../scripts/embed_features.py"


rule collect_features:
    input:
        records=shard_records,
        # skipped files, a label table's other columns (group, split, ...) for the manifest
        listing=listing_extras,
        code=code_of("collect_features"),
    output:
        manifest=MANIFEST,
        rejected=report(
            REJECTED,
            caption="../report/rejected.rst",
            category="Data",
        ),
        version=DATA_VERSION,
    log:
        "logs/collect_features.log",
    benchmark:
        benchmark_path("collect_features", "all")
    localrule: True
    container:
        config["container"]["image"]
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        data_version=lambda wildcards: data_version(config["data"], audio_collection()),
    script:
        "../../scripts/collect_features.py"


rule extract_all:
    # Target for extraction alone: snakemake --cores 8 extract_all
    input:
        MANIFEST,
        REJECTED,
    localrule: True
