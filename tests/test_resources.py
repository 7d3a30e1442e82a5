"""Resource records: Snakemake's own benchmark files (a real mini workflow, extended format)
collected into one row per job with the declared mem_mb and runtime, and the picture."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import BIN
from genre_classification.columns import JOB_RESOURCE_COLUMNS
from genre_classification.fileio import read_tsv
from genre_classification.resources import collect_benchmarks, per_rule, write_resource_usage

# Two rules, one with a wildcard: a job that holds ~200 MB for 2 s, one that ends at once.
SNAKEFILE = """
rule all:
    input: expand("out/{n}.txt", n=[1, 2]), "out/quick.txt"

rule hold:
    output: "out/{n}.txt"
    benchmark: "bench/hold/{n}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 300 * int(wildcards.n) * attempt,
        runtime=5,
    shell:
        "python -c 'import time; b = bytearray(200 * 2**20); b[::4096] = b\\"x\\" * 51200; "
        "time.sleep(2)' && touch {output}"

rule quick:
    output: "out/quick.txt"
    benchmark: "bench/quick/all.tsv"
    resources: mem_mb=100, runtime=1
    shell: "touch {output}"
"""


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("bench")
    (work / "Snakefile").write_text(SNAKEFILE)
    subprocess.run(
        [str(BIN / "snakemake"), "--cores", "2", "--benchmark-extended", "--quiet"],
        cwd=work,
        check=True,
        capture_output=True,
    )
    return work


def test_one_row_per_job_with_used_and_declared(benchmarks):
    paths = sorted((benchmarks / "bench").rglob("*.tsv"))
    rows = collect_benchmarks(paths)
    assert [(r["rule"], r["wildcards"]) for r in rows] == [
        ("hold", "n=1"),
        ("hold", "n=2"),
        ("quick", ""),
    ]
    hold1, hold2, quick = rows
    # declared: what the rule's resource functions gave each job
    assert (hold1["mem_mb"], hold2["mem_mb"], quick["mem_mb"]) == ("300", "600", "100")
    assert (hold1["runtime_min"], quick["runtime_min"]) == ("5", "1")
    assert hold1["threads"] == "1"
    # used: the 200 MB buffer held for 2 s is seen by the 0.5 s sampler; the wall time too
    for row in (hold1, hold2):
        assert 200 <= float(row["max_rss_mb"]) < 300, row
        assert float(row["wall_s"]) >= 2
        assert float(row["cpu_time_s"]) >= 0
    summary = {r["rule"]: r for r in per_rule(rows)}
    assert summary["hold"]["jobs"] == 2 and summary["hold"]["mem_mb"] == 600


def test_plain_benchmark_files_have_no_declared_values(tmp_path):
    bench = tmp_path / "bench" / "train_model" / "cnn.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        "0.31\t0:00:00\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n"
    )
    [row] = collect_benchmarks([bench])
    assert row["rule"] == "train_model"  # from the directory
    assert (row["wall_s"], row["max_rss_mb"], row["mem_mb"]) == ("0.31", "", "")


def test_a_field_of_200_kb_is_read(tmp_path):
    """A benchmark file whose params column is larger than the csv module's default field
    limit (128 KiB; an extraction shard's member list once was) is still one row."""
    bench = tmp_path / "bench" / "extract_features" / "features" / "00000.tsv"
    bench.parent.mkdir(parents=True)
    params = repr({"members": ["x" * 100] * 2000})
    assert len(params) > 200_000
    bench.write_text(
        "s\th:m:s\tmax_rss\tcpu_time\trule_name\twildcards\tparams\tthreads\tresources\n"
        f"12.5\t0:00:12\t700.1\t20.0\textract_features\t{{'shard': '00000'}}\t{params}\t2\t"
        "{'mem_mb': 2500, 'runtime': 30}\n"
    )
    [row] = collect_benchmarks([bench])
    assert (row["rule"], row["wildcards"], row["max_rss_mb"], row["mem_mb"]) == (
        "extract_features",
        "shard=00000",
        "700.1",
        "2500",
    )


def test_table_and_picture(benchmarks, tmp_path):
    table, plot = tmp_path / "resources/jobs.tsv", tmp_path / "resources/jobs.png"
    rows = write_resource_usage(benchmarks / "bench", table, plot)
    assert len(rows) == 3
    assert tuple(read_tsv(table)[0]) == JOB_RESOURCE_COLUMNS
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no benchmark yet (a first dry run of the collection): an empty table, still a picture
    empty = write_resource_usage(tmp_path / "none", tmp_path / "e.tsv", tmp_path / "e.png")
    assert empty == [] and (tmp_path / "e.png").is_file()


def test_every_rule_that_runs_a_job_has_its_benchmark_file():
    """Each rule with a script, and each `use rule ... with:` (which would otherwise share the
    benchmark path of the rule it copies), names its own benchmark file; the collection none."""
    import re

    rules_dir = Path(__file__).resolve().parents[1] / "workflow" / "rules"
    text = "\n".join(p.read_text() for p in sorted(rules_dir.glob("*.smk")))
    parts = re.split(r"^(?:rule (\w+):|use rule \w+ as (\w+) with:)\n", text, flags=re.M)
    bodies, copies = {}, set()
    for own, copy, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        bodies[own or copy] = body
        if copy:
            copies.add(copy)
    runs_a_job = {n for n, body in bodies.items() if "script:" in body} | copies
    runs_a_job -= {"resource_usage"}
    assert {"extract_features", "train_model", "predict_collect_features"} <= runs_a_job
    for name in runs_a_job:
        assert f'benchmark_path("{name}", ' in bodies[name], name
    assert "benchmark:" not in bodies["resource_usage"]
