rule fetch_audio:
    # The first rule, for a DVC source: `dvc pull` of one shard's files (the listing itself is
    # read when the workflow is parsed, rules/common.smk). A localrule: on a cluster it runs on
    # the submit host, which has the network and the DVC credentials.
    input:
        members=shard_members,
        code=code_of("fetch_audio"),
    output:
        fetched=FETCHED,
    log:
        "logs/fetch_audio/{shard}.log",
    benchmark:
        benchmark_path("fetch_audio", "{shard}")
    localrule: True
    container:
        config["container"]["image"]
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        data=config["data"],
    script:
        "../../scripts/fetch_audio.py"
