# What every job used against what it declared (issue 20): Snakemake's benchmark file of each job
# (`benchmark:` of every rule, BENCHMARK in rules/common.smk) collected into one table and a
# picture per rule. Logic: genre_classification.resources; entry point: scripts/resource_usage.py.


rule resource_usage:
    # After every other target of `rule all`, so that it sees their jobs' benchmark files (which
    # are not its inputs: jobs run before benchmarks existed need not rerun to make one).
    input:
        resource_usage_inputs,
        code=code_of("resource_usage"),
    output:
        table=JOB_RESOURCES,
        plot=report(
            JOB_RESOURCES_PLOT,
            caption="../report/resources.rst",
            category="Resources",
            labels={"model": "-", "file": "used vs declared"},
        ),
    log:
        "logs/resource_usage.log",
    localrule: True
    container:
        config["container"]["image"]
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        benchmark_dir=BENCHMARK.split("{rule}")[0],
    script:
        "../../scripts/resource_usage.py"
